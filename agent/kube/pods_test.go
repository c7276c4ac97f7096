package kube_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent/kube/kubetest"
)

func TestAddTaint(t *testing.T) {
	s := kubetest.New(t, node())
	c := client(t, s)
	ctx := context.Background()
	taint := corev1.Taint{Key: "nodeagent.io/interruption", Value: "rebalance-recommendation", Effect: corev1.TaintEffectNoSchedule}
	if changed, err := c.AddTaint(ctx, taint); err != nil || !changed {
		t.Fatalf("AddTaint = %v, %v", changed, err)
	}
	if changed, err := c.AddTaint(ctx, taint); err != nil || changed {
		t.Errorf("AddTaint again = %v, %v; want nothing to do", changed, err)
	}
	taint.Value = "spot-interruption"
	if changed, err := c.AddTaint(ctx, taint); err != nil || !changed {
		t.Fatalf("AddTaint with a new value = %v, %v", changed, err)
	}
	got := s.Node().Spec.Taints
	if len(got) != 4 || got[3] != taint {
		t.Errorf("taints = %v, want the three others kept and %v once", got, taint)
	}
}

func TestSetAnnotation(t *testing.T) {
	s := kubetest.New(t, node())
	c := client(t, s)
	v := `{"told":["abc"]}`
	if err := c.SetAnnotation(context.Background(), "nodeagent.io/interruption-state", &v); err != nil {
		t.Fatal(err)
	}
	if got := s.Node().Annotations["nodeagent.io/interruption-state"]; got != v {
		t.Errorf("annotation = %q", got)
	}
	if err := c.SetAnnotation(context.Background(), "nodeagent.io/interruption-state", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Node().Annotations["nodeagent.io/interruption-state"]; ok {
		t.Errorf("annotation not removed")
	}
}
