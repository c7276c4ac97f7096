package raid

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names.
const (
	labelState  = "state"
	labelOp     = "op"
	labelResult = "result"
	labelAction = "action"
)

// Disk states (nodeagent_raid_disks).
const (
	diskMember   = "member"   // in the array, or the one formatted disk
	diskUnused   = "unused"   // blank, not needed
	diskExcluded = "excluded" // in use or foreign: left alone
)

// Array states (nodeagent_raid_array_state): md's array_state, folded.
var arrayStates = []string{"clean", "active", "inactive", "readonly", "other", "none"}

// Operations (nodeagent_raid_operations_total).
var operations = []string{"assemble", "create", "zero_superblock", "mkfs", "mkdir", "mount", "directories"}

const namespace, subsystem = "nodeagent", "raid"

type metrics struct {
	disks        *prometheus.GaugeVec
	members      prometheus.Gauge
	arrayState   *prometheus.GaugeVec
	capacity     prometheus.Gauge
	free         prometheus.GaugeFunc
	operations   *prometheus.CounterVec
	decision     *prometheus.GaugeVec
	setupSeconds prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, f *Feature) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help}
	}
	m := &metrics{
		disks: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("disks",
			"Selected disks, by state: member (of the array, or the formatted disk), unused (blank, not needed), excluded (in use or carrying data nodeagent did not make).")),
			[]string{labelState}),
		members: prometheus.NewGauge(prometheus.GaugeOpts(opts("array_members", "Disks in the array (or 1 for a single formatted disk)."))),
		arrayState: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("array_state",
			"1 for the state of the array (md array_state: clean, active, inactive, readonly, other), none when there is no array.")), []string{labelState}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts(opts("capacity_bytes", "Size of the mounted filesystem, 0 when not mounted."))),
		free: prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("free_bytes", "Bytes available to unprivileged users on the mounted filesystem (statfs), 0 when not mounted.")),
			f.freeBytes),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts(opts("operations_total",
			"Commands and steps run, by operation (assemble, create, zero_superblock, mkfs, mkdir, mount, directories) and result (ok, error).")),
			[]string{labelOp, labelResult}),
		decision: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("decision",
			"1 for the last decision taken (none, mount, assemble, create, recreate, format, adopt, blocked, no_disks).")), []string{labelAction}),
		setupSeconds: prometheus.NewGauge(prometheus.GaugeOpts(opts("setup_duration_seconds",
			"Seconds from the feature's start to the first ready mount in this process."))),
	}
	for _, c := range []prometheus.Collector{m.disks, m.members, m.arrayState, m.capacity, m.free, m.operations, m.decision, m.setupSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, s := range []string{diskMember, diskUnused, diskExcluded} {
		m.disks.WithLabelValues(s)
	}
	for _, s := range arrayStates {
		m.arrayState.WithLabelValues(s)
	}
	for _, op := range operations {
		m.operations.WithLabelValues(op, "ok")
		m.operations.WithLabelValues(op, "error")
	}
	for _, a := range Actions {
		m.decision.WithLabelValues(string(a))
	}
	return m, nil
}

// observe sets the gauges from one Ensure.
func (m *metrics) observe(rep *Report) {
	d := rep.Decision
	m.disks.WithLabelValues(diskMember).Set(float64(len(d.Members)))
	m.disks.WithLabelValues(diskUnused).Set(float64(len(d.Unused)))
	m.disks.WithLabelValues(diskExcluded).Set(float64(len(d.Excluded)))
	if rep.Ready {
		m.members.Set(float64(len(d.Members)))
		m.capacity.Set(float64(rep.CapacityBytes))
	} else {
		m.members.Set(0)
		m.capacity.Set(0)
	}
	state := "none"
	if rep.ArrayState != "" {
		state = foldState(rep.ArrayState)
	}
	for _, s := range arrayStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.arrayState.WithLabelValues(s).Set(v)
	}
	for _, a := range Actions {
		v := 0.0
		if a == d.Action {
			v = 1
		}
		m.decision.WithLabelValues(string(a)).Set(v)
	}
}

func foldState(s string) string {
	switch s {
	case "clean", "active", "inactive", "readonly":
		return s
	case "":
		return "none"
	case "active-idle", "write-pending":
		return "active"
	case "read-auto":
		return "readonly"
	}
	return "other"
}

// freeBytes is a statfs of the mount, only while it is ready.
func (f *Feature) freeBytes() float64 {
	f.mu.Lock()
	ready := f.ready == nil && f.last != nil && f.last.Decision.Action != ActionNoDisks
	f.mu.Unlock()
	if !ready {
		return 0
	}
	rep := &Report{Ready: true}
	f.fillUsage(rep)
	return float64(rep.FreeBytes)
}
