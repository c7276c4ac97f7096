//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodeagent/nodeagent/e2e/cluster"
)

// policyDenial is in the message of the chart's ValidatingAdmissionPolicy.
const policyDenial = "may change only the Node its pod runs on"

// agentToken reads the service account token the kubelet projected into the
// agent pod: the very credential the agent uses.
func agentToken(t *testing.T, c *cluster.Cluster, pod *corev1.Pod) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(c.Dir, "kubelet", "root", "pods", string(pod.UID),
		"volumes", "kubernetes.io~projected", "*", "token"))
	if len(files) != 1 {
		t.Fatalf("want the one projected token of pod %s, found %v", pod.Name, files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// testOwnNodeOnly: with the agent's own token, changing its Node (labels,
// status, an Event about it) is allowed, and the same on a second Node is
// refused by the chart's ValidatingAdmissionPolicy, although RBAC grants
// `nodes patch` cluster-wide.
func testOwnNodeOnly(ctx context.Context, t *testing.T, c *cluster.Cluster, pod *corev1.Pod) {
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = agentToken(t, c, pod)
	agent, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// What the API server makes of the token: the node name is in its extra.
	review, err := agent.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview with the agent's token: %v", err)
	}
	ui := review.Status.UserInfo
	t.Logf("the agent's token authenticates as %s, extra %v", ui.Username, ui.Extra)
	if got := ui.Extra["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != c.NodeName {
		t.Fatalf("token extra authentication.kubernetes.io/node-name = %v, want [%s] (ServiceAccountTokenPodNodeInfo)", got, c.NodeName)
	}

	// A second Node object (no kubelet behind it; no kubernetes.io/os
	// label, so the DaemonSet does not schedule onto it).
	const other = "nodeagent-e2e-other"
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Client.CoreV1().Nodes().Delete(context.Background(), other, metav1.DeleteOptions{}) })

	label := func(v string) []byte {
		if v == "" {
			return []byte(`{"metadata":{"labels":{"e2e.nodeagent.io/own-node":null}}}`)
		}
		return []byte(`{"metadata":{"labels":{"e2e.nodeagent.io/own-node":"` + v + `"}}}`)
	}
	condition := []byte(`{"status":{"conditions":[{"type":"E2EOwnNode","status":"True","reason":"E2E","message":"own-node check","lastHeartbeatTime":"` +
		time.Now().UTC().Format(time.RFC3339) + `","lastTransitionTime":"` + time.Now().UTC().Format(time.RFC3339) + `"}]}}`)
	event := func(node string) *eventsv1.Event {
		return &eventsv1.Event{
			ObjectMeta:          metav1.ObjectMeta{GenerateName: "own-node-check-", Namespace: "default"},
			EventTime:           metav1.NowMicro(),
			ReportingController: "e2e.nodeagent.io/own-node",
			ReportingInstance:   "e2e",
			Action:              "Check",
			Reason:              "OwnNodeCheck",
			Type:                corev1.EventTypeNormal,
			Regarding:           corev1.ObjectReference{Kind: "Node", Name: node, APIVersion: "v1"},
			Note:                "e2e: may the agent's token write this?",
		}
	}
	nodes := agent.CoreV1().Nodes()
	for _, tc := range []struct {
		what string
		do   func(node string) error
	}{
		{"patch labels", func(n string) error {
			_, err := nodes.Patch(ctx, n, types.StrategicMergePatchType, label("1"), metav1.PatchOptions{})
			return err
		}},
		{"patch status", func(n string) error {
			_, err := nodes.PatchStatus(ctx, n, condition)
			return err
		}},
		{"create an Event about it", func(n string) error {
			_, err := agent.EventsV1().Events("default").Create(ctx, event(n), metav1.CreateOptions{})
			return err
		}},
	} {
		if err := tc.do(c.NodeName); err != nil {
			t.Errorf("%s of its own Node %s with the agent's token: %v", tc.what, c.NodeName, err)
		}
		err := tc.do(other)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), policyDenial) {
			t.Errorf("%s of Node %s with the agent's token: err = %v, want Forbidden by the policy (%q)", tc.what, other, err, policyDenial)
		} else {
			t.Logf("%s of Node %s refused: %v", tc.what, other, err)
		}
	}
	if _, err := nodes.Patch(ctx, c.NodeName, types.StrategicMergePatchType, label(""), metav1.PatchOptions{}); err != nil {
		t.Errorf("remove the check label: %v", err)
	}
	// The condition stays on the Node; the kubelet keeps only what it owns
	// when it next updates status, so remove it as admin.
	if n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{}); err == nil {
		var keep []corev1.NodeCondition
		for _, cond := range n.Status.Conditions {
			if cond.Type != "E2EOwnNode" {
				keep = append(keep, cond)
			}
		}
		n.Status.Conditions = keep
		if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Logf("remove the check condition: %v", err)
		}
	}
}
