package imagewarm

import "github.com/prometheus/client_golang/prometheus"

// Metric label names.
const (
	labelImage  = "image"
	labelState  = "state"
	labelReason = "reason"
)

// Failure reasons (the reason label).
const (
	reasonNotFound     = "not_found"    // no such repository, tag or digest
	reasonUnauthorized = "unauthorized" // credentials missing, bad or expired
	reasonPlatform     = "platform"     // the image has no manifest for the platform
	reasonUnavailable  = "unavailable"  // registry down, refused, reset
	reasonTimeout      = "timeout"      // pullTimeout or a registry too slow
	reasonDiskFull     = "disk_full"    // ENOSPC in containerd or the agent's blob writes
	reasonCredentials  = "credentials"  // a credential source failed (provider, Secret)
	reasonContainerd   = "containerd"   // containerd or its CRI refused
	reasonOther        = "other"
)

type metrics struct {
	state       *prometheus.GaugeVec
	bytes       *prometheus.GaugeVec
	size        *prometheus.GaugeVec
	pullSeconds *prometheus.GaugeVec
	failures    *prometheus.CounterVec
	pulls       *prometheus.CounterVec
	repulls     *prometheus.CounterVec
	fetched     prometheus.Counter
	duration    prometheus.Histogram
	direct      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "nodeagent", "imagewarm"
	m := &metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "image_state",
			Help: "1 for the state each configured image is in (pending, pulling, present, failed), 0 for the others."},
			[]string{labelImage, labelState}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "image_fetched_bytes",
			Help: "Bytes fetched from the registry by the image's current or last pull."}, []string{labelImage}),
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "image_size_bytes",
			Help: "Compressed size of the image for the node's platform (manifest, config and layers), as far as known."}, []string{labelImage}),
		pullSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "image_pull_duration_seconds",
			Help: "Duration of the image's last successful pull and unpack."}, []string{labelImage}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pull_failures_total",
			Help: "Failed pull attempts, by image and reason."}, []string{labelImage, labelReason}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pulls_total",
			Help: "Successful pulls, by image (an image found complete is not pulled)."}, []string{labelImage}),
		repulls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "repulls_total",
			Help: "Pulls of an image that had been present in this process and went missing (image GC, a user)."}, []string{labelImage}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "fetched_bytes_total",
			Help: "Bytes fetched from registries."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "pull_duration_seconds",
			Help:    "Duration of successful pulls (fetch and unpack) of one image.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600}}),
		direct: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "direct_blob_write",
			Help: "1 when blobs are written into containerd's content store directory (blobWrite: direct and containerd sees them there), 0 when they stream over gRPC."}),
	}
	for _, c := range []prometheus.Collector{m.state, m.bytes, m.size, m.pullSeconds, m.failures, m.pulls, m.repulls, m.fetched, m.duration, m.direct} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// setState makes state the one set for image.
func (m *metrics) setState(image, state string) {
	for _, s := range allStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(image, s).Set(v)
	}
}
