// Package agent is the host process for nodeagent's features: it loads and
// validates the config, runs every enabled feature under a supervisor that
// restarts failures with backoff, hot-reloads the config file (restarting
// only the features whose section changed), serves /metrics, /healthz and
// /readyz, and removes the node's startup taint once every gating feature is
// ready.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
)

// Options is everything the agent is built from; cmd/nodeagent fills it.
type Options struct {
	// ConfigPath is the config file, polled for changes. Empty means
	// DefaultConfig, never reloaded.
	ConfigPath    string
	DefaultConfig []byte
	Specs         []Spec

	NodeName    string
	Host        hostpath.Paths
	Exec        hostexec.Runner
	Log         *slog.Logger
	MetricsAddr string
	// LastGoodPath, if set, is where the config in force is kept on the
	// host (e.g. /host/var/lib/nodeagent/last-good-config.yaml): when the
	// file at ConfigPath is invalid at start, the agent starts from it.
	LastGoodPath string
	// ProbeSocket, if set, is a unix socket serving the same endpoints to
	// `nodeagent probe`: during a surge rollout the previous agent still
	// holds MetricsAddr (one process answers it at a time), so only a socket
	// in the pod's own /run tells a pod's probe about its own agent.
	ProbeSocket string
	Version     string
	// Kube is nil without a cluster: the gate, labels and Events stay off.
	Kube *kube.Client
	// Registry receives every metric; nil means a new one with the Go and
	// process collectors.
	Registry *prometheus.Registry
}

// Agent is one running agent. Build it with New, then Run it.
type Agent struct {
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *coreMetrics
	sup     *supervisor

	cfg      atomic.Pointer[FileConfig]
	lastRead []byte // the bytes last read from ConfigPath, good or bad
	readErr  string // the error of the last read, if it failed
	// fallback is why the mounted file was not used at start, when the
	// agent started from the last good config instead.
	fallback  error
	heartbeat atomic.Int64

	gate       gateState // owned by gateLoop
	gateRounds atomic.Int64
}

// New loads and validates the config (a problem is returned with every key
// path) and prepares the agent. It does no other I/O.
func New(opts Options) (*Agent, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Exec == nil {
		opts.Exec = hostexec.Exec{}
	}
	data := opts.DefaultConfig
	var fc *FileConfig
	var fallback, err error
	if opts.ConfigPath != "" {
		fc, data, fallback, err = loadConfigFile(opts)
	} else if fc, err = LoadConfig(data, opts.Specs); err != nil {
		err = fmt.Errorf("config %s:\n%w", configName(opts.ConfigPath), err)
	}
	if err != nil {
		return nil, err
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	a := &Agent{opts: opts, log: opts.Log, reg: reg, lastRead: data, fallback: fallback}
	a.metrics = newCoreMetrics(reg)
	a.metrics.buildInfo.WithLabelValues(opts.Version).Set(1)
	a.metrics.lastReloadOK.Set(1)
	a.setConfig(fc)
	a.sup = newSupervisor(a.log, a.metrics, func() RestartConfig { return a.cfg.Load().Agent.Restart })
	return a, nil
}

// setConfig puts fc in force for what reads the agent section live.
func (a *Agent) setConfig(fc *FileConfig) {
	a.cfg.Store(fc)
	if a.opts.Kube != nil {
		a.opts.Kube.SetEventLimits(fc.Agent.Events.PerMinute, fc.Agent.Events.Burst)
	}
}

func configName(path string) string {
	if path == "" {
		return "(embedded default)"
	}
	return path
}

// Config returns the config in force.
func (a *Agent) Config() *FileConfig { return a.cfg.Load() }

// Run serves until ctx is done, then stops every feature within
// agent.shutdownTimeout, leaving host state in place. It returns an error
// only when it cannot serve at all (e.g. a malformed metrics address; one
// held by another process is waited for).
func (a *Agent) Run(ctx context.Context) error {
	// Cancelled on the way out, whatever ended the run (a signal or a
	// server error), so that every loop below returns.
	ctx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var listeners []net.Listener
	if a.opts.ProbeSocket != "" {
		ln, err := listenUnix(a.opts.ProbeSocket)
		if err != nil {
			return fmt.Errorf("probe socket: %w", err)
		}
		listeners = append(listeners, ln)
	}
	// The metrics port is bound below, in the background: while the
	// previous agent holds it, this one already runs and answers its probes.
	if a.opts.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(a.opts.MetricsAddr); err != nil {
			closeAll(listeners)
			return fmt.Errorf("metrics server: %w", err)
		}
	}
	fc := a.cfg.Load()
	a.metrics.configInfo.WithLabelValues(fc.Hash).Set(1)
	a.log.Info("agent starting", "version", a.opts.Version, "node", a.opts.NodeName, "config", configName(a.opts.ConfigPath),
		"hash", fc.Hash, "goarch", runtime.GOARCH, "kubernetes", a.opts.Kube != nil)
	if a.opts.Kube == nil {
		a.log.Warn("no Kubernetes API: startup taint, node label, condition and Events are off (not in a pod and no --kubeconfig)")
	} else {
		a.opts.Kube.Start(ctx)
		defer a.opts.Kube.Stop()
	}
	if a.fallback != nil {
		a.startFromLastGood(a.fallback)
	} else if a.opts.ConfigPath != "" {
		a.saveLastGood(a.lastRead)
	}

	featCtx, stopFeatures := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFeatures()
	for _, s := range a.opts.Specs {
		a.apply(featCtx, s, fc.Features[s.Name])
	}

	a.heartbeat.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	srvErr := make(chan error, len(listeners)+1)
	for _, ln := range listeners {
		wg.Go(func() { srvErr <- a.serve(ctx, ln) })
	}
	if a.opts.MetricsAddr != "" {
		wg.Go(func() {
			ln, err := a.listenMetrics(ctx, a.opts.MetricsAddr)
			if err != nil {
				srvErr <- fmt.Errorf("metrics server: %w", err)
				return
			}
			if ln != nil {
				srvErr <- a.serve(ctx, ln)
			}
		})
	}
	wg.Go(func() { a.reloadLoop(ctx, featCtx) })
	wg.Go(func() { a.gateLoop(ctx) })

	var err error
	select {
	case <-ctx.Done():
	case err = <-srvErr:
		cancelRun()
	}
	a.log.Info("agent stopping; host state stays in place", "timeout", a.cfg.Load().Agent.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Load().Agent.ShutdownTimeout)
	defer cancel()
	stopFeatures()
	// A reload in flight finishes first: it may be waiting for an old
	// instance to drain (bounded by its own shutdownTimeout), and it starts
	// nothing new once ctx is done. Then every feature is stopped.
	wg.Wait()
	if !a.sup.stopAll(sctx) {
		err = errors.Join(err, errors.New("some features did not stop within agent.shutdownTimeout"))
	}
	return err
}

// apply makes one feature match its section: build and run it when enabled,
// run its disable hook when not.
func (a *Agent) apply(ctx context.Context, s Spec, cfg Config) {
	log := a.log.With("feature", s.Name)
	if !cfg.IsEnabled() {
		a.sup.mark(s.Name, StateDisabled, nil)
		if s.disable != nil {
			dctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := s.disable(dctx, cfg, a.deps(log, nopRegisterer{})); err != nil {
				log.Error("feature disable failed", "err", err)
			}
		}
		return
	}
	reg := &instanceRegisterer{reg: a.reg}
	f, err := buildGuarded(s, cfg, a.deps(log, reg))
	if err != nil {
		reg.unregisterAll()
		a.sup.mark(s.Name, StateFailed, err)
		log.Error("feature could not be built; waiting for a new config", "err", err)
		return
	}
	log.Info("feature starting")
	a.sup.start(ctx, s.Name, f, reg.unregisterAll)
}

func buildGuarded(s Spec, cfg Config, d Deps) (f Feature, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic while building: %v", r)
		}
	}()
	return s.build(cfg, d)
}

func (a *Agent) deps(log *slog.Logger, reg prometheus.Registerer) Deps {
	return Deps{Log: log, Metrics: reg, Host: a.opts.Host, Exec: a.opts.Exec, Kube: a.opts.Kube, NodeName: a.opts.NodeName}
}

// reloadLoop polls the config file. ConfigMap volumes swap a "..data"
// symlink, which file watches miss; reading and hashing catches every change.
func (a *Agent) reloadLoop(ctx, featCtx context.Context) {
	for {
		a.heartbeat.Store(time.Now().UnixNano())
		t := time.NewTimer(a.cfg.Load().Agent.ReloadInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if a.opts.ConfigPath != "" {
			a.reload(ctx, featCtx)
		}
	}
}

// reload applies the config file if it changed. A bad file is rejected and
// the last good config stays in force.
func (a *Agent) reload(ctx, featCtx context.Context) {
	data, err := os.ReadFile(a.opts.ConfigPath)
	if err != nil {
		// Whatever comes back is looked at afresh, even the same bytes:
		// then the file in force is on disk again.
		a.lastRead = nil
		if err.Error() == a.readErr {
			return // counted once while it lasts
		}
		a.readErr = err.Error()
	} else {
		a.readErr = ""
		if string(data) == string(a.lastRead) {
			return
		}
	}
	var fc *FileConfig
	if err == nil {
		a.lastRead = data
		fc, err = LoadConfig(data, a.opts.Specs)
	}
	old := a.cfg.Load()
	if err != nil {
		a.metrics.reloadFailures.Inc()
		a.metrics.lastReloadOK.Set(0)
		a.log.Error("config rejected; the last good config stays in force", "config", a.opts.ConfigPath, "hash", old.Hash, "err", err)
		if k := a.opts.Kube; k != nil && old.Agent.Events.Enabled {
			k.Event(corev1.EventTypeWarning, "ConfigRejected", "Reload",
				"config %s rejected, keeping %s: %s", a.opts.ConfigPath, old.Hash, err)
		}
		return
	}
	a.metrics.lastReloadOK.Set(1)
	a.saveLastGood(data)
	if fc.Hash == old.Hash {
		return
	}
	var changed []string
	for _, s := range a.opts.Specs {
		if !reflect.DeepEqual(old.Features[s.Name], fc.Features[s.Name]) {
			changed = append(changed, s.Name)
		}
	}
	a.setConfig(fc)
	a.metrics.configInfo.Reset()
	a.metrics.configInfo.WithLabelValues(fc.Hash).Set(1)
	a.metrics.reloads.Inc()
	a.log.Info("config reloaded", "hash", fc.Hash, "previous", old.Hash, "restarting", changed)
	for _, s := range a.opts.Specs {
		if !slices.Contains(changed, s.Name) || a.handover(ctx, featCtx, s, fc.Features[s.Name]) {
			continue
		}
		// The old instance drains within shutdownTimeout whatever happens
		// meanwhile: a SIGTERM now must not cut its drain short.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fc.Agent.ShutdownTimeout)
		stopped := a.sup.stop(sctx, s.Name)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: start nothing new
		}
		if !stopped {
			// The unit stays, so that shutdown still waits for it.
			a.sup.fail(s.Name, errors.New("previous instance did not stop within agent.shutdownTimeout; restart the agent"))
			continue
		}
		a.apply(featCtx, s, fc.Features[s.Name])
	}
	if k := a.opts.Kube; k != nil && fc.Agent.Events.Enabled {
		k.Event(corev1.EventTypeNormal, "ConfigReloaded", "Reload", "config %s applied; restarted %v", fc.Hash, changed)
	}
}

// nopRegisterer is handed to disable hooks, which record no metrics.
type nopRegisterer struct{}

func (nopRegisterer) Register(prometheus.Collector) error  { return nil }
func (nopRegisterer) MustRegister(...prometheus.Collector) {}
func (nopRegisterer) Unregister(prometheus.Collector) bool { return true }
