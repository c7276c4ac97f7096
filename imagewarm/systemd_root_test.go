package imagewarm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodeagent/nodeagent/agent/hostpath"
)

// systemdInit runs as PID 1 of the new PID and mount namespaces (private
// mounts): its own /proc and /run, and only stub units, so that systemd
// starts nothing of the machine's; then systemd itself.
const systemdInit = `set -e
mount -t proc proc /proc
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /etc/systemd/system
mount -t tmpfs tmpfs /lib/systemd/system
for u in nodeagent-test.target sysinit.target basic.target shutdown.target sockets.target system.slice; do
	printf '[Unit]\nDescription=%s\n' "$u" >/lib/systemd/system/$u
done
exec env container=nodeagent-test /lib/systemd/systemd --system --unit=nodeagent-test.target
`

// bootSystemd starts a real systemd (252 on Debian 12) as PID 1 of new PID
// and mount namespaces, in a cgroup of its own in every hierarchy: the
// machine's PID 1 is not systemd. The host the agent sees is then
// /proc/PID/root: systemd's mounts, its /proc (PIDs as systemd numbers
// them) and its private socket. It returns systemd's PID in this test's
// namespace. Killing it at the end ends every process it started, and its
// mounts with its mount namespace.
func bootSystemd(t *testing.T) int {
	t.Helper()
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Skip("needs systemd installed (imagewarm/hack/prereqs.sh)")
	}
	dirs, err := cgroupHierarchies("/sys/fs/cgroup")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("cgroup hierarchies: %v %v", dirs, err)
	}
	name := fmt.Sprintf("nodeagent-test-systemd-%d", os.Getpid())
	var procs []string
	for _, d := range dirs {
		cg := filepath.Join(d, name)
		if err := os.Mkdir(cg, 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if err := inheritCpuset(d, cg); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, filepath.Join(cg, "cgroup.procs"))
	}
	script := filepath.Join(t.TempDir(), "init.sh")
	if err := os.WriteFile(script, []byte(systemdInit), 0o755); err != nil {
		t.Fatal(err)
	}
	// Into the cgroups first (systemd takes the one it starts in as its
	// root), then the namespaces.
	cmd := exec.Command("sh", append([]string{"-c",
		`s=$1; shift; for f; do echo $$ >"$f"; done; exec unshare --pid --mount --fork --propagation private sh "$s"`,
		"sh", script}, procs...)...)
	startLogged(t, cmd, "systemd.log")
	pid := 0
	t.Cleanup(func() {
		if pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL) // the namespace's init: all of it ends
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		removeCgroupTrees(t, dirs, name)
	})
	eventually(t, 30*time.Second, "systemd answering on its private socket", func() error {
		if pid == 0 {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
			f := strings.Fields(string(b))
			if len(f) == 0 {
				return fmt.Errorf("unshare has no child yet")
			}
			pid, _ = strconv.Atoi(f[0])
		}
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "systemd" {
			return fmt.Errorf("PID %d is %q, not systemd yet", pid, comm)
		}
		out, err := exec.Command("nsenter", "--target", strconv.Itoa(pid), "--mount", "--pid",
			"systemctl", "show", "--property=Version").CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemctl show: %v: %s", err, out)
		}
		return nil
	})
	return pid
}

// removeCgroupTrees removes name and what systemd made below it, deepest
// first, once the processes in it have exited.
func removeCgroupTrees(t *testing.T, dirs []string, name string) {
	for _, d := range dirs {
		root := filepath.Join(d, name)
		var all []string
		_ = filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			for try := 0; ; try++ {
				err := os.Remove(all[i])
				if err == nil || os.IsNotExist(err) {
					break
				}
				if try == 100 {
					t.Errorf("cgroup %s left behind: %v", all[i], err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// envSystemdPID tells a test run by inSystemdPIDNamespace the PID of its
// systemd.
const envSystemdPID = "NODEAGENT_TEST_SYSTEMD_PID"

// inSystemdPIDNamespace runs the tests matching run again, in systemd's PID
// namespace (in this mount namespace): as an agent with hostPID in a pod.
// systemd refuses a D-Bus client whose PID it cannot see (its credentials
// come as PID 0 from outside the namespace).
func inSystemdPIDNamespace(t *testing.T, systemd int, run string) {
	t.Helper()
	cmd := exec.Command("nsenter", "--target", strconv.Itoa(systemd), "--pid", "--",
		os.Args[0], "-test.run", run, "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), envSystemdPID+"="+strconv.Itoa(systemd))
	out, err := cmd.CombinedOutput()
	t.Logf("in systemd's PID namespace:\n%s", out)
	if err != nil {
		t.Fatalf("the tests in systemd's PID namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS") {
		t.Fatal("no test passed in systemd's PID namespace")
	}
}

// s3Host is where a lifecycle test's daemons run: this machine, each in the
// agent's cgroup, or the host of a systemd booted for the test (systemd >
// 0, its PID in the namespace it was started from), kept there by
// supervisor.
type s3Host struct {
	systemd    int
	supervisor string
}

func (h s3Host) paths() hostpath.Paths {
	if h.systemd == 0 {
		return hostpath.New("/")
	}
	return hostpath.New(fmt.Sprintf("/proc/%d/root", h.systemd))
}

// checkOutside asserts the daemon runs outside the agent's cgroup: in the
// agent's daemon cgroup in every hierarchy under cgroupRoot (v1 cpuset
// too), or in its unit's. Not every line of /proc/PID/cgroup: a v1
// hierarchy mounted only in another mount namespace (the booted systemd
// mounts hugetlb, perf_event, net_cls in its own) is not the agent's to see.
func (h s3Host) checkOutside(t *testing.T, rec *mountRecord, cgroupRoot string) {
	t.Helper()
	if h.supervisor != SupervisorSystemd {
		dirs, err := cgroupHierarchies(cgroupRoot)
		if err != nil || len(dirs) == 0 {
			t.Fatalf("cgroup hierarchies under %s: %v %v", cgroupRoot, dirs, err)
		}
		for _, d := range dirs {
			procs, _ := os.ReadFile(filepath.Join(d, cgroupDir, "cgroup.procs"))
			if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(rec.PID)) {
				t.Errorf("daemon %d not in the agent's cgroup %s", rec.PID, filepath.Join(d, cgroupDir))
			}
		}
		return
	}
	if rec.Unit != unitName(rec.Name) {
		t.Errorf("record unit %q, want %q", rec.Unit, unitName(rec.Name))
	}
	want := "/system.slice/" + unitName(rec.Name)
	cg, _ := os.ReadFile(h.paths().Proc(strconv.Itoa(rec.PID), "cgroup"))
	for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		if strings.Contains(l, ":name=systemd:") && !strings.HasSuffix(l, want) {
			t.Errorf("daemon %d not in its unit's cgroup %s: %s", rec.PID, want, l)
		}
	}
}

// unitState is systemctl is-active of unit.
func (h s3Host) unitState(unit string) string {
	out, _ := exec.Command("nsenter", "-t", strconv.Itoa(h.systemd), "--mount", "systemctl", "is-active", unit).Output()
	return strings.TrimSpace(string(out))
}

// systemctl runs systemctl args on the test's systemd.
func (h s3Host) systemctl(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(h.systemd), "--mount", "systemctl"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
