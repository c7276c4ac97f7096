//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

// startupToleration lets test pods run on the node before the agent has
// removed its startup taint.
var startupToleration = corev1.Toleration{Key: "nodeagent.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}

// TestSmokeClusterRunsPodAsRoot brings up the cluster, checks the Node
// registered with the startup taint, and runs a pod from an image built in
// Go and pushed to the local registry.
func TestSmokeClusterRunsPodAsRoot(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()

	node, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasTaint(node, "nodeagent.io/not-ready", corev1.TaintEffectNoSchedule) {
		t.Errorf("node %s taints = %v, want the startup taint %s", c.NodeName, node.Spec.Taints, cluster.StartupTaint)
	}

	bin := filepath.Join(t.TempDir(), "hello")
	if err := image.GoBuild(ctx, cluster.ModuleDir(), "./images/hello", bin); err != nil {
		t.Fatal(err)
	}
	img, err := image.StaticBinary(bin, "hello")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := image.Push(ctx, img, c.Registry+"/e2e/hello:smoke")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed %s", ref)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "default"},
		Spec: corev1.PodSpec{
			Tolerations:                   []corev1.Toleration{startupToleration},
			TerminationGracePeriodSeconds: ptr(int64(5)),
			Containers: []corev1.Container{{
				Name:  "hello",
				Image: ref,
			}},
		},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err = c.Client.CoreV1().Pods("default").Get(ctx, "hello", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if got.Status.Phase == corev1.PodFailed {
			return false, fmt.Errorf("pod failed: %+v", got.Status)
		}
		return got.Status.Phase == corev1.PodRunning && podReady(got), nil
	})
	if err != nil {
		t.Fatalf("pod hello not running: %v; status: %+v", err, statusOf(got))
	}
	for _, cs := range got.Status.ContainerStatuses {
		if cs.RestartCount != 0 {
			t.Errorf("container %s restarted %d times", cs.Name, cs.RestartCount)
		}
	}
	if got.Status.PodIP == "" || !strings.HasPrefix(got.Status.PodIP, strings.TrimSuffix(c.PodCIDR, "0/24")) {
		t.Errorf("pod IP %q not in the pod subnet %s", got.Status.PodIP, c.PodCIDR)
	}
	var log string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		log, _ = c.PodLog("default", "hello", "hello")
		return strings.Contains(log, "hello from nodeagent e2e on hello"), nil
	})
	if err != nil {
		t.Fatalf("pod log does not show the greeting: %q", log)
	}

	if err := c.Client.CoreV1().Pods("default").Delete(ctx, "hello", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Pods("default").Get(ctx, "hello", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("pod hello not deleted: %v", err)
	}
	t.Logf("PHASE smoke-test: %s", time.Since(start).Round(time.Millisecond))
}

func ptr[T any](v T) *T { return &v }

func hasTaint(n *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func statusOf(p *corev1.Pod) any {
	if p == nil {
		return nil
	}
	return p.Status
}
