package interrupt

import (
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// Against the real amazon-ec2-metadata-mock, IMDSv2 only (-I).

// TestMockSpotNoticeAfterDelay: nothing happens while the mock answers 404;
// once the notice appears, both executors get SIGPWR once, the driver
// nothing, the Node is tainted and an Event says why. A second agent
// process on the same Node (a restart) signals nobody again.
func TestMockSpotNoticeAfterDelay(t *testing.T) {
	t.Parallel()
	start := time.Now()
	endpoint := startMock(t, "spot", "-d", "2")
	c := newFakeCluster(executorPod("exec-1", "c1"), executorPod("exec-2", "c2"), sparkPod("driver", "driver", "c0"))
	tk := newFakeTasks()
	f, reg := testFeature(t, testConfig(endpoint), c, nil, tk)
	runFeature(t, f)

	eventually(t, 20*time.Second, "both executors signalled", func() bool {
		return len(tk.got("c1")) == 1 && len(tk.got("c2")) == 1
	})
	// The mock counts its delay in whole seconds from its start.
	if since := time.Since(start); since < time.Second {
		t.Errorf("signalled %s after the mock started, before its 2s delay", since)
	}
	if got := tk.got("c0"); len(got) != 0 {
		t.Errorf("the driver got %v", got)
	}
	if got := tk.got("c1"); got[0] != unix.SIGPWR {
		t.Errorf("exec-1 got %v, want SIGPWR", got)
	}
	eventually(t, 5*time.Second, "taint", func() bool {
		for _, tt := range c.taints() {
			if tt.Key == "nodeagent.io/interruption" && tt.Value == KindSpot && tt.Effect == corev1.TaintEffectNoSchedule {
				return true
			}
		}
		return false
	})
	if ev := c.eventsWith("InterruptionNotice"); !slices.ContainsFunc(ev, func(e string) bool {
		return strings.Contains(e, "spot-interruption (imds: terminate") && strings.Contains(e, "left: decommissioning executors")
	}) {
		t.Errorf("node events = %v", ev)
	}
	if ev := c.eventsWith("DecommissionSignalled"); len(ev) != 2 {
		t.Errorf("pod events = %v, want one per executor", ev)
	}
	if n := counter(f.m.notices.WithLabelValues(KindSpot, SourceIMDS)); n != 1 {
		t.Errorf("notices_total = %v", n)
	}
	if n := counter(f.m.executors.WithLabelValues(StrategySignal, resultSignalled)); n != 2 {
		t.Errorf("executors_total{signalled} = %v", n)
	}
	_ = reg

	// The restart: a new process on the same Node keeps polling the same
	// notice and signals nobody.
	f2, _ := testFeature(t, testConfig(endpoint), c, nil, tk)
	runFeature(t, f2)
	eventually(t, 10*time.Second, "the second process to poll the notice a few times", func() bool {
		return counter(f2.m.requests.WithLabelValues(pathSpot, "200")) >= 5
	})
	if got := len(tk.got("c1")) + len(tk.got("c2")); got != 2 {
		t.Errorf("after a restart the executors got %d signals in all, want 2", got)
	}
	if n := counter(f2.m.notices.WithLabelValues(KindSpot, SourceIMDS)); n != 0 {
		t.Errorf("the restarted process counted the notice again: %v", n)
	}
	if n := counter(f2.m.executors.WithLabelValues(StrategySignal, resultSkipped)); n != 2 {
		t.Errorf("executors_total{already_signalled} = %v, want 2", n)
	}
}

// TestMockRebalanceTaintsOnly: the default policy for a rebalance
// recommendation is the taint alone.
func TestMockRebalanceTaintsOnly(t *testing.T) {
	t.Parallel()
	// The spot notice is due in an hour: only the rebalance shows now.
	endpoint := startMock(t, "spot", "--mock-delay-sec", "3600", "--rebalance-delay-sec", "1")
	c := newFakeCluster(executorPod("exec-1", "c1"))
	tk := newFakeTasks()
	f, _ := testFeature(t, testConfig(endpoint), c, nil, tk)
	runFeature(t, f)
	eventually(t, 15*time.Second, "rebalance taint", func() bool {
		ts := c.taints()
		return len(ts) == 1 && ts[0].Value == KindRebalance
	})
	if n := counter(f.m.notices.WithLabelValues(KindRebalance, SourceIMDS)); n != 1 {
		t.Errorf("notices_total{rebalance} = %v", n)
	}
	if got := tk.got("c1"); len(got) != 0 {
		t.Errorf("a rebalance signalled the executor: %v", got)
	}
}

// TestMockScheduledMaintenance: an active event decommissions
// maintenanceLeadTime before NotBefore: at once when that has passed, later
// otherwise.
func TestMockScheduledMaintenance(t *testing.T) {
	t.Parallel()
	t.Run("due", func(t *testing.T) {
		t.Parallel()
		endpoint := startMock(t, "events", "--code", "instance-retirement")
		c := newFakeCluster(executorPod("exec-1", "c1"))
		tk := newFakeTasks()
		f, _ := testFeature(t, testConfig(endpoint), c, nil, tk)
		runFeature(t, f)
		eventually(t, 15*time.Second, "executor signalled", func() bool { return len(tk.got("c1")) == 1 })
		if ev := c.eventsWith("InterruptionNotice"); len(ev) != 1 || !strings.Contains(ev[0], "instance-retirement") {
			t.Errorf("node events = %v", ev)
		}
	})
	t.Run("later", func(t *testing.T) {
		t.Parallel()
		notBefore := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		endpoint := startMock(t, "events", "--not-before", notBefore)
		c := newFakeCluster(executorPod("exec-1", "c1"))
		tk := newFakeTasks()
		f, _ := testFeature(t, testConfig(endpoint), c, nil, tk)
		runFeature(t, f)
		eventually(t, 15*time.Second, "the notice", func() bool {
			return counter(f.m.notices.WithLabelValues(KindMaintenance, SourceIMDS)) == 1
		})
		if ev := c.eventsWith("InterruptionNotice"); len(ev) != 1 || !strings.Contains(ev[0], "decommission due at") {
			t.Errorf("node events = %v", ev)
		}
		if got := tk.got("c1"); len(got) != 0 || len(c.taints()) != 0 {
			t.Errorf("acted 50 minutes early: signals %v, taints %v", got, c.taints())
		}
	})
}

// TestMockASGTermination: target-lifecycle-state Terminated decommissions.
func TestMockASGTermination(t *testing.T) {
	t.Parallel()
	endpoint := startMock(t, "asglifecycle", "--asg-termination-delay-sec", "1")
	c := newFakeCluster(executorPod("exec-1", "c1"))
	tk := newFakeTasks()
	f, _ := testFeature(t, testConfig(endpoint), c, nil, tk)
	runFeature(t, f)
	eventually(t, 15*time.Second, "executor signalled", func() bool { return len(tk.got("c1")) == 1 })
	if n := counter(f.m.notices.WithLabelValues(KindASG, SourceIMDS)); n != 1 {
		t.Errorf("notices_total{asg} = %v", n)
	}
}

// TestMockNodeFacts: node_info carries the mock's instance facts.
func TestMockNodeFacts(t *testing.T) {
	t.Parallel()
	endpoint := startMock(t, "asglifecycle", "--asg-termination-delay-sec", "3600")
	f, _ := testFeature(t, testConfig(endpoint), newFakeCluster(), nil, newFakeTasks())
	runFeature(t, f)
	eventually(t, 15*time.Second, "node_info", func() bool {
		return counter(f.m.nodeInfo.WithLabelValues("m4.xlarge", "on-demand", "us-east-1a", "use1-az4", "ami-0a887e401f7654935")) == 1
	})
}
