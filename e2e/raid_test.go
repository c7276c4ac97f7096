//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
)

// raidMount is below the chart's Bidirectional host path /mnt/nodeagent.
const raidMount = "/mnt/nodeagent/raid"

// testRaidSingleDisk: the host kernel has no md, so this is raid's
// single-disk path on a loop device, through the DaemonSet: the agent
// formats the disk and mounts it in its own mount namespace below the
// Bidirectional /host/mnt/nodeagent (mount.namespace: agent; PID 1's mount
// namespace is out of reach on these machines), so the host and pods see
// it. A pod writes a file through a hostPath volume; the agent pod is
// deleted and comes back; the mount and the file are still there, the new
// agent only finds them (no mkfs), and the node stays ready.
func testRaidSingleDisk(ctx context.Context, t *testing.T, c *cluster.Cluster, image string) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v %s", err, stderrOf(err))
	}
	loop := strings.TrimSpace(string(out))
	t.Logf("disk: %s", loop)
	t.Cleanup(func() {
		_ = exec.Command("umount", "-l", raidMount).Run()
		_ = exec.Command("losetup", "-d", loop).Run()
	})

	// Enabling raid is a chart change (helm upgrade with the new config):
	// its privileges (host /, /dev, the Bidirectional /mnt/nodeagent) render
	// only when it is enabled, so the agent pod rolls.
	good := currentConfig(ctx, t, c)
	before := agentPod(ctx, t, c)
	applyConfig(ctx, t, c, replaceSection(good, "raid", fmt.Sprintf(`raid:
  enabled: true
  disks: {models: [], devices: [%q]}
  mount: {path: %s, namespace: agent}
  directories: [{path: spark, uid: 185, gid: 185, mode: "0777"}]
  reconcileInterval: 5s
`, loop, raidMount)))
	t.Cleanup(func() {
		ctx := context.Background()
		applyConfig(ctx, t, c, good)
		waitRollout(ctx, t, c)
	})
	if p := waitRollout(ctx, t, c); p.UID == before.UID {
		t.Fatal("enabling raid did not roll the agent pod (its privileges did not change?)")
	} else {
		logPrivileges(t, p)
	}

	ready := func(what string, timeout time.Duration) string {
		t.Helper()
		var body string
		err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
			body = scrape(ctx, t)
			return strings.Contains(body, "nodeagent_node_ready 1") && hostMounted(raidMount) != "" &&
				(strings.Contains(body, `nodeagent_raid_decision{action="format"} 1`) || strings.Contains(body, `nodeagent_raid_decision{action="none"} 1`)), nil
		})
		if err != nil {
			log, _ := agentLog(c)
			t.Fatalf("%s: raid not ready: %v\nmount: %q\n%s\n---- agent log ----\n%s", what, err, hostMounted(raidMount), grepLines(body, "nodeagent_raid_"), lastBytes(log, 6000))
		}
		return body
	}
	body := ready("first agent", 3*time.Minute)
	if m := hostMounted(raidMount); !strings.Contains(m, loop) || !strings.Contains(m, "xfs") {
		t.Errorf("host mount at %s: %q, want %s xfs", raidMount, m, loop)
	}
	if metricValue(body, `nodeagent_raid_operations_total{op="mkfs",result="ok"}`) != 1 {
		t.Errorf("mkfs count:\n%s", grepLines(body, "operations_total"))
	}
	n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil || n.Labels["nodeagent.io/local-nvme"] != "disk" {
		t.Errorf("node label nodeagent.io/local-nvme = %q (%v), want disk", n.Labels["nodeagent.io/local-nvme"], err)
	}

	// A pod writes to the scratch through a hostPath volume.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "raid-writer", Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy:   corev1.RestartPolicyNever,
			Tolerations:     []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr(int64(185)), RunAsGroup: ptr(int64(185))},
			Containers: []corev1.Container{{
				Name: "writer", Image: image,
				Command:      []string{"/bin/sh", "-c", "echo shuffle-block > /data/spark-local-dir-1/block && sync && cat /data/spark-local-dir-1/block"},
				VolumeMounts: []corev1.VolumeMount{{Name: "spark-local-dir-1", MountPath: "/data/spark-local-dir-1"}},
			}},
			Volumes: []corev1.Volume{{Name: "spark-local-dir-1", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: raidMount + "/spark", Type: ptr(corev1.HostPathDirectory)}}}},
		},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().Pods("default").Delete(context.Background(), "raid-writer", metav1.DeleteOptions{})
	})
	var got *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err = c.Client.CoreV1().Pods("default").Get(ctx, "raid-writer", metav1.GetOptions{})
		return err == nil && (got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed), nil
	})
	log, _ := c.PodLog("default", "raid-writer", "writer")
	if err != nil || got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("writer pod: %v %v\n%s", err, statusOf(got), log)
	}
	hostFile := filepath.Join(raidMount, "spark", "block")
	if b, err := os.ReadFile(hostFile); err != nil || string(b) != "shuffle-block\n" {
		t.Fatalf("the pod's file on the host: %q %v", b, err)
	}

	// The agent pod is deleted and comes back.
	old := agentPod(ctx, t, c)
	if err := c.Client.CoreV1().Pods(agentNamespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Pods(agentNamespace).Get(ctx, old.Name, metav1.GetOptions{})
		return err != nil, nil
	})
	if err != nil {
		t.Fatalf("old agent pod not gone: %v", err)
	}
	if m := hostMounted(raidMount); m == "" {
		t.Fatalf("%s unmounted when the agent pod went away", raidMount)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=nodeagent"})
		return err == nil && len(pods.Items) == 1 && pods.Items[0].UID != old.UID && podReady(&pods.Items[0]), nil
	})
	if err != nil {
		t.Fatalf("agent pod not back: %v", err)
	}
	body = ready("second agent", 2*time.Minute)
	if !strings.Contains(body, `nodeagent_raid_decision{action="none"} 1`) || metricValue(body, `nodeagent_raid_operations_total{op="mkfs",result="ok"}`) != 0 {
		t.Errorf("the second agent did not just find the mount:\n%s", grepLines(body, "nodeagent_raid_"))
	}
	if b, err := os.ReadFile(hostFile); err != nil || string(b) != "shuffle-block\n" {
		t.Errorf("the file after the agent came back: %q %v", b, err)
	}
	// The gate writes NodeAgentReady a moment after nodeagent_node_ready.
	notReady := ""
	err = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err = c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		notReady = ""
		for _, cond := range n.Status.Conditions {
			if (cond.Type == corev1.NodeReady || cond.Type == "NodeAgentReady") && cond.Status != corev1.ConditionTrue {
				notReady += fmt.Sprintf("%s=%s (%s) ", cond.Type, cond.Status, cond.Message)
			}
		}
		return notReady == "", nil
	})
	if err != nil {
		t.Errorf("node not ready after the agent came back: %s", notReady)
	}
	if hasTaint(n, "nodeagent.io/not-ready", corev1.TaintEffectNoSchedule) {
		t.Error("the startup taint came back")
	}
}

// hostMounted is the host's mountinfo line for path ("" when not mounted).
func hostMounted(path string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return l
		}
	}
	return ""
}

func grepLines(body, sub string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
