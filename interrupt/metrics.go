package interrupt

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names.
const (
	labelKind     = "kind"
	labelSource   = "source"
	labelStrategy = "strategy"
	labelResult   = "result"
	labelPath     = "path"
	labelStatus   = "status"
	labelReason   = "reason"
)

// Executor results (the executors_total result label).
const (
	resultSignalled = "signalled"         // the signal was delivered
	resultEvicted   = "evicted"           // the eviction was accepted
	resultSkipped   = "already_signalled" // told before (also by an earlier agent process)
	resultDeleting  = "deleting"          // already being deleted: its preStop hook signals it
	resultGone      = "gone"              // the pod or container vanished before or while told
	resultFailed    = "failed"            // telling it failed
	resultExited    = "exited"            // exited 0 before the deadline
	resultExitedErr = "exited_nonzero"    // exited non-zero before the deadline
	resultDeadline  = "running_at_deadline"
)

// Error reasons (the errors_total reason label).
const (
	reasonTaint      = "taint"
	reasonPods       = "list_pods"
	reasonState      = "state"
	reasonContainerd = "containerd"
	reasonGuard      = "guard"
	reasonEvict      = "evict"
	reasonFacts      = "facts"
)

const namespace, subsystem = "nodeagent", "interrupt"

type metrics struct {
	notices   *prometheus.CounterVec
	withdrawn *prometheus.CounterVec
	bad       *prometheus.CounterVec
	timeLeft  *prometheus.HistogramVec
	reaction  *prometheus.HistogramVec
	executors *prometheus.CounterVec
	requests  *prometheus.CounterVec
	errors    *prometheus.CounterVec
	nodeInfo  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help}
	}
	m := &metrics{
		notices: prometheus.NewCounterVec(prometheus.CounterOpts(opts("notices_total",
			"Interruption notices seen, by kind and source (imds, taint); each notice once.")), []string{labelKind, labelSource}),
		withdrawn: prometheus.NewCounterVec(prometheus.CounterOpts(opts("notices_withdrawn_total",
			"Notices that disappeared again (IMDS answered 404, or the taint was removed).")), []string{labelKind, labelSource}),
		bad: prometheus.NewCounterVec(prometheus.CounterOpts(opts("bad_notices_total",
			"IMDS notice bodies rejected, by path and reason (malformed, unknown_action, bad_time, past_time).")), []string{labelPath, labelReason}),
		timeLeft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "notice_time_left_seconds",
			Help:    "Time left until the notice takes effect when it was first seen (notices with a time).",
			Buckets: []float64{0, 15, 30, 60, 90, 120, 300, 600, 1800, 3600, 86400},
		}, []string{labelKind}),
		reaction: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "reaction_seconds",
			Help:    "From a notice first seen to the last executor told, by strategy.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10},
		}, []string{labelStrategy}),
		executors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("executors_total",
			"Executors decommissioned, by strategy and result (signalled, evicted, exited, exited_nonzero, running_at_deadline, gone, deleting, already_signalled, failed).")), []string{labelStrategy, labelResult}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts(opts("imds_requests_total",
			"IMDS HTTP requests, by path and status (the HTTP code, or error, timeout).")), []string{labelPath, labelStatus}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("errors_total",
			"Failures, by reason (taint, list_pods, state, containerd, guard, evict, facts).")), []string{labelReason}),
		nodeInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("node_info",
			"Always 1: the node's EC2 facts for cost attribution (join on instance type, lifecycle and zone).")),
			[]string{"instance_type", "lifecycle", "zone", "zone_id", "ami_id"}),
	}
	for _, c := range []prometheus.Collector{m.notices, m.withdrawn, m.bad, m.timeLeft, m.reaction, m.executors, m.requests, m.errors, m.nodeInfo} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) fail(reason string) { m.errors.WithLabelValues(reason).Inc() }

func (m *metrics) badNotice(path string, err error) {
	var b *badNotice
	reason := badJSON
	if errors.As(err, &b) {
		reason = b.reason
	}
	m.bad.WithLabelValues(path, reason).Inc()
}
