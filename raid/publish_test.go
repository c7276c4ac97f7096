package raid

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/agent/kube/kubetest"
)

// TestPublish: once mounted, the Node gets the layout label and a Normal
// Event; when the mount is gone and the disks cannot be used, the label goes,
// a Warning Event says why and Ready() carries the reason.
func TestPublish(t *testing.T) {
	t.Parallel()
	api := kubetest.New(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	kc, err := kube.New(api.Config, "n1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kc.Start(ctx)

	host := fixture(t, "single_disk")
	cfg := DefaultConfig()
	cfg.CapacityResource = "nodeagent.io/local-scratch"
	f, err := New(cfg, agent.Deps{Host: host, Exec: &fakeHost{t: t, host: host}, Kube: kc})
	if err != nil {
		t.Fatal(err)
	}
	f.lockPath = ""
	if err := f.Ready(); err == nil {
		t.Fatal("ready before the first Ensure")
	}
	rep, err := f.Ensure(ctx)
	f.publish(ctx, rep, err)
	if err := f.Ready(); err != nil {
		t.Fatalf("not ready after formatting: %v", err)
	}
	if got := api.Node().Labels["nodeagent.io/local-nvme"]; got != LayoutDisk {
		t.Errorf("label = %q, want %q", got, LayoutDisk)
	}
	rep.CapacityBytes = 1 << 40 // the fixture's statfs is the test machine's
	f.publish(ctx, rep, nil)
	if q := api.Node().Status.Capacity["nodeagent.io/local-scratch"]; q.String() != "1Ti" {
		t.Errorf("capacity = %s, want 1Ti", q.String())
	}

	blocked := &Report{Decision: Decision{Action: ActionBlocked, Reason: "nodeagent's array X has 1 of its 2 members here"}, State: &State{}}
	f.publish(ctx, blocked, nil)
	if err := f.Ready(); err == nil || !strings.Contains(err.Error(), "1 of its 2 members") {
		t.Errorf("Ready() = %v, want the reason", err)
	}
	if _, ok := api.Node().Labels["nodeagent.io/local-nvme"]; ok {
		t.Error("label still set while not ready")
	}
	if q := api.Node().Status.Capacity["nodeagent.io/local-scratch"]; !q.IsZero() {
		t.Errorf("capacity = %s while not ready, want 0", q.String())
	}
	kc.Stop()
	var reasons []string
	for _, e := range api.Events() {
		reasons = append(reasons, e.Type+"/"+e.Reason)
	}
	if strings.Join(reasons, " ") != "Normal/RaidFormatted Warning/RaidNotReady" {
		t.Errorf("events = %v", reasons)
	}
}
