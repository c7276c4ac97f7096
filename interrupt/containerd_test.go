package interrupt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// privateContainerd is a containerd of the test's own (root, state and
// socket in a temp dir, CRI off), with runc, as Debian ships them.
type privateContainerd struct {
	dir, socket string
	standin     string // the executor stand-in's rootfs
}

func startContainerd(t *testing.T) *privateContainerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a private containerd with runc")
	}
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (interrupt/hack/prereqs.sh installs containerd and runc): %v", bin, err)
		}
	}
	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "na-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &privateContainerd{dir: dir, socket: filepath.Join(dir, "c.sock"), standin: filepath.Join(dir, "rootfs")}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.socket, c.socket+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	})
	eventually(t, 20*time.Second, "containerd to serve", func() bool {
		return exec.Command("ctr", "--address", c.socket, "version").Run() == nil
	})
	// The stand-in: a static binary alone in a root filesystem.
	if err := os.MkdirAll(c.standin, 0o755); err != nil {
		t.Fatal(err)
	}
	// The executor stand-in, also run in the e2e test's pods.
	build := exec.Command("go", "build", "-o", filepath.Join(c.standin, "standin"), "./testdata/standin")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in: %v\n%s", err, out)
	}
	return c
}

func (c *privateContainerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", c.socket, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// run starts a stand-in executor container that decommissions in d, and
// returns the file it records its signals in.
func (c *privateContainerd) run(t *testing.T, id string, d time.Duration) string {
	t.Helper()
	out := filepath.Join(c.dir, "out-"+id)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	c.ctr(t, "run", "-d", "--mount", "type=bind,src="+out+",dst=/out,options=rbind:rw",
		"--rootfs", c.standin, id, "/standin", d.String(), "/out/record")
	t.Cleanup(func() {
		_ = exec.Command("ctr", "--address", c.socket, "-n", "k8s.io", "task", "kill", "-s", "SIGKILL", id).Run()
		_ = exec.Command("ctr", "--address", c.socket, "-n", "k8s.io", "task", "delete", "-f", id).Run()
		_ = exec.Command("ctr", "--address", c.socket, "-n", "k8s.io", "container", "delete", id).Run()
	})
	rec := filepath.Join(out, "record")
	eventually(t, 10*time.Second, id+" running", func() bool { return strings.Contains(readFile(rec), "running") })
	return rec
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// TestRootStandInModelsTheTrap: two SIGPWR through the task API kill the
// stand-in mid-decommission, as they kill a Spark executor, so the tests
// below mean something.
func TestRootStandInModelsTheTrap(t *testing.T) {
	c := startContainerd(t)
	rec := c.run(t, "trap", 5*time.Second)
	tk, err := newContainerdTasks(c.socket, "k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	ctx := context.Background()
	if err := tk.Kill(ctx, "trap", unix.SIGPWR); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "decommissioning", func() bool { return strings.Contains(readFile(rec), "decommissioning") })
	if err := tk.Kill(ctx, "trap", unix.SIGPWR); err != nil {
		t.Fatal(err)
	}
	code, err := tk.Wait(ctx, "trap")
	if err != nil || code != 128+uint32(unix.SIGPWR) {
		t.Fatalf("Wait = %d, %v; want the stand-in killed by the second SIGPWR (%d)", code, err, 128+unix.SIGPWR)
	}
	if err := tk.Kill(ctx, "no-such-container", unix.SIGPWR); err == nil || !strings.Contains(err.Error(), errGone.Error()) {
		t.Errorf("Kill of an unknown container = %v, want %v", err, errGone)
	}
}

// TestRootSignalOnceAcrossRestart: a spot notice from the real metadata
// mock; the feature signals both stand-in executors through the real
// containerd, never the driver; the agent stops mid-decommission and a new
// process on the same Node sees the notice again but signals nobody; both
// executors exit 0 having received SIGPWR once.
func TestRootSignalOnceAcrossRestart(t *testing.T) {
	c := startContainerd(t)
	endpoint := startMock(t, "spot")
	recs := map[string]string{}
	for _, id := range []string{"exec-1", "exec-2", "driver"} {
		recs[id] = c.run(t, id, 4*time.Second)
	}
	cl := newFakeCluster(executorPod("exec-1", "exec-1"), executorPod("exec-2", "exec-2"), sparkPod("driver", "driver", "driver"))
	cfg := testConfig(endpoint)
	cfg.Containerd.Socket = c.socket

	tk1, err := newContainerdTasks(c.socket, "k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer tk1.Close()
	f1, _ := testFeature(t, cfg, cl, nil, tk1)
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- f1.Run(ctx1) }()
	eventually(t, 20*time.Second, "both executors decommissioning", func() bool {
		return strings.Contains(readFile(recs["exec-1"]), "decommissioning") && strings.Contains(readFile(recs["exec-2"]), "decommissioning")
	})
	stop1() // the agent restarts mid-way
	if err := <-done1; err != nil {
		t.Fatalf("Run: %v", err)
	}

	tk2, err := newContainerdTasks(c.socket, "k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer tk2.Close()
	f2, _ := testFeature(t, cfg, cl, nil, tk2)
	runFeature(t, f2)
	eventually(t, 20*time.Second, "both executors to exit 0, followed by the new process", func() bool {
		return counter(f2.m.executors.WithLabelValues(StrategySignal, resultExited)) == 2
	})
	if n := counter(f2.m.requests.WithLabelValues(pathSpot, "200")); n < 1 {
		t.Errorf("the new process never saw the notice (%v polls)", n)
	}
	for _, id := range []string{"exec-1", "exec-2"} {
		got := readFile(recs[id])
		if n := strings.Count(got, "received SIGPWR"); n != 1 || !strings.Contains(got, "decommissioned, exit 0") {
			t.Errorf("%s recorded %q: want one SIGPWR and a clean exit", id, got)
		}
	}
	if got := readFile(recs["driver"]); strings.Contains(got, "received") {
		t.Errorf("the driver was signalled: %q", got)
	}
}

// TestMissingSocket: no containerd is a failed executor result and a pod
// Event, not a crash.
func TestMissingSocket(t *testing.T) {
	t.Parallel()
	tk, err := newContainerdTasks(filepath.Join(t.TempDir(), "none.sock"), "k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	c := newFakeCluster(executorPod("exec-1", "c1"))
	nodes := &fakeNodes{}
	f, _ := testFeature(t, taintOnly(), c, nodes, tk)
	runFeature(t, f)
	nodes.setTaints(taintFor("karpenter.sh/disrupted"))
	eventually(t, 20*time.Second, "failed result", func() bool {
		return counter(f.m.executors.WithLabelValues(StrategySignal, resultFailed)) == 1
	})
	if ev := c.eventsWith("DecommissionFailed"); len(ev) != 1 {
		t.Errorf("events = %v", ev)
	}
}
