package imagewarm

import "github.com/prometheus/client_golang/prometheus"

const labelMount = "mount"

// Heal reasons (the reason label of s3_heals_total).
const (
	healENOTCONN    = "enotconn"     // stat of the root: transport endpoint is not connected
	healUnmounted   = "unmounted"    // our mount is gone from mountinfo
	healProcessGone = "process_gone" // the FUSE daemon is gone, the mount still listed
	healStatError   = "stat_error"   // stat of the root failed otherwise or hung
	// Not dead: the config changed the options of a healthy mount (same name
	// and path); mounted again to take them. The alert leaves it out.
	healConfigChanged = "config_changed"
)

type s3metrics struct {
	up       *prometheus.GaugeVec
	heals    *prometheus.CounterVec
	failures *prometheus.CounterVec
	rss      *prometheus.GaugeVec
	healTime prometheus.Histogram
	check    prometheus.Histogram
}

func newS3Metrics(reg prometheus.Registerer) (*s3metrics, error) {
	const ns, sub = "nodeagent", "imagewarm"
	m := &s3metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "s3_mount_up",
			Help: "1 when the S3 mount answers a stat of its root, else 0."}, []string{labelMount}),
		heals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "s3_heals_total",
			Help: "S3 mounts mounted again, by mount and reason: found dead, or config_changed (new options)."}, []string{labelMount, labelReason}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "s3_mount_failures_total",
			Help: "Failed attempts to mount, by mount."}, []string{labelMount}),
		rss: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "s3_daemon_resident_memory_bytes",
			Help: "Resident memory of the mount's FUSE daemon at the last check."}, []string{labelMount}),
		healTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "s3_heal_duration_seconds",
			Help:    "Time from finding a mount dead to its root answering again.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 300}}),
		check: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "s3_check_duration_seconds",
			Help:    "Duration of one health check of one mount (mountinfo, process, stat).",
			Buckets: []float64{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5}}),
	}
	for _, c := range []prometheus.Collector{m.up, m.heals, m.failures, m.rss, m.healTime, m.check} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
