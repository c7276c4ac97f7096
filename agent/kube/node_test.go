package kube_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/agent/kube/kubetest"
)

// waitNode waits, on the watch's change notifications, until the watched
// Node satisfies ok.
func waitNode(t *testing.T, changed <-chan struct{}, get func() *corev1.Node, ok func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		if n := get(); n != nil && ok(n) {
			return n
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("watched node never matched; last seen %+v", get())
		}
	}
}

func hasTaint(key string) func(*corev1.Node) bool {
	return func(n *corev1.Node) bool {
		for _, tt := range n.Spec.Taints {
			if tt.Key == key {
				return true
			}
		}
		return false
	}
}

// watching serves node(), starts a client on it and subscribes to its
// NodeWatch, until the test ends.
func watching(t *testing.T) (*kubetest.Server, *kube.Client, *kube.NodeWatch, <-chan struct{}) {
	s := kubetest.New(t, node())
	c := client(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	c.Start(ctx)
	w := c.NodeWatch()
	changed, unsubscribe := w.Subscribe()
	t.Cleanup(func() {
		unsubscribe()
		cancel()
		c.Stop()
	})
	return s, c, w, changed
}

// The watch follows changes made by others, resumes after the API server
// ends it, and lists again when its resourceVersion is compacted away (410),
// all without a single GET of the Node.
func TestNodeWatchFollowsTheNode(t *testing.T) {
	s, _, w, changed := watching(t)
	ctx := context.Background()

	n, err := w.WaitForNode(ctx)
	if err != nil || n.Name != "node-1" {
		t.Fatalf("WaitForNode = %v, %v", n, err)
	}
	s.Update(func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "spot/interruption", Effect: corev1.TaintEffectNoSchedule})
	})
	waitNode(t, changed, w.Node, hasTaint("spot/interruption"))

	s.Expire() // the watch ends; resuming from its version gets 410 Gone
	s.Update(func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "after-expiry", Effect: corev1.TaintEffectNoSchedule})
	})
	got := waitNode(t, changed, w.Node, hasTaint("after-expiry"))
	if got.ResourceVersion != s.Node().ResourceVersion {
		t.Errorf("watched resourceVersion %s, server's %s", got.ResourceVersion, s.Node().ResourceVersion)
	}
	req := s.Requests()
	if req["GET nodes"] != 0 {
		t.Errorf("requests = %v: the watch must not GET the Node", req)
	}
	if req["WATCH nodes"]+req["LIST nodes"] > 6 {
		t.Errorf("requests = %v: too many to follow two changes and one expiry", req)
	}
}

// A subscriber that arrives after the Node was seen hears of it at once.
func TestNodeWatchLateSubscriber(t *testing.T) {
	s := kubetest.New(t, node())
	c := client(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Start(ctx)
	defer c.Stop()
	if _, err := c.NodeWatch().WaitForNode(ctx); err != nil {
		t.Fatal(err)
	}
	changed, unsubscribe := c.NodeWatch().Subscribe()
	defer unsubscribe()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("a late subscriber was not told of the Node already there")
	}
}

// With the Node watched, writers send nothing when the Node already says
// what they would write: the readiness gate calls them every few seconds.
func TestWritesOnlyOnChange(t *testing.T) {
	s, c, w, changed := watching(t)
	ctx := context.Background()
	if _, err := w.WaitForNode(ctx); err != nil {
		t.Fatal(err)
	}
	cond := corev1.NodeCondition{Type: "NodeAgentReady", Status: corev1.ConditionTrue, Reason: "FeaturesReady", Message: "ok"}
	if err := c.SetCondition(ctx, cond); err != nil {
		t.Fatal(err)
	}
	if err := c.SetLabel(ctx, "nodeagent.io/ready", "true"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveTaint(ctx, startup); err != nil {
		t.Fatal(err)
	}
	waitNode(t, changed, w.Node, func(n *corev1.Node) bool {
		return n.Labels["nodeagent.io/ready"] == "true" && len(n.Status.Conditions) == 1 && !hasTaint(startup.Key)(&corev1.Node{Spec: corev1.NodeSpec{Taints: onlyEffect(n.Spec.Taints, startup.Effect)}})
	})
	before := s.Requests()
	for range 10 {
		if err := c.SetCondition(ctx, cond); err != nil {
			t.Fatal(err)
		}
		if err := c.SetLabel(ctx, "nodeagent.io/ready", "true"); err != nil {
			t.Fatal(err)
		}
		if removed, err := c.RemoveTaint(ctx, startup); err != nil || removed {
			t.Fatalf("RemoveTaint = %v, %v: nothing to remove", removed, err)
		}
	}
	after := s.Requests()
	for _, k := range []string{"GET nodes", "PATCH nodes", "PATCH nodes/status"} {
		if after[k] != before[k] {
			t.Errorf("%s: %d requests for nothing to change", k, after[k]-before[k])
		}
	}
}

func onlyEffect(ts []corev1.Taint, e corev1.TaintEffect) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range ts {
		if t.Effect == e {
			out = append(out, t)
		}
	}
	return out
}
