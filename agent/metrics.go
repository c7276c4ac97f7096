package agent

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Label names of the agent's own metrics.
const (
	labelFeature = "feature"
	labelHash    = "hash"
	labelVersion = "version"
)

// coreMetrics are the agent's own metrics: features, config, readiness.
type coreMetrics struct {
	featureUp       *prometheus.GaugeVec
	featureReady    *prometheus.GaugeVec
	featureRestarts *prometheus.CounterVec
	reloads         prometheus.Counter
	reloadFailures  prometheus.Counter
	lastReloadOK    prometheus.Gauge
	lastGoodInUse   prometheus.Gauge
	configInfo      *prometheus.GaugeVec
	nodeReady       prometheus.Gauge
	buildInfo       *prometheus.GaugeVec
}

func newCoreMetrics(reg prometheus.Registerer) *coreMetrics {
	m := &coreMetrics{
		featureUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nodeagent", Name: "feature_up",
			Help: "1 while the feature runs, 0 while it is failed or waiting to restart.",
		}, []string{labelFeature}),
		featureReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nodeagent", Name: "feature_ready",
			Help: "1 when the feature reports ready, 0 otherwise.",
		}, []string{labelFeature}),
		featureRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nodeagent", Name: "feature_restarts_total",
			Help: "Times a failed feature was restarted.",
		}, []string{labelFeature}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "nodeagent", Subsystem: "config", Name: "reloads_total",
			Help: "Config file changes applied.",
		}),
		reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "nodeagent", Subsystem: "config", Name: "reload_failures_total",
			Help: "Config file changes rejected (unreadable or invalid); the last good config stays in force.",
		}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nodeagent", Subsystem: "config", Name: "last_reload_successful",
			Help: "1 when the config file on disk is the one in force, 0 while a rejected file is there.",
		}),
		lastGoodInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nodeagent", Subsystem: "config", Name: "last_good_in_use",
			Help: "1 while the agent runs from the last good config kept on the host, the mounted file having been invalid at start.",
		}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nodeagent", Subsystem: "config", Name: "info",
			Help: "1, labelled with the hash of the config in force.",
		}, []string{labelHash}),
		nodeReady: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "nodeagent", Name: "node_ready",
			Help: "1 when every gating feature is ready, 0 otherwise.",
		}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nodeagent", Name: "build_info",
			Help: "1, labelled with the agent's version.",
		}, []string{labelVersion}),
	}
	reg.MustRegister(m.featureUp, m.featureReady, m.featureRestarts, m.reloads, m.reloadFailures, m.lastReloadOK, m.lastGoodInUse,
		m.configInfo, m.nodeReady, m.buildInfo)
	return m
}

// instanceRegisterer gives one feature instance its own view of the
// registry: what it registers is unregistered when the instance is retired,
// so a rebuilt instance can register the same metrics again.
//
// A deferred one (the successor of a handover) only records what is
// registered until activate: its predecessor still holds the same metrics.
type instanceRegisterer struct {
	reg prometheus.Registerer

	mu         sync.Mutex
	deferred   bool
	collectors []prometheus.Collector
}

func (r *instanceRegisterer) Register(c prometheus.Collector) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.deferred {
		if err := r.reg.Register(c); err != nil {
			return err
		}
	}
	r.collectors = append(r.collectors, c)
	return nil
}

// activate registers what a deferred registerer recorded.
func (r *instanceRegisterer) activate() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.deferred {
		return nil
	}
	r.deferred = false
	var errs []error
	for _, c := range r.collectors {
		if err := r.reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *instanceRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *instanceRegisterer) Unregister(c prometheus.Collector) bool {
	return r.reg.Unregister(c)
}

// unregisterAll retires the instance's collectors.
func (r *instanceRegisterer) unregisterAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.deferred {
		for _, c := range r.collectors {
			r.reg.Unregister(c)
		}
	}
	r.collectors = nil
}
