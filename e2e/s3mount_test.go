//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
)

const (
	s3Root      = "/mnt/s3"                 // the chart's default s3.allowedRoots
	s3MountPath = s3Root + "/libs"          // the mount
	s3StateDir  = "/run/nodeagent/s3mounts" // the default s3.stateDir
)

// startVersitygw serves dir (a subdirectory per bucket) on the host's
// loopback, where the agent (host network) and its FUSE daemons reach it.
func startVersitygw(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(cluster.CacheDir(), "bin", "versitygw")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("versitygw not at %s: run imagewarm/hack/prereqs.sh", bin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--port", addr, "posix", dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY=e2ekey", "ROOT_SECRET_KEY=e2esecret")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("versitygw did not listen on %s", addr)
	}
	return "http://" + addr
}

// s3Record is the agent's record of the mount (imagewarm's mountRecord).
func s3Record() (pid int, err error) {
	b, err := os.ReadFile(filepath.Join(s3StateDir, "libs.json"))
	if err != nil {
		return 0, err
	}
	var r struct {
		PID int `json:"pid"`
	}
	return r.PID, json.Unmarshal(b, &r)
}

// readerLog is the reader pod's log parsed: each line "OK <unix time>" or
// "FAIL <unix time> <what>".
type readResult struct {
	ok   bool
	at   time.Time
	what string
}

func readerLog(t *testing.T, c *cluster.Cluster) []readResult {
	t.Helper()
	l, err := c.PodLog("default", "s3-reader", "reader")
	if err != nil {
		return nil
	}
	var out []readResult
	for _, line := range strings.Split(l, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && (f[1] == "stdout" || f[1] == "stderr") {
			f = f[3:] // the CRI log prefix: time, stream, tag
		}
		if len(f) < 2 || (f[0] != "OK" && f[0] != "FAIL") {
			continue
		}
		sec, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		out = append(out, readResult{ok: f[0] == "OK", at: time.Unix(0, int64(sec*1e9)), what: strings.Join(f[2:], " ")})
	}
	return out
}

// firstOKAfter is the first successful read after t0 (zero if none).
func firstOKAfter(rs []readResult, t0 time.Time) time.Time {
	for _, r := range rs {
		if r.ok && r.at.After(t0) {
			return r.at
		}
	}
	return time.Time{}
}

// longestFailure is the longest stretch of failed reads after t0: from the
// last good read before it to the first good read after it.
func longestFailure(rs []readResult, t0 time.Time) (time.Duration, string) {
	var worst time.Duration
	var what string
	var lastOK time.Time
	failing := false
	for _, r := range rs {
		if r.at.Before(t0) {
			if r.ok {
				lastOK = r.at
			}
			continue
		}
		switch {
		case !r.ok:
			if !failing {
				what = r.what
			}
			failing = true
		case failing:
			if d := r.at.Sub(lastOK); d > worst {
				worst = d
			}
			failing = false
			lastOK = r.at
		default:
			lastOK = r.at
		}
	}
	return worst, what
}

// testS3Mounts: imagewarm mounts a bucket of a real S3 server (versitygw on
// the host's loopback) with the s3fs driver through the chart (the pod gets
// the S3 privileges); a pod reads a file from it in a loop through a hostPath
// HostToContainer volume of the allowed root; the FUSE daemon is killed -9
// and the agent heals it: the pod, without restarting, reads the file again
// within 10 s. Then the agent pod is deleted and recreated: the new agent
// adopts the same daemon and the pod's reads never fail. The daemons run in
// the agent's mount namespace below the Bidirectional /host/mnt/s3
// (s3.namespace agent: PID 1's mount namespace is out of reach on these
// machines, as for raid's e2e).
func testS3Mounts(ctx context.Context, t *testing.T, c *cluster.Cluster, image string) {
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "libs", "jars"), 0o755); err != nil {
		t.Fatal(err)
	}
	jar := make([]byte, 4<<20)
	if _, err := rand.Read(jar); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "libs", "jars", "spark-libs.jar"), jar, 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", sha256.Sum256(jar))
	endpoint := startVersitygw(t, data)
	t.Cleanup(func() {
		// The test's own leftovers, whatever the agent did: the daemon,
		// its mount, the records, the daemons' cgroups.
		if pid, err := s3Record(); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			// Until it has exited: its cgroup can go only then.
			_ = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				_, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", pid))
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				return err != nil || len(b) == 0, nil // gone, or a zombie
			})
		}
		_ = exec.Command("umount", "-l", s3MountPath).Run()
		// rmdir (only when empty), retried: a multi-threaded daemon's
		// leader turns zombie before its last thread leaves the cgroup, so
		// the first rmdir right after the wait above can get EBUSY (an
		// empty nodeagent-s3mounts was left in every v1 hierarchy).
		cgs, _ := filepath.Glob("/sys/fs/cgroup/*/nodeagent-s3mounts")
		cgs = append(cgs, "/sys/fs/cgroup/nodeagent-s3mounts")
		_ = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			left := false
			for _, cg := range cgs {
				if err := os.Remove(cg); err != nil && !os.IsNotExist(err) {
					left = true
				}
			}
			return !left, nil
		})
	})

	good := currentConfig(ctx, t, c)
	before := agentPod(ctx, t, c)
	applyConfig(ctx, t, c, replaceSection(good, "imagewarm", fmt.Sprintf(`imagewarm:
  enabled: true
  containerdSocket: %s
  s3Mounts:
    - name: libs
      bucket: libs
      prefix: jars/
      mountPath: %s
      endpointURL: %s
      region: us-east-1
      readOnly: true
      driver: s3fs
      required: true
  s3:
    namespace: agent
    checkInterval: 500ms
`, c.ContainerdSocket, s3MountPath, endpoint)),
		"--set", "extraEnv[0].name=AWS_ACCESS_KEY_ID", "--set", "extraEnv[0].value=e2ekey",
		"--set", "extraEnv[1].name=AWS_SECRET_ACCESS_KEY", "--set", "extraEnv[1].value=e2esecret")
	t.Cleanup(func() {
		ctx := context.Background()
		_ = c.Client.CoreV1().Pods("default").Delete(ctx, "s3-reader", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
		applyConfig(ctx, t, c, good)
		waitRollout(ctx, t, c)
	})
	if p := waitRollout(ctx, t, c); p.UID == before.UID {
		t.Fatal("adding an S3 mount did not roll the agent pod (its privileges did not change?)")
	} else {
		logPrivileges(t, p)
	}

	up := func(what string) {
		t.Helper()
		var body string
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			body = scrape(ctx, t)
			return metricValue(body, `nodeagent_imagewarm_s3_mount_up{mount="libs"}`) == 1 && hostMounted(s3MountPath) != "", nil
		})
		if err != nil {
			log, _ := agentLog(c)
			state, _ := os.ReadFile(filepath.Join(s3StateDir, "libs.log"))
			t.Fatalf("%s: S3 mount not up: %v\nhost mount: %q\n%s\n---- daemon log ----\n%s\n---- agent log ----\n%s",
				what, err, hostMounted(s3MountPath), grepLines(body, "nodeagent_imagewarm_s3_"), lastBytes(string(state), 2000), lastBytes(log, 6000))
		}
	}
	up("first agent")
	if m := hostMounted(s3MountPath); !strings.Contains(m, "fuse") {
		t.Errorf("host mount at %s: %q, want a FUSE mount", s3MountPath, m)
	}
	pid, err := s3Record()
	if err != nil {
		t.Fatal(err)
	}
	if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); !strings.Contains(string(cg), "nodeagent-s3mounts") || strings.Contains(string(cg), "kubepods") {
		t.Errorf("daemon %d is not in the agent's own cgroup outside the pod's:\n%s", pid, cg)
	}

	// A pod reads the jar every 100 ms through the allowed root, mounted
	// HostToContainer (a volume of the mount point itself would keep the
	// dead mount: only mounts below a volume propagate into it).
	script := `while :; do s=$(sha256sum /s3/libs/spark-libs.jar 2>&1); t=$(date +%s.%N)
if [ "${s%% *}" = "$1" ]; then echo "OK $t"; else echo "FAIL $t $s"; fi; sleep 0.1; done`
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "s3-reader", Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr(int64(0)),
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: "reader", Image: image,
				Command: []string{"/bin/sh", "-c", script, "sh", want},
				VolumeMounts: []corev1.VolumeMount{{Name: "s3", MountPath: "/s3", ReadOnly: true,
					MountPropagation: ptr(corev1.MountPropagationHostToContainer)}},
			}},
			Volumes: []corev1.Volume{{Name: "s3", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: s3Root, Type: ptr(corev1.HostPathDirectory)}}}},
		},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		return !firstOKAfter(readerLog(t, c), start.Add(-time.Minute)).IsZero(), nil
	})
	if err != nil {
		l, _ := c.PodLog("default", "s3-reader", "reader")
		got, _ := c.Client.CoreV1().Pods("default").Get(ctx, "s3-reader", metav1.GetOptions{})
		t.Fatalf("the pod never read the jar through the mount: %v %v\n%s", err, statusOf(got), lastBytes(l, 2000))
	}
	reader, err := c.Client.CoreV1().Pods("default").Get(ctx, "s3-reader", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// kill -9 of the FUSE daemon: the pod reads again within 10 s.
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var again time.Time
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		again = firstOKAfter(readerLog(t, c), killed)
		np, _ := s3Record()
		return !again.IsZero() && np != pid && np > 0, nil
	})
	if err != nil {
		log, _ := agentLog(c)
		t.Fatalf("no good read after kill -9 of the daemon: %v\n---- agent log ----\n%s", err, lastBytes(log, 6000))
	}
	worst, what := longestFailure(readerLog(t, c), killed)
	t.Logf("PHASE s3-heal: daemon killed -> pod reads again %s (longest failed stretch %s: %s)",
		again.Sub(killed).Round(time.Millisecond), worst.Round(time.Millisecond), what)
	if d := again.Sub(killed); d > 10*time.Second {
		t.Errorf("the pod read again %s after the kill, want within 10 s", d)
	}
	// Counted once the remount returns, a moment after the record the poll
	// above saw is written: waited for, not read at once.
	var body string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		body = scrape(ctx, t)
		return heals(body) >= 1, nil
	})
	if n := heals(body); err != nil || n != 1 {
		t.Errorf("heals counted %v, want 1:\n%s", n, grepLines(body, "s3_heals_total"))
	}
	pid, err = s3Record()
	if err != nil {
		t.Fatal(err)
	}

	// The agent pod is deleted and recreated: the new agent adopts the
	// same daemon; the pod's reads never fail.
	old := agentPod(ctx, t, c)
	deleted := time.Now()
	if err := c.Client.CoreV1().Pods(agentNamespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=nodeagent"})
		return err == nil && len(pods.Items) == 1 && pods.Items[0].UID != old.UID && podReady(&pods.Items[0]), nil
	})
	if err != nil {
		t.Fatalf("agent pod not back: %v", err)
	}
	up("second agent")
	// A few more reads once the new agent checks the mount.
	back := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return !firstOKAfter(readerLog(t, c), back.Add(time.Second)).IsZero(), nil
	})
	if err != nil {
		l, _ := c.PodLog("default", "s3-reader", "reader")
		dlog, _ := os.ReadFile(filepath.Join(s3StateDir, "libs.log"))
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		t.Errorf("no read after the agent came back: %v\n---- reader ----\n%s\n---- daemon %d ----\n%s\n%s\n---- daemon log ----\n%s",
			err, lastBytes(l, 1500), pid, grepLines(string(st), "State"), taskWchans(pid), lastBytes(string(dlog), 2000))
	}
	if np, err := s3Record(); err != nil || np != pid {
		t.Errorf("after the agent restart the record names daemon %d (%v), want the adopted %d", np, err, pid)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Errorf("daemon %d died with the agent pod: %v", pid, err)
	}
	if worst, what := longestFailure(readerLog(t, c), deleted); worst > 0 {
		t.Errorf("the pod's reads failed for %s across the agent restart: %s", worst.Round(time.Millisecond), what)
	}
	body = scrape(ctx, t)
	if n := heals(body); n != 0 {
		t.Errorf("the new agent healed %v times, want 0 (adopted):\n%s", n, grepLines(body, "s3_heals_total"))
	}
	t.Logf("PHASE s3-agent-restart: agent pod deleted -> new agent adopted daemon %d in %s, no failed read",
		pid, time.Since(deleted).Round(time.Millisecond))

	// The reader never restarted.
	got, err := c.Client.CoreV1().Pods("default").Get(ctx, "s3-reader", metav1.GetOptions{})
	if err != nil || got.UID != reader.UID || got.Status.Phase != corev1.PodRunning {
		t.Fatalf("reader pod: %v %v", err, statusOf(got))
	}
	for _, cs := range got.Status.ContainerStatuses {
		if cs.RestartCount != 0 {
			t.Errorf("reader container restarted %d times", cs.RestartCount)
		}
	}
}

// heals is the heal count of mount libs for a dead daemon (a missing
// series counts 0).
func heals(body string) float64 {
	n := 0.0
	for _, r := range []string{"enotconn", "process_gone"} {
		n += max(0, metricValue(body, `nodeagent_imagewarm_s3_heals_total{mount="libs",reason="`+r+`"}`))
	}
	return n
}

// taskWchans is where each thread of pid waits in the kernel.
func taskWchans(pid int) string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
	var out []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		out = append(out, string(b))
	}
	return strings.Join(out, " ")
}
