package kube_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/agent/kube/kubetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

var startup = corev1.Taint{Key: "nodeagent.io/not-ready", Effect: corev1.TaintEffectNoSchedule}

func node() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"kept": "yes"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			startup,
			{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule},
			{Key: "nodeagent.io/not-ready", Effect: corev1.TaintEffectNoExecute}, // other effect: kept
		}},
	}
}

func client(t *testing.T, s *kubetest.Server) *kube.Client {
	c, err := kube.New(s.Config, "node-1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRemoveTaintKeepsOthers(t *testing.T) {
	s := kubetest.New(t, node())
	c := client(t, s)
	removed, err := c.RemoveTaint(context.Background(), startup)
	if err != nil || !removed {
		t.Fatalf("RemoveTaint = %v, %v", removed, err)
	}
	got := s.Node().Spec.Taints
	if len(got) != 2 || got[0].Key != "karpenter.sh/disrupted" || got[1].Effect != corev1.TaintEffectNoExecute {
		t.Errorf("taints = %v, want the other two kept", got)
	}
	removed, err = c.RemoveTaint(context.Background(), startup)
	if err != nil || removed {
		t.Errorf("second RemoveTaint = %v, %v; want nothing to do", removed, err)
	}
}

// A concurrent change between read and patch fails the patch's
// resourceVersion test; the client reads again instead of overwriting.
func TestRemoveTaintRetriesOnConcurrentChange(t *testing.T) {
	s := kubetest.New(t, node())
	races := 2
	s.BeforePatch = func(n *corev1.Node) {
		if races > 0 {
			races--
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "added-meanwhile", Effect: corev1.TaintEffectNoSchedule})
			kubetest.Bump(n)
		}
	}
	if _, err := client(t, s).RemoveTaint(context.Background(), startup); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, tt := range s.Node().Spec.Taints {
		keys = append(keys, tt.Key)
	}
	if strings.Join(keys, ",") != "karpenter.sh/disrupted,nodeagent.io/not-ready,added-meanwhile,added-meanwhile" {
		t.Errorf("taints = %v: the concurrent additions must survive", keys)
	}
}

func TestLabelAndCondition(t *testing.T) {
	s := kubetest.New(t, node())
	c := client(t, s)
	ctx := context.Background()
	if err := c.SetLabel(ctx, "nodeagent.io/ready", "true"); err != nil {
		t.Fatal(err)
	}
	if l := s.Node().Labels; l["nodeagent.io/ready"] != "true" || l["kept"] != "yes" {
		t.Errorf("labels = %v", l)
	}
	cond := corev1.NodeCondition{Type: "NodeAgentReady", Status: corev1.ConditionFalse, Reason: "FeaturesNotReady", Message: "raid: no disks"}
	if err := c.SetCondition(ctx, cond); err != nil {
		t.Fatal(err)
	}
	first := s.Node().Status.Conditions[0]
	time.Sleep(1100 * time.Millisecond) // condition times have second precision
	cond.Message = "raid: assembling"
	if err := c.SetCondition(ctx, cond); err != nil {
		t.Fatal(err)
	}
	got := s.Node().Status.Conditions
	if len(got) != 1 || got[0].Message != "raid: assembling" {
		t.Fatalf("conditions = %+v", got)
	}
	if !got[0].LastTransitionTime.Equal(&first.LastTransitionTime) {
		t.Errorf("transition time moved without a status change")
	}
	if s.Node().Spec.Taints == nil {
		t.Errorf("a status patch changed the spec")
	}
}

// TestServiceWatch: a Service is read by one list and then watched: its
// changes and its deletion arrive without another request, and a missing
// one reads as nil once the first list is done.
func TestServiceWatch(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-upstream"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.11"}}
	s := kubetest.New(t, node(), svc)
	c := client(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := c.ServiceWatch("kube-system", "kube-dns-upstream")
	go w.Run(ctx)
	missing := c.ServiceWatch("kube-system", "nope")
	go missing.Run(ctx)

	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	got, err := w.Wait(wctx)
	if err != nil || got == nil || got.Spec.ClusterIP != "10.96.0.11" {
		t.Fatalf("Wait = %+v, %v", got, err)
	}
	if got, err := missing.Wait(wctx); err != nil || got != nil {
		t.Errorf("missing Service: Wait = %+v, %v; want nil, nil", got, err)
	}

	before := s.Requests()
	changed, unsubscribe := w.Subscribe()
	defer unsubscribe()
	<-changed // the Service already there
	svc.Spec.ClusterIP = "10.96.0.12"
	s.SetService("kube-system", "kube-dns-upstream", svc)
	waitFor(t, changed, func() bool { o, _ := w.Get(); return o != nil && o.Spec.ClusterIP == "10.96.0.12" })
	s.SetService("kube-system", "kube-dns-upstream", nil)
	waitFor(t, changed, func() bool { o, synced := w.Get(); return synced && o == nil })
	if r := s.Requests(); r["GET services"] != 0 || r["LIST services"] != before["LIST services"] || r["WATCH services"] != before["WATCH services"] {
		t.Errorf("requests = %v after the changes, %v before: want the changes to arrive on the open watch, and no GET", r, before)
	}
}

// waitFor waits on changed until ok, for at most 30 s.
func waitFor(t *testing.T, changed <-chan struct{}, ok func() bool) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for !ok() {
		select {
		case <-changed:
		case <-timeout:
			t.Fatal("timed out waiting for the watch")
		}
	}
}

func TestEventsAreRateLimitedPerReason(t *testing.T) {
	s := kubetest.New(t, node())
	c := client(t, s)
	c.SetEventLimits(1, 2) // burst 2, then one a minute
	c.Start(context.Background())
	for range 5 {
		c.Event(corev1.EventTypeWarning, "ConfigRejected", "Reload", "bad key %s", "x.y")
	}
	c.Event(corev1.EventTypeNormal, "NodeReady", "ReadinessGate", "ready")
	c.Stop() // sends what is queued
	evs := s.Events()
	if len(evs) != 3 {
		t.Fatalf("%d events sent, want 2 ConfigRejected (burst) + 1 NodeReady", len(evs))
	}
	e := evs[0]
	if e.Reason != "ConfigRejected" || e.Note != "bad key x.y" || e.Regarding.Kind != "Node" || e.Regarding.Name != "node-1" ||
		e.ReportingController != "nodeagent" || e.Namespace != "default" || e.EventTime.IsZero() {
		t.Errorf("event = %+v", e)
	}
}

// TestServiceWatchWithoutWatchList: an API server without the WatchList
// feature refuses client-go's first request (a watch with initial events)
// and the reflector lists instead. The refusal is not a failure to read:
// Wait does not return it while that list is under way, and gets the
// Service from the list.
func TestServiceWatchWithoutWatchList(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-upstream"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.11"}}
	s := kubetest.New(t, node(), svc)
	listing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.NoWatchList = true
	s.BeforeList = func(resource string) {
		if resource == "services" {
			once.Do(func() { close(listing) })
			<-release
		}
	}
	c := client(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := c.ServiceWatch("kube-system", "kube-dns-upstream")
	go w.Run(ctx)
	type waited struct {
		svc *corev1.Service
		err error
	}
	got := make(chan waited, 1)
	go func() {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		svc, err := w.Wait(wctx)
		got <- waited{svc, err}
	}()
	<-listing // the watch-list was refused; the list waits for release
	if err := errors.Unwrap(w.Err()); err != nil {
		t.Errorf("Err during the fallback list names %v, want no failure yet", err)
	}
	close(release)
	if r := <-got; r.err != nil || r.svc == nil || r.svc.Spec.ClusterIP != "10.96.0.11" {
		t.Fatalf("Wait = %+v, %v; want the Service from the list", r.svc, r.err)
	}
}
