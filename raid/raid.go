package raid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
)

// Name is the feature's name: config section, log attribute, metric subsystem.
const Name = "raid"

// lockFile, below the host root, serialises Ensure between every agent on
// the node (during a surge rollout the old and the new pod both run) and
// `nodeagent raid ensure`: /var/lib/nodeagent is the host directory the
// agent owns (the chart always mounts it).
var lockFile = []string{"var", "lib", "nodeagent", "raid.lock"}

var errNotYet = errors.New("raid: disks not checked yet")

// labelUnknown makes the first sync write (or remove) the label whatever a
// previous process left.
const labelUnknown = "\x00unknown"

// Feature is the raid feature.
type Feature struct {
	cfg  *Config
	host hostpath.Paths
	run  hostexec.Runner
	log  *slog.Logger
	kube *kube.Client
	m    *metrics
	// lockPath is lockFile below the host root; "" = no lock (tests).
	lockPath string

	mu       sync.Mutex
	ready    error
	last     *Report
	reported string // the last decision reported as an Event
	labelled string // the Node label value this process set; labelUnknown at start
	capacity int64  // the extended resource capacity this process set; -1 at start
	started  time.Time
	timed    bool // setup duration recorded
}

var (
	_ agent.Feature      = (*Feature)(nil)
	_ agent.ReadyChecker = (*Feature)(nil)
)

// New validates cfg and allocates the feature; it starts nothing.
func New(cfg *Config, deps agent.Deps) (*Feature, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Feature{cfg: cfg, host: deps.Host, run: deps.Exec, log: log, kube: deps.Kube, lockPath: deps.Host.Path(lockFile...), ready: errNotYet, labelled: labelUnknown, capacity: -1}
	if deps.Metrics != nil {
		m, err := newMetrics(deps.Metrics, f)
		if err != nil {
			return nil, fmt.Errorf("raid: register metrics: %w", err)
		}
		f.m = m
	}
	return f, nil
}

// Name implements agent.Feature.
func (f *Feature) Name() string { return Name }

// Ready returns nil while the filesystem is mounted at the path; otherwise
// the reason, as `nodeagent raid status` words it.
func (f *Feature) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// Run ensures the array and the mount now and every reconcileInterval
// (sooner, with backoff, after a failure). Cancelling it leaves the array
// and the mount in place.
func (f *Feature) Run(ctx context.Context) error {
	f.mu.Lock()
	f.started = time.Now()
	f.mu.Unlock()
	backoff := 5 * time.Second
	for {
		rep, err := f.Ensure(ctx)
		if ctx.Err() != nil {
			return nil
		}
		f.publish(ctx, rep, err)
		wait := f.cfg.ReconcileInterval
		if err != nil || !rep.Ready {
			wait = min(backoff, wait)
			backoff = min(2*backoff, f.cfg.ReconcileInterval)
		} else {
			backoff = 5 * time.Second
		}
		// ±10% jitter: nodes started together do not probe in lockstep.
		wait += time.Duration((rand.Float64()*0.2 - 0.1) * float64(wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// publish makes the outcome of one Ensure visible: readiness, log, Events,
// the Node label.
func (f *Feature) publish(ctx context.Context, rep *Report, err error) {
	ready := error(nil)
	switch {
	case err != nil:
		ready = err
	case !rep.Ready:
		ready = fmt.Errorf("raid: %s", rep.Decision.Reason)
	}
	f.mu.Lock()
	f.ready, f.last = ready, rep
	first := ready == nil && !f.timed
	if first {
		f.timed = true
	}
	since := time.Since(f.started)
	changed := rep != nil && rep.Decision.Reason != f.reported
	if changed {
		f.reported = rep.Decision.Reason
	}
	f.mu.Unlock()

	if rep != nil && f.m != nil {
		f.m.observe(rep)
		if first {
			f.m.setupSeconds.Set(since.Seconds())
		}
	}
	switch {
	case err != nil:
		f.log.Error("raid setup failed", "err", err)
		f.event(corev1.EventTypeWarning, "RaidFailed", "Ensure", "%v", err)
	case changed && rep.Ready:
		f.log.Info("raid ready", "action", rep.Decision.Action, "device", rep.Device, "path", f.cfg.Mount.Path,
			"reason", rep.Decision.Reason, "setupSeconds", since.Seconds())
		f.event(corev1.EventTypeNormal, "Raid"+actionWord(rep.Decision.Action), "Ensure", "%s", rep.Decision.Reason)
	case changed:
		f.log.Warn("raid not ready", "action", rep.Decision.Action, "reason", rep.Decision.Reason)
		f.event(corev1.EventTypeWarning, "RaidNotReady", "Ensure", "%s", rep.Decision.Reason)
	}
	f.syncLabel(ctx, rep, ready)
	f.syncCapacity(ctx, rep, ready)
}

// syncCapacity advertises the mounted filesystem's size as the extended
// resource (0 while not ready); it writes only on change.
func (f *Feature) syncCapacity(ctx context.Context, rep *Report, ready error) {
	if f.kube == nil || f.cfg.CapacityResource == "" {
		return
	}
	want := int64(0)
	if ready == nil && rep != nil {
		want = int64(rep.CapacityBytes)
	}
	f.mu.Lock()
	have := f.capacity
	f.mu.Unlock()
	if want == have {
		return
	}
	if err := f.kube.SetCapacity(ctx, f.cfg.CapacityResource, *resource.NewQuantity(want, resource.BinarySI)); err != nil {
		f.log.Warn("node capacity not updated", "resource", f.cfg.CapacityResource, "bytes", want, "err", err)
		return
	}
	f.mu.Lock()
	f.capacity = want
	f.mu.Unlock()
}

func actionWord(a Action) string {
	switch a {
	case ActionCreate:
		return "Created"
	case ActionRecreate:
		return "Recreated"
	case ActionAssemble:
		return "Assembled"
	case ActionFormat:
		return "Formatted"
	case ActionAdopt:
		return "Adopted"
	case ActionMount:
		return "Mounted"
	}
	return "Ready"
}

func (f *Feature) event(typ, reason, action, note string, args ...any) {
	if f.kube != nil {
		f.kube.Event(typ, reason, action, note, args...)
	}
}

// syncLabel sets the Node label to the layout when ready and removes it
// otherwise; it writes only on change (the client also skips writes the
// watched Node already shows).
func (f *Feature) syncLabel(ctx context.Context, rep *Report, ready error) {
	if f.kube == nil || f.cfg.NodeLabel == "" {
		return
	}
	want := ""
	if ready == nil && rep != nil {
		want = rep.Decision.Layout
		if want == "" {
			want = "none" // allowNoDisks, nothing here
		}
	}
	f.mu.Lock()
	have := f.labelled
	f.mu.Unlock()
	if want == have {
		return
	}
	var err error
	if want == "" {
		err = f.kube.RemoveLabel(ctx, f.cfg.NodeLabel)
	} else {
		err = f.kube.SetLabel(ctx, f.cfg.NodeLabel, want)
	}
	if err != nil {
		f.log.Warn("node label not updated", "label", f.cfg.NodeLabel, "value", want, "err", err)
		return
	}
	f.mu.Lock()
	f.labelled = want
	f.mu.Unlock()
}
