package interrupt

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Spark's executor pod labels.
const (
	labelSparkRole  = "spark-role"
	labelSparkApp   = "spark-app-selector"
	labelSparkExec  = "spark-exec-id"
	sparkRoleDriver = "driver"
)

// guardPrefix names the PodDisruptionBudgets made by GuardEviction.
const guardPrefix = "nodeagent-decommission-"

// An executor is one executor container to tell.
type executor struct {
	pod       *corev1.Pod
	container string // containerd container ID ("" when not running)
}

// key is what the state remembers as told: the container for a signal, the
// pod for an eviction.
func (e executor) key(strategy string) string {
	if strategy == StrategyEvict {
		return "pod/" + string(e.pod.UID)
	}
	return e.container
}

func (e executor) String() string { return e.pod.Namespace + "/" + e.pod.Name }

// decommission taints the Node and tells every executor on it, by the
// configured strategy. Telling runs now; the executors' outcomes are
// followed in goroutines on wg until the deadline.
func (f *Interrupt) decommission(ctx context.Context, wg *sync.WaitGroup, n Notice) {
	deadline := f.now().Add(f.cfg.Decommission.Deadline)
	if !n.Time.IsZero() {
		if end := n.Time.Add(-f.cfg.Decommission.DeadlineMargin); end.Before(deadline) {
			deadline = end
		}
	}
	// The taint goes on alongside: telling must not wait for it. An
	// executor that landed between the list and the taint is found by the
	// second pass once the taint is on.
	wg.Go(func() {
		f.taint(ctx, n)
		// An executor whose container is not running yet (or whose status
		// kubelet has not reported yet) is told once it runs: pass again
		// every few seconds while one is pending, until the deadline.
		for f.pass(ctx, wg, n, deadline) > 0 && f.now().Before(deadline) {
			t := time.NewTimer(jitter(2 * time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	})
	f.pass(ctx, wg, n, deadline)
}

// pass lists the executors on the Node and tells those not told yet. It is
// idempotent: an executor is told at most once, also across agent restarts.
// It returns how many executors are pending: not running yet, so not told.
func (f *Interrupt) pass(ctx context.Context, wg *sync.WaitGroup, n Notice, deadline time.Time) (pending int) {
	// One pass at a time: choosing and remembering who to tell is one step.
	f.passMu.Lock()
	defer f.passMu.Unlock()
	strategy := f.cfg.Decommission.Strategy
	pods, err := f.kube.NodePods(ctx, f.cfg.Decommission.Selector)
	if err != nil {
		if ctx.Err() == nil {
			f.m.fail(reasonPods)
			f.log.Warn("executor pods not listed", "selector", f.cfg.Decommission.Selector, "err", err)
			f.kube.Event(corev1.EventTypeWarning, "DecommissionFailed", "Decommission", "listing executor pods (%s) failed: %v", f.cfg.Decommission.Selector, err)
		}
		return 1 // try again
	}
	var todo, told []executor
	var keys []string
	for i := range pods {
		pod := &pods[i]
		if pod.Labels[labelSparkRole] == sparkRoleDriver || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue // drivers are never touched, even by a wide selector
		}
		e := executor{pod: pod, container: f.containerID(pod)}
		switch {
		case f.st.told(e.key(strategy)) && e.key(strategy) != "":
			f.countOnce(e, strategy, resultSkipped)
			told = append(told, e)
		case pod.DeletionTimestamp != nil:
			// Being deleted: kubelet runs its preStop hook, which signals it.
			f.countOnce(e, strategy, resultDeleting)
		case strategy == StrategySignal && e.container == "":
			// Not running yet: a later pass has it.
			pending++
		default:
			todo = append(todo, e)
			keys = append(keys, e.key(strategy))
		}
	}
	// Remember first, then tell: after a crash in between, an executor is
	// told never rather than twice (its preStop hook still signals it).
	f.st.mark(n.ID, keys...)
	if err := f.saveState(ctx); err != nil && ctx.Err() == nil {
		f.m.fail(reasonState)
		f.log.Warn("interruption state not saved; a restarted agent could signal these executors again", "err", err)
	}
	if len(todo) == 0 {
		for _, e := range told {
			f.follow(ctx, wg, e, deadline) // after a restart: keep the deadline
		}
		return pending
	}
	var tw sync.WaitGroup
	for _, e := range todo {
		tw.Go(func() {
			if f.tell(ctx, e, n, deadline) {
				f.follow(ctx, wg, e, deadline)
			}
		})
	}
	tw.Wait()
	took := f.now().Sub(n.Seen)
	f.m.reaction.WithLabelValues(strategy).Observe(took.Seconds())
	f.log.Info("executors told", "notice", n.ID, "count", len(todo), "strategy", strategy, "sinceSeen", took)
	for _, e := range told {
		f.follow(ctx, wg, e, deadline)
	}
	return pending
}

func (f *Interrupt) countOnce(e executor, strategy, result string) {
	f.mu.Lock()
	k := string(e.pod.UID) + "/" + result
	first := !f.counted[k]
	f.counted[k] = true
	f.mu.Unlock()
	if first {
		f.m.executors.WithLabelValues(strategy, result).Inc()
	}
}

// containerID returns the containerd ID of the pod's executor container
// while it runs, or "".
func (f *Interrupt) containerID(pod *corev1.Pod) string {
	name := f.cfg.Decommission.Container
	if name == "" && len(pod.Spec.Containers) > 0 {
		name = pod.Spec.Containers[0].Name
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != name || cs.State.Running == nil {
			continue
		}
		if id, ok := strings.CutPrefix(cs.ContainerID, "containerd://"); ok {
			return id
		}
	}
	return ""
}

// tell signals or evicts one executor; it reports whether it was told.
func (f *Interrupt) tell(ctx context.Context, e executor, n Notice, deadline time.Time) bool {
	strategy := f.cfg.Decommission.Strategy
	if strategy == StrategyEvict {
		return f.evict(ctx, e, n, deadline)
	}
	guarded := f.cfg.Decommission.GuardEviction && f.guard(ctx, e)
	err := f.tasks.Kill(ctx, e.container, f.sig)
	switch {
	case err == nil:
		f.m.executors.WithLabelValues(strategy, resultSignalled).Inc()
		f.kube.PodEvent(e.pod, corev1.EventTypeNormal, "DecommissionSignalled", "Decommission",
			"sent %s to container %.12s for %s: the executor migrates its blocks and exits", f.cfg.Decommission.Signal, e.container, n)
		return true
	case errors.Is(err, errGone):
		f.m.executors.WithLabelValues(strategy, resultGone).Inc()
		f.log.Info("executor gone before it was signalled", "pod", e.String(), "container", e.container)
	default:
		f.m.executors.WithLabelValues(strategy, resultFailed).Inc()
		f.m.fail(reasonContainerd)
		f.log.Warn("executor not signalled", "pod", e.String(), "container", e.container, "err", err)
		f.kube.PodEvent(e.pod, corev1.EventTypeWarning, "DecommissionFailed", "Decommission",
			"sending %s to container %.12s failed: %v", f.cfg.Decommission.Signal, e.container, err)
	}
	if guarded {
		f.unguard(e)
	}
	return false
}

// evict asks the Eviction API to delete the pod with a grace period that
// fits before the deadline; its preStop hook then signals the executor.
// A budget that refuses (429) is asked again until the deadline.
func (f *Interrupt) evict(ctx context.Context, e executor, n Notice, deadline time.Time) bool {
	grace := int64(30)
	if g := e.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	if left := int64(deadline.Sub(f.now()).Seconds()); left < grace {
		grace = max(left, 1)
	}
	for {
		err := f.kube.Evict(ctx, e.pod.Namespace, e.pod.Name, &grace)
		switch {
		case err == nil:
			f.m.executors.WithLabelValues(StrategyEvict, resultEvicted).Inc()
			f.kube.PodEvent(e.pod, corev1.EventTypeNormal, "DecommissionEvicted", "Decommission",
				"evicted with a %ds grace period for %s: the preStop hook decommissions the executor", grace, n)
			return true
		case apierrors.IsNotFound(err):
			f.m.executors.WithLabelValues(StrategyEvict, resultGone).Inc()
			return false
		case apierrors.IsTooManyRequests(err) && f.now().Add(5*time.Second).Before(deadline):
			t := time.NewTimer(jitter(3 * time.Second))
			select {
			case <-ctx.Done():
				t.Stop()
				return false
			case <-t.C:
			}
		default:
			if ctx.Err() != nil {
				return false
			}
			f.m.executors.WithLabelValues(StrategyEvict, resultFailed).Inc()
			f.m.fail(reasonEvict)
			f.log.Warn("executor not evicted", "pod", e.String(), "err", err)
			f.kube.PodEvent(e.pod, corev1.EventTypeWarning, "DecommissionFailed", "Decommission", "eviction failed: %v", err)
			return false
		}
	}
}

// guard makes the PodDisruptionBudget that keeps a drain from evicting the
// executor while it decommissions. It needs labels that single the pod
// out: Spark's app and executor ID.
func (f *Interrupt) guard(ctx context.Context, e executor) bool {
	app, exec := e.pod.Labels[labelSparkApp], e.pod.Labels[labelSparkExec]
	if app == "" || exec == "" {
		f.log.Info("executor not guarded: it lacks the spark-app-selector and spark-exec-id labels", "pod", e.String())
		return false
	}
	sel := map[string]string{labelSparkApp: app, labelSparkExec: exec}
	if err := f.kube.GuardPod(ctx, e.pod, guardName(e.pod), sel); err != nil {
		f.m.fail(reasonGuard)
		f.log.Warn("executor not guarded against eviction", "pod", e.String(), "err", err)
		return false
	}
	return true
}

func (f *Interrupt) unguard(e executor) {
	if !f.cfg.Decommission.GuardEviction || f.cfg.Decommission.Strategy != StrategySignal {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.kube.Unguard(ctx, e.pod.Namespace, guardName(e.pod)); err != nil {
		f.m.fail(reasonGuard)
		f.log.Warn("eviction guard not removed (the garbage collector removes it with the pod)", "pod", e.String(), "err", err)
	}
}

func guardName(pod *corev1.Pod) string {
	name := guardPrefix + pod.Name
	if len(name) > 253 {
		name = name[:253]
	}
	return name
}

// follow waits, once per container and process, for a told executor to
// exit until the deadline, then reports its outcome (pod Event + metric),
// removes its guard and, if configured, evicts one still running.
func (f *Interrupt) follow(ctx context.Context, wg *sync.WaitGroup, e executor, deadline time.Time) {
	strategy := f.cfg.Decommission.Strategy
	if e.container == "" || (strategy == StrategySignal && f.tasks == nil) {
		return
	}
	f.mu.Lock()
	if f.tracked[e.container] {
		f.mu.Unlock()
		return
	}
	f.tracked[e.container] = true
	f.mu.Unlock()
	start := f.now()
	wg.Go(func() {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		var code uint32
		var err error
		if strategy == StrategySignal {
			code, err = f.tasks.Wait(wctx, e.container)
		} else {
			code, err = f.waitPod(wctx, e) // evict: no containerd socket needed
		}
		if ctx.Err() != nil {
			return // the agent stops; the guard goes with the pod
		}
		took := f.now().Sub(start).Round(10 * time.Millisecond)
		switch {
		case err == nil && code == 0:
			f.m.executors.WithLabelValues(strategy, resultExited).Inc()
			f.kube.PodEvent(e.pod, corev1.EventTypeNormal, "ExecutorDecommissioned", "Decommission", "the executor exited 0, %s after it was told", took)
		case err == nil:
			f.m.executors.WithLabelValues(strategy, resultExitedErr).Inc()
			f.kube.PodEvent(e.pod, corev1.EventTypeWarning, "ExecutorDecommissioned", "Decommission", "the executor exited with code %d, %s after it was told", code, took)
		case errors.Is(err, errGone):
			f.m.executors.WithLabelValues(strategy, resultGone).Inc()
		case wctx.Err() != nil:
			f.m.executors.WithLabelValues(strategy, resultDeadline).Inc()
			f.kube.PodEvent(e.pod, corev1.EventTypeWarning, "DecommissionDeadline", "Decommission",
				"the executor still runs at the deadline, %s after it was told (fallback: %s)", took, f.cfg.Decommission.Fallback)
		default:
			f.m.fail(reasonContainerd)
			f.log.Warn("executor exit not followed", "pod", e.String(), "err", err)
		}
		f.unguard(e)
		if wctx.Err() != nil && f.cfg.Decommission.Fallback == FallbackEvict && strategy == StrategySignal {
			f.fallbackEvict(ctx, e)
		}
	})
}

// waitPod follows an evicted executor through the API server (a GET every
// second or so) until its container terminated or the pod is gone.
func (f *Interrupt) waitPod(ctx context.Context, e executor) (uint32, error) {
	for {
		pod, err := f.kube.Pod(ctx, e.pod.Namespace, e.pod.Name)
		switch {
		case apierrors.IsNotFound(err) || (err == nil && pod.UID != e.pod.UID):
			return 0, errGone // deleted after it stopped: the exit code went with it
		case err == nil:
			for _, cs := range pod.Status.ContainerStatuses {
				if strings.TrimPrefix(cs.ContainerID, "containerd://") == e.container && cs.State.Terminated != nil {
					return uint32(cs.State.Terminated.ExitCode), nil
				}
			}
		}
		t := time.NewTimer(jitter(time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

func (f *Interrupt) fallbackEvict(ctx context.Context, e executor) {
	if err := f.kube.Evict(ctx, e.pod.Namespace, e.pod.Name, nil); err != nil && !apierrors.IsNotFound(err) {
		f.m.fail(reasonEvict)
		f.log.Warn("fallback eviction failed", "pod", e.String(), "err", err)
		return
	}
	f.log.Info("executor evicted at the deadline", "pod", e.String())
}
