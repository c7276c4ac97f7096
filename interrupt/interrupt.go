package interrupt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent"
)

// Name is the feature's name: config section, log attribute, metric subsystem.
const Name = "interrupt"

// cluster is what the feature needs of the API server; *kube.Client has it.
type cluster interface {
	Node(ctx context.Context) (*corev1.Node, error)
	NodePods(ctx context.Context, labelSelector string) ([]corev1.Pod, error)
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	AddTaint(ctx context.Context, taint corev1.Taint) (bool, error)
	SetAnnotation(ctx context.Context, key string, value *string) error
	Evict(ctx context.Context, namespace, name string, grace *int64) error
	GuardPod(ctx context.Context, pod *corev1.Pod, name string, selector map[string]string) error
	Unguard(ctx context.Context, namespace, name string) error
	Event(eventType, reason, action, note string, args ...any)
	PodEvent(pod *corev1.Pod, eventType, reason, action, note string, args ...any)
}

// nodeSource is a watched copy of the own Node (kube.NodeWatch).
type nodeSource interface {
	Node() *corev1.Node
	Subscribe() (changed <-chan struct{}, cancel func())
}

// Interrupt is the feature: notices in, executors decommissioned.
type Interrupt struct {
	cfg   *Config
	log   *slog.Logger
	m     *metrics
	sig   unix.Signal
	kube  cluster
	nodes nodeSource // nil: no taint triggers
	imds  *imds.Client
	tasks tasks
	dial  func() (tasks, error) // makes tasks for one Run; nil when injected
	st    state

	// now is the clock (tests move it).
	now func() time.Time

	passMu         sync.Mutex // held by a decommission pass
	decommissioned atomic.Bool
	mu             sync.Mutex
	tracked        map[string]bool // containers whose outcome this process follows
	counted        map[string]bool // pods whose skip was counted by this process
}

var _ agent.Feature = (*Interrupt)(nil)

// New validates cfg and allocates the feature; it starts nothing.
func New(cfg *Config, deps agent.Deps) (*Interrupt, error) {
	if deps.Kube == nil {
		return nil, errors.New("interrupt: needs the API server (run in a cluster or pass --kubeconfig)")
	}
	f, err := newFeature(cfg, deps, deps.Kube, nodeWatch(deps), nil)
	if err != nil {
		return nil, err
	}
	socket := deps.Host.Path(cfg.Containerd.Socket)
	// Run connects (lazily: gRPC dials on the first call) and closes.
	f.dial = func() (tasks, error) { return newContainerdTasks(socket, cfg.Containerd.Namespace) }
	return f, nil
}

func newFeature(cfg *Config, deps agent.Deps, kube cluster, nodes nodeSource, t tasks) (*Interrupt, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sig, _ := parseSignal(cfg.Decommission.Signal)
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("interrupt: register metrics: %w", err)
	}
	return &Interrupt{
		cfg: cfg, log: log, m: m, sig: sig, kube: kube, nodes: nodes, tasks: t,
		imds: newIMDSClient(cfg.IMDS, m), now: time.Now,
		tracked: map[string]bool{}, counted: map[string]bool{},
	}, nil
}

// Name implements agent.Feature.
func (f *Interrupt) Name() string { return Name }

// Run watches IMDS and the Node's taints and acts on notices until ctx is
// done. It returns after every goroutine it started has exited (the
// executors' outcome watchers too: they stop with ctx).
func (f *Interrupt) Run(ctx context.Context) error {
	node, err := f.kube.Node(ctx)
	if err != nil {
		return fmt.Errorf("interrupt: read the Node: %w", err)
	}
	if err := f.st.load(node.Annotations[StateAnnotation]); err != nil {
		// Refuse to run rather than signal executors a second time.
		return fmt.Errorf("interrupt: %w; remove the annotation if the Node was not interrupted", err)
	}
	if f.dial != nil {
		t, err := f.dial()
		if err != nil {
			return fmt.Errorf("interrupt: %w", err)
		}
		f.tasks = t
		defer t.Close()
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	events := make(chan noticeEvent, 16)
	if f.cfg.IMDS.Enabled {
		w := newWatcher(f.imds, f.cfg.IMDS, f.m, f.log)
		wg.Go(func() { w.run(ctx, events) })
		wg.Go(func() { f.runFacts(ctx) })
	}
	if f.nodes != nil && len(f.cfg.Taints) > 0 {
		wg.Go(func() { f.watchTaints(ctx, events) })
	}
	f.log.Info("watching for interruption notices", "imds", f.cfg.IMDS.Enabled, "endpoint", f.cfg.IMDS.Endpoint,
		"taintTriggers", f.nodes != nil && len(f.cfg.Taints) > 0, "strategy", f.cfg.Decommission.Strategy)

	due := make(chan Notice)
	pending := map[string]*time.Timer{} // scheduled maintenance by notice ID
	defer func() {
		for _, t := range pending {
			t.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-due:
			delete(pending, n.ID)
			f.act(ctx, &wg, n)
		case ev := <-events:
			n := ev.notice
			if ev.withdrawn {
				f.m.withdrawn.WithLabelValues(n.Kind, n.Source).Inc()
				f.log.Warn("interruption notice withdrawn", "notice", n.String(), "id", n.ID)
				if t, ok := pending[n.ID]; ok {
					t.Stop()
					delete(pending, n.ID)
					f.kube.Event(corev1.EventTypeNormal, "InterruptionWithdrawn", "Cancel",
						"%s disappeared before its decommission was due: cancelled", n)
				}
				continue
			}
			if at := f.dueAt(n); at.After(f.now()) {
				f.notice(n, fmt.Sprintf("decommission due at %s", at.UTC().Format(time.RFC3339)))
				if _, ok := pending[n.ID]; !ok {
					pending[n.ID] = time.AfterFunc(at.Sub(f.now()), func() {
						select {
						case due <- n:
						case <-ctx.Done():
						}
					})
				}
				continue
			}
			f.act(ctx, &wg, n)
		}
	}
}

// dueAt is when a notice's action is due: a maintenance decommission
// maintenanceLeadTime before NotBefore; everything else now.
func (f *Interrupt) dueAt(n Notice) time.Time {
	if n.Kind == KindMaintenance && !n.Time.IsZero() && f.cfg.Policy.action(n.Kind) == ActionDecommission {
		return n.Time.Add(-f.cfg.Policy.MaintenanceLeadTime)
	}
	return time.Time{}
}

// notice counts and reports a notice the first time it is seen, also
// across restarts (the state annotation remembers).
func (f *Interrupt) notice(n Notice, plan string) bool {
	if f.st.handled(n.ID) {
		f.log.Info("interruption notice seen before", "notice", n.String(), "id", n.ID)
		return false
	}
	f.m.notices.WithLabelValues(n.Kind, n.Source).Inc()
	left := ""
	if !n.Time.IsZero() {
		d := n.Time.Sub(n.Seen)
		f.m.timeLeft.WithLabelValues(n.Kind).Observe(max(d, 0).Seconds())
		left = fmt.Sprintf(", %s left", d.Round(time.Second))
	}
	f.log.Warn("interruption notice", "notice", n.String(), "id", n.ID, "plan", plan)
	f.kube.Event(corev1.EventTypeWarning, "InterruptionNotice", "Notice", "%s%s: %s", n, left, plan)
	return true
}

// act carries out the policy for a notice that is due.
func (f *Interrupt) act(ctx context.Context, wg *sync.WaitGroup, n Notice) {
	switch f.cfg.Policy.action(n.Kind) {
	case ActionIgnore:
		f.notice(n, "ignored by policy")
		f.remember(ctx, n)
	case ActionTaint:
		// Taint once: not again after a restart (someone may have removed
		// it), nor over the taint of a decommission.
		if f.notice(n, "tainting the Node") && !f.decommissioned.Load() {
			f.taint(ctx, n)
		}
		f.remember(ctx, n)
	case ActionDecommission:
		f.notice(n, "decommissioning executors ("+f.cfg.Decommission.Strategy+")")
		f.decommissioned.Store(true)
		f.decommission(ctx, wg, n)
	}
}

// remember records a notice as handled on the Node.
func (f *Interrupt) remember(ctx context.Context, n Notice) {
	if f.st.mark(n.ID) {
		if err := f.saveState(ctx); err != nil {
			f.m.fail(reasonState)
			f.log.Warn("interruption state not saved", "err", err)
		}
	}
}

// taint puts nodeagent.io/interruption=<kind>:NoSchedule on the Node.
func (f *Interrupt) taint(ctx context.Context, n Notice) {
	t := corev1.Taint{Key: f.cfg.Decommission.Taint, Value: n.Kind, Effect: corev1.TaintEffectNoSchedule}
	changed, err := f.kube.AddTaint(ctx, t)
	if err != nil {
		f.m.fail(reasonTaint)
		f.log.Warn("node not tainted", "taint", t.ToString(), "err", err)
		return
	}
	if changed {
		f.log.Info("node tainted", "taint", t.ToString())
	}
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
