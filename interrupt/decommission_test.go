package interrupt

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeNodes is a watched Node a test changes.
type fakeNodes struct {
	mu   sync.Mutex
	node *corev1.Node
	subs []chan struct{}
}

func (n *fakeNodes) Node() *corev1.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.node
}

func (n *fakeNodes) Subscribe() (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := make(chan struct{}, 1)
	if n.node != nil {
		ch <- struct{}{}
	}
	n.subs = append(n.subs, ch)
	return ch, func() {}
}

func (n *fakeNodes) setTaints(taints ...corev1.Taint) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Spec: corev1.NodeSpec{Taints: taints}}
	for _, ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func taintOnly() *Config {
	cfg := testConfig("")
	cfg.IMDS.Enabled = false
	return cfg
}

// TestKarpenterTaintDecommissions: karpenter.sh/disrupted on the Node
// decommissions; executors exit 0 and each outcome is a pod Event; the
// guards are made before the signal and removed after the exit.
func TestKarpenterTaintDecommissions(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(executorPod("exec-1", "c1"), executorPod("exec-2", "c2"), sparkPod("driver", "driver", "c0"))
	tk := newFakeTasks()
	nodes := &fakeNodes{}
	f, _ := testFeature(t, taintOnly(), c, nodes, tk)
	runFeature(t, f)
	nodes.setTaints(corev1.Taint{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule})
	eventually(t, 10*time.Second, "signals", func() bool { return len(tk.got("c1")) == 1 && len(tk.got("c2")) == 1 })
	c.mu.Lock()
	guards := len(c.guards)
	c.mu.Unlock()
	if guards != 2 {
		t.Errorf("%d guards while the executors decommission, want 2", guards)
	}
	// A drain now: the guard refuses the eviction.
	if err := c.Evict(context.Background(), "spark", "exec-1", new(int64)); err == nil {
		t.Errorf("a drain evicted a decommissioning executor")
	}
	tk.exit("c1") <- 0
	tk.exit("c2") <- 0
	eventually(t, 10*time.Second, "outcomes", func() bool { return len(c.eventsWith("ExecutorDecommissioned")) == 2 })
	eventually(t, 10*time.Second, "guards removed", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.guards) == 0
	})
	if n := counter(f.m.executors.WithLabelValues(StrategySignal, resultExited)); n != 2 {
		t.Errorf("executors_total{exited} = %v", n)
	}
	if n := counter(f.m.notices.WithLabelValues(KindDisruption, SourceTaint)); n != 1 {
		t.Errorf("notices_total{disruption,taint} = %v", n)
	}
	if got := tk.got("c0"); len(got) != 0 {
		t.Errorf("driver signalled: %v", got)
	}
	// NTH's spot taint afterwards is another notice, but nobody is told twice.
	nodes.setTaints(corev1.Taint{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule},
		corev1.Taint{Key: "aws-node-termination-handler/spot-itn", Effect: corev1.TaintEffectNoSchedule})
	eventually(t, 10*time.Second, "second notice", func() bool { return counter(f.m.notices.WithLabelValues(KindSpot, SourceTaint)) == 1 })
	if n := len(tk.got("c1")) + len(tk.got("c2")); n != 2 {
		t.Errorf("%d signals in all, want 2", n)
	}
}

// TestDeadlineAndFallback: an executor still running at the deadline is
// reported, its guard removed, and with fallback evict it is evicted.
func TestDeadlineAndFallback(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(executorPod("exec-1", "c1"))
	tk := newFakeTasks()
	nodes := &fakeNodes{}
	cfg := taintOnly()
	cfg.Decommission.Deadline = time.Second
	cfg.Decommission.Fallback = FallbackEvict
	f, _ := testFeature(t, cfg, c, nodes, tk)
	runFeature(t, f)
	nodes.setTaints(corev1.Taint{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule})
	eventually(t, 10*time.Second, "deadline event", func() bool { return len(c.eventsWith("DecommissionDeadline")) == 1 })
	eventually(t, 10*time.Second, "fallback eviction", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.evicted) == 1
	})
	if n := counter(f.m.executors.WithLabelValues(StrategySignal, resultDeadline)); n != 1 {
		t.Errorf("executors_total{running_at_deadline} = %v", n)
	}
}

// TestEvictStrategy: evict with a grace period that fits the time left;
// pods being deleted and pods not running are left alone; a vanished
// container is counted as gone.
func TestEvictStrategy(t *testing.T) {
	t.Parallel()
	deleting := executorPod("exec-3", "c3")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	c := newFakeCluster(executorPod("exec-1", "c1"), executorPod("exec-2", "c2"), deleting, sparkPod("driver", "driver", "c0"))
	cfg := taintOnly()
	cfg.Decommission.Strategy = StrategyEvict
	cfg.Decommission.Deadline = 10 * time.Second
	nodes := &fakeNodes{}
	f, _ := testFeature(t, cfg, c, nodes, newFakeTasks())
	runFeature(t, f)
	nodes.setTaints(corev1.Taint{Key: "aws-node-termination-handler/spot-itn", Effect: corev1.TaintEffectNoSchedule})
	eventually(t, 10*time.Second, "evictions", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.evicted) == 2
	})
	c.mu.Lock()
	ev := strings.Join(c.evicted, ",")
	c.mu.Unlock()
	if !strings.Contains(ev, "spark/exec-1 grace=9") && !strings.Contains(ev, "spark/exec-1 grace=10") {
		t.Errorf("evicted %s, want a grace period that fits the 10s deadline", ev)
	}
	if strings.Contains(ev, "driver") || strings.Contains(ev, "exec-3") {
		t.Errorf("evicted %s: the driver or a pod already being deleted", ev)
	}
	if n := counter(f.m.executors.WithLabelValues(StrategyEvict, resultDeleting)); n != 1 {
		t.Errorf("executors_total{deleting} = %v", n)
	}
}

// TestGoneAndListFailure: a container that vanished is "gone"; a failed
// pod list is reported on the Node and not fatal.
func TestGoneAndListFailure(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(executorPod("exec-1", "c1"))
	tk := newFakeTasks()
	tk.gone["c1"] = true
	nodes := &fakeNodes{}
	f, _ := testFeature(t, taintOnly(), c, nodes, tk)
	runFeature(t, f)
	nodes.setTaints(corev1.Taint{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule})
	eventually(t, 10*time.Second, "gone", func() bool { return counter(f.m.executors.WithLabelValues(StrategySignal, resultGone)) == 1 })

	c2 := newFakeCluster(executorPod("exec-1", "c1"))
	c2.listErr = context.DeadlineExceeded
	nodes2 := &fakeNodes{}
	f2, _ := testFeature(t, taintOnly(), c2, nodes2, newFakeTasks())
	runFeature(t, f2)
	nodes2.setTaints(corev1.Taint{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule})
	eventually(t, 10*time.Second, "failure event", func() bool { return len(c2.eventsWith("DecommissionFailed")) >= 1 })
	if n := counter(f2.m.errors.WithLabelValues(reasonPods)); n < 1 {
		t.Errorf("errors_total{list_pods} = %v", n)
	}
}

// TestCorruptStateRefuses: an unreadable state annotation stops Run with an
// error naming it rather than risk a second signal.
func TestCorruptStateRefuses(t *testing.T) {
	t.Parallel()
	c := newFakeCluster()
	c.node.Annotations[StateAnnotation] = "{not json"
	f, _ := testFeature(t, taintOnly(), c, nil, newFakeTasks())
	err := f.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), StateAnnotation) {
		t.Errorf("Run = %v, want an error naming %s", err, StateAnnotation)
	}
}

func taintFor(key string) corev1.Taint {
	return corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule}
}

// TestLateExecutor: an executor whose container status is not reported yet
// when the notice comes is signalled once it runs (kubelet reports the
// status a moment after the process starts: the e2e test hit this).
func TestLateExecutor(t *testing.T) {
	t.Parallel()
	late := executorPod("exec-2", "c2")
	late.Status.ContainerStatuses = nil
	c := newFakeCluster(executorPod("exec-1", "c1"), late)
	tk := newFakeTasks()
	nodes := &fakeNodes{}
	f, _ := testFeature(t, taintOnly(), c, nodes, tk)
	runFeature(t, f)
	nodes.setTaints(taintFor("karpenter.sh/disrupted"))
	eventually(t, 10*time.Second, "the running executor", func() bool { return len(tk.got("c1")) == 1 })
	c.mu.Lock()
	c.pods[1] = executorPod("exec-2", "c2")
	c.mu.Unlock()
	eventually(t, 10*time.Second, "the late executor", func() bool { return len(tk.got("c2")) == 1 })
	if n := len(tk.got("c1")); n != 1 {
		t.Errorf("exec-1 got %d signals", n)
	}
}
