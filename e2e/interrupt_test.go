//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

const sparkNS = "spark"

// startMetadataMock runs the real ec2-metadata-mock (spot notice at once,
// IMDSv2 only) on the host's loopback, where the agent (host network)
// reaches it; it returns the endpoint and a stop function.
func startMetadataMock(t *testing.T) (string, func()) {
	t.Helper()
	bin := filepath.Join(cluster.CacheDir(), "bin", "ec2-metadata-mock")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("ec2-metadata-mock not at %s: run interrupt/hack/prereqs.sh", bin)
	}
	port := 18000 + os.Getpid()%1000
	home := t.TempDir()
	cmd := exec.Command(bin, "spot", "-n", "127.0.0.1", "-p", fmt.Sprint(port), "-I")
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		req, _ := http.NewRequest(http.MethodPut, endpoint+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("ec2-metadata-mock did not answer on %s", endpoint)
	}
	return endpoint, stop
}

// sparkPod is a Spark-like pod running the executor stand-in with Spark's
// labels and container names, a preStop hook like /opt/decom.sh, and its
// record in recDir/<name> on the host.
func sparkPod(name, role, ref, recDir string, guardable bool) *corev1.Pod {
	labels := map[string]string{"spark-role": role, "spark-app-selector": "spark-app-e2e"}
	if guardable {
		labels["spark-exec-id"] = name
	}
	container := "spark-kubernetes-executor"
	if role == "driver" {
		container = "spark-kubernetes-driver"
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: sparkNS, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr(int64(30)),
			// The node is tainted during the test; these pods were there first.
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: container, Image: ref,
				Args: []string{"8s", "/rec/" + name},
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
					Exec: &corev1.ExecAction{Command: []string{"/standin", "prestop"}},
				}},
				VolumeMounts: []corev1.VolumeMount{{Name: "rec", MountPath: "/rec"}},
			}},
			Volumes: []corev1.Volume{{Name: "rec", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: recDir},
			}}},
		},
	}
}

func interruptConfig(endpoint, socket string) string {
	return `interrupt:
  enabled: true
  imds:
    endpoint: "` + endpoint + `"
  containerd:
    socket: "` + socket + `"
`
}

// testInterrupt: Spark executor and driver pods on the node; a spot notice
// from the real metadata mock; the executors get SIGPWR once, decommission
// and exit 0, the driver is untouched, the Node is tainted, Events say so.
// Meanwhile a drain evicts the pods as Karpenter or NTH would: the guard
// refuses until each executor exited, so no preStop SIGPWR reaches one
// mid-migration, while an executor the agent cannot guard (no spark-exec-id
// label) shows what the guard prevents: evicted at once, its preStop signal
// kills it. Then the same for karpenter.sh/disrupted set through the API.
func testInterrupt(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	// The executor stand-in of interrupt's own tests (root module).
	bin := filepath.Join(t.TempDir(), "standin")
	if err := image.GoBuild(ctx, repoDir(), "./interrupt/testdata/standin", bin); err != nil {
		t.Fatal(err)
	}
	img, err := image.StaticBinary(bin, "standin")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := image.Push(ctx, img, c.Registry+"/e2e/spark-standin:1")
	if err != nil {
		t.Fatal(err)
	}
	recDir := t.TempDir()
	if err := os.Chmod(recDir, 0o777); err != nil {
		t.Fatal(err)
	}
	record := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(recDir, name))
		return string(b)
	}

	old := currentConfig(ctx, t, c)
	stopMock := func() {}
	restore := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(restore, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		applyChart(context.Background(), t, c, "--set-file", "config="+restore)
		// The restore rolls the DaemonSet; leave the agent as it was found,
		// rolled out and Ready. Without the wait the next subtest,
		// NoForbiddenInAgentLog, listed the new pod before its container had
		// a log ("no log for kube-system/nodeagent-...").
		waitRollout(context.Background(), t, c)
		n, err := c.Client.CoreV1().Nodes().Get(context.Background(), c.NodeName, metav1.GetOptions{})
		if err == nil {
			var kept []corev1.Taint
			for _, tt := range n.Spec.Taints {
				if tt.Key != "nodeagent.io/interruption" && tt.Key != "karpenter.sh/disrupted" {
					kept = append(kept, tt)
				}
			}
			n.Spec.Taints = kept
			_, _ = c.Client.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		}
		_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), sparkNS, metav1.DeleteOptions{})
	})

	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sparkNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createRunning := func(pods ...*corev1.Pod) {
		t.Helper()
		for _, p := range pods {
			if _, err := c.Client.CoreV1().Pods(sparkNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range pods {
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
				return strings.Contains(record(p.Name), "running"), nil
			})
			if err != nil {
				got, _ := c.Client.CoreV1().Pods(sparkNS).Get(ctx, p.Name, metav1.GetOptions{})
				t.Fatalf("pod %s not running: %v", p.Name, statusOf(got))
			}
		}
	}

	t.Run("SpotNoticeDecommissionsExecutorsOnce", func(t *testing.T) {
		createRunning(sparkPod("exec-1", "executor", ref, recDir, true), sparkPod("exec-2", "executor", ref, recDir, true),
			sparkPod("exec-unguarded", "executor", ref, recDir, false), sparkPod("driver", "driver", ref, recDir, true))
		// The mock answers the spot notice from its start; the agent sees it
		// as soon as it runs with the feature enabled.
		var endpoint string
		endpoint, stopMock = startMetadataMock(t)
		applyConfig(ctx, t, c, replaceSection(old, "interrupt", interruptConfig(endpoint, c.ContainerdSocket)))
		start := time.Now()
		waitRollout(ctx, t, c)

		// The drain that follows a notice: evict every executor, over and
		// over, as kubectl drain / Karpenter / NTH do, until it is gone.
		type drained struct {
			refused  int
			accepted time.Time
		}
		drains := map[string]*drained{}
		for _, name := range []string{"exec-1", "exec-2", "exec-unguarded"} {
			drains[name] = &drained{}
		}
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			for _, name := range []string{"exec-1", "exec-2", "exec-unguarded"} {
				if !strings.Contains(record(name), "decommissioning") && !strings.Contains(record(name), "received") {
					return false, nil // the agent has not told them yet
				}
			}
			done := true
			for name, d := range drains {
				if !d.accepted.IsZero() {
					continue
				}
				done = false
				err := c.Client.CoreV1().Pods(sparkNS).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: sparkNS}})
				switch {
				case err == nil || apierrors.IsNotFound(err):
					d.accepted = time.Now()
				case apierrors.IsTooManyRequests(err):
					d.refused++
				default:
					t.Logf("evict %s: %v", name, err)
				}
			}
			return done, nil
		})
		if err != nil {
			t.Fatalf("drain did not finish: %v", err)
		}
		for name, d := range drains {
			t.Logf("drain of %s: refused %d times, accepted %s after the notice", name, d.refused, d.accepted.Sub(start).Round(time.Millisecond))
		}
		// Wait for every executor's record to end.
		err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			for _, name := range []string{"exec-1", "exec-2", "exec-unguarded"} {
				r := record(name)
				if !strings.Contains(r, "exit 0") && !strings.Contains(r, "killed") && !strings.Contains(r, "exit 143") {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("executors did not finish: exec-1 %q exec-2 %q", record("exec-1"), record("exec-2"))
		}
		for _, name := range []string{"exec-1", "exec-2"} {
			r := record(name)
			t.Logf("%s recorded:\n%s", name, r)
			if n := strings.Count(r, "received SIGPWR"); n != 1 || !strings.Contains(r, "decommissioned, exit 0") {
				t.Errorf("%s: %d SIGPWR, record %q: want one, then a clean exit (no kill mid-migration)", name, n, r)
			}
			if drains[name].refused == 0 {
				t.Errorf("%s: the drain was never refused while it decommissioned", name)
			}
		}
		// The control: without the guard the drain's preStop signal kills it.
		r := record("exec-unguarded")
		t.Logf("exec-unguarded (no spark-exec-id, so no guard) recorded:\n%s", r)
		if !strings.Contains(r, "killed: second SIGPWR") {
			t.Errorf("exec-unguarded: record %q: want the drain's preStop SIGPWR to kill it (what the guard prevents)", r)
		}
		if r := record("driver"); strings.Contains(r, "received") {
			t.Errorf("the driver was signalled: %q", r)
		}
		drv, err := c.Client.CoreV1().Pods(sparkNS).Get(ctx, "driver", metav1.GetOptions{})
		if err != nil || drv.Status.Phase != corev1.PodRunning {
			t.Errorf("driver: %v %v, want Running", err, statusOf(drv))
		}
		n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !hasTaintValue(n, "nodeagent.io/interruption", "spot-interruption") {
			t.Errorf("node taints %v, want nodeagent.io/interruption=spot-interruption:NoSchedule", n.Spec.Taints)
		}
		waitEvent(ctx, t, c, "InterruptionNotice", corev1.EventTypeWarning, time.Minute)
		for _, name := range []string{"exec-1", "exec-2"} {
			waitPodEvent(ctx, t, c, name, "DecommissionSignalled")
			waitPodEvent(ctx, t, c, name, "ExecutorDecommissioned")
		}
		body := scrape(ctx, t)
		for _, want := range []string{
			`nodeagent_interrupt_notices_total{kind="spot-interruption",source="imds"} 1`,
			`nodeagent_interrupt_executors_total{result="exited",strategy="signal"} 2`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "nodeagent_interrupt_executors_total") || strings.HasPrefix(l, "nodeagent_interrupt_reaction_seconds_sum") {
				t.Logf("%s", l)
			}
		}
	})

	t.Run("KarpenterDisruptedTaint", func(t *testing.T) {
		stopMock()
		createRunning(sparkPod("exec-3", "executor", ref, recDir, true), sparkPod("exec-4", "executor", ref, recDir, true))
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/taints/-",
			"value": corev1.Taint{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule}}})
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, c.NodeName, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			return strings.Contains(record("exec-3"), "exit 0") && strings.Contains(record("exec-4"), "exit 0"), nil
		})
		if err != nil {
			t.Fatalf("executors did not decommission: exec-3 %q exec-4 %q", record("exec-3"), record("exec-4"))
		}
		for _, name := range []string{"exec-3", "exec-4"} {
			if n := strings.Count(record(name), "received SIGPWR"); n != 1 {
				t.Errorf("%s got %d SIGPWR, want 1", name, n)
			}
			// kubelet reports the phase a moment after the process exited.
			var p *corev1.Pod
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				var err error
				p, err = c.Client.CoreV1().Pods(sparkNS).Get(ctx, name, metav1.GetOptions{})
				return err == nil && p.Status.Phase == corev1.PodSucceeded, nil
			})
			if err != nil {
				t.Errorf("%s: %v, want Succeeded (exit 0)", name, statusOf(p))
			}
		}
		if r := record("driver"); strings.Contains(r, "received") {
			t.Errorf("the driver was signalled: %q", r)
		}
		if body := scrape(ctx, t); !strings.Contains(body, `nodeagent_interrupt_notices_total{kind="disruption",source="taint"} 1`) {
			t.Errorf("/metrics has no disruption notice from the taint")
		}
	})
}

func hasTaintValue(n *corev1.Node, key, value string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key && t.Value == value && t.Effect == corev1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}

// waitPodEvent waits for an events.k8s.io Event of the agent about a pod.
func waitPodEvent(ctx context.Context, t *testing.T, c *cluster.Cluster, pod, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		evs, err := c.Client.EventsV1().Events(sparkNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.Regarding.Kind == "Pod" && e.Regarding.Name == pod && e.ReportingController == agentController {
				t.Logf("event on pod %s: %s %s: %s", pod, e.Type, e.Reason, e.Note)
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("no %s Event on pod %s", reason, pod)
	}
}
