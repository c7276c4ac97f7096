package imagewarm

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/imagewarm/internal/testbed"
)

// versitygwBin is versitygw on PATH or in $NODEAGENT_CACHE/bin, or "".
func versitygwBin() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	dir := os.Getenv("NODEAGENT_CACHE")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "nodeagent")
	}
	p := filepath.Join(dir, "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// mustRecord is the agent's record of mount name: the test fails without.
func mustRecord(t *testing.T, s3 *s3Mounts, name string) *mountRecord {
	t.Helper()
	rec, err := s3.readRecord(name)
	if err != nil || rec == nil {
		t.Fatalf("record of %s: %v %v", name, rec, err)
	}
	return rec
}

// startLogged starts cmd, its output in file name of a temp dir.
func startLogged(t *testing.T, cmd *exec.Cmd, name string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// startVersitygw serves dir (one subdirectory per bucket) on a free
// loopback port and returns its URL once it accepts connections.
func startVersitygw(t *testing.T, bin, dir string) string {
	t.Helper()
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", addr, "posix", dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY=testkey", "ROOT_SECRET_KEY=testsecret")
	startLogged(t, cmd, "versitygw.log")
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// eventually polls cond (an observable event: a stat, a record) until it
// holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type runningWarmer struct {
	w    *Warmer
	reg  *prometheus.Registry
	stop func()
}

// runWarmerOn runs a warmer that sees the host at host.
func runWarmerOn(t *testing.T, cfg *Config, k *kube.Client, host hostpath.Paths) *runningWarmer {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(tlogWriter{t}, nil)) // why a mount was made shows in a failure
	w, err := New(cfg, agent.Deps{Metrics: reg, Host: host, Exec: hostexec.Exec{}, Kube: k, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	rw := &runningWarmer{w: w, reg: reg}
	var once sync.Once
	rw.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(rw.stop) // before the test's end, also when it fails (the log goes to t)
	return rw
}

// s3Bucket serves bucket libs with jars/big.bin (size random bytes) from a
// real versitygw, sets the test credentials in the environment, and
// returns the endpoint and big.bin's sha256. It skips without root,
// /dev/fuse or versitygw.
func s3Bucket(t *testing.T, size int) (endpoint, sum string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE mounts, nsenter); run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("needs /dev/fuse: %v", err)
	}
	vgw := versitygwBin()
	if vgw == "" {
		t.Skip("needs versitygw (imagewarm/hack/prereqs.sh installs it into $NODEAGENT_CACHE/bin)")
	}
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "libs", "jars"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, size)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "libs", "jars", "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	sum = fmt.Sprintf("%x", sha256.Sum256(big))
	endpoint = startVersitygw(t, vgw, data)
	t.Setenv("AWS_ACCESS_KEY_ID", "testkey")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testsecret")
	t.Setenv("AWSACCESSKEYID", "testkey")
	t.Setenv("AWSSECRETACCESSKEY", "testsecret")
	return endpoint, sum
}

// TestS3MountsRoot runs the whole lifecycle for real with the s3fs and
// rclone drivers against versitygw: read and checksum, kill -9 healed,
// agent restart adopting the daemon, removal from config unmounting. Then
// the same with the daemon a transient unit of a real systemd.
func TestS3MountsRoot(t *testing.T) {
	endpoint, want := s3Bucket(t, 50<<20)

	for _, driver := range []string{DriverS3fs, DriverRclone} {
		t.Run(driver, func(t *testing.T) {
			if _, err := exec.LookPath(driver); err != nil {
				t.Skipf("needs %s (imagewarm/hack/prereqs.sh installs it)", driver)
			}
			testS3Lifecycle(t, driver, endpoint, want, s3Host{})
		})
	}
	// The host a systemd booted for the test makes: the daemons in its mount
	// namespace (namespace host, the chart's), as its transient units or
	// each in a cgroup of the agent's.
	t.Run("host", func(t *testing.T) {
		if _, err := exec.LookPath(DriverS3fs); err != nil {
			t.Skip("needs s3fs (imagewarm/hack/prereqs.sh installs it)")
		}
		pid, ok := os.LookupEnv(envSystemdPID)
		if !ok {
			inSystemdPIDNamespace(t, bootSystemd(t), "^TestS3MountsRoot$/^host$")
			return
		}
		sd, _ := strconv.Atoi(pid)
		for _, sup := range []string{SupervisorSystemd, SupervisorCgroup} {
			t.Run(sup, func(t *testing.T) {
				testS3Lifecycle(t, DriverS3fs, endpoint, want, s3Host{systemd: sd, supervisor: sup})
			})
		}
		t.Run("systemd-binary-missing", func(t *testing.T) {
			testS3MissingBinary(t, endpoint, s3Host{systemd: sd, supervisor: SupervisorSystemd})
		})
	})
}

func testS3Lifecycle(t *testing.T, driver, endpoint, want string, h s3Host) {
	root := t.TempDir()
	host := h.paths()
	mountPath := filepath.Join(root, "mnt", "libs")
	cfg := DefaultConfig()
	cfg.S3.AllowedRoots = []string{filepath.Join(root, "mnt")}
	cfg.S3.StateDir = filepath.Join(root, "state")
	cfg.S3.CheckInterval = 200 * time.Millisecond
	cfg.S3.Supervisor = SupervisorCgroup
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if pid1, _ := os.Readlink("/proc/1/ns/mnt"); h.systemd != 0 {
		cfg.S3.Supervisor = h.supervisor
	} else if pid1 != self {
		cfg.S3.Namespace = MountNamespaceAgent // the test is not in the host's mount namespace
	}
	cfg.S3Mounts = []S3MountConfig{{Name: "libs", Bucket: "libs", Prefix: "jars/", MountPath: mountPath,
		EndpointURL: endpoint, Region: "us-east-1", ReadOnly: true, Driver: driver, Required: true}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s3 := &s3Mounts{o: &cfg.S3, host: host}
	t.Cleanup(func() {
		if h.systemd != 0 {
			return // ending systemd ends its units and their mounts
		}
		// Every daemon of this mount path, recorded or not (one a stopped
		// warmer started and did not record; one a failed heal left): none
		// outlives the test, holding fds it inherited (a flock'ed lock).
		if rec, _ := s3.readRecord("libs"); rec != nil && s3.daemonAlive(rec) {
			_ = syscall.Kill(rec.PID, syscall.SIGKILL)
		}
		killDaemonsOf(t, driver, s3.nsPath(mountPath))
		_ = exec.Command("umount", "-l", mountPath).Run()
	})

	// Mount and read.
	api, k := startedKube(t)
	a := runWarmerOn(t, cfg, k, host)
	eventually(t, 60*time.Second, "mounted and ready", a.w.Ready)
	big := host.Path(mountPath, "big.bin")
	if got := fileSum(t, big); got != want {
		t.Fatalf("big.bin through the mount: sha256 %s, want %s", got, want)
	}
	rec := mustRecord(t, s3, "libs")
	// Outside the agent's cgroup: the agent's daemon cgroup in every
	// hierarchy (v1 cpuset too), or the unit's.
	h.checkOutside(t, rec, host.Path(cfg.S3.CgroupRoot))

	if h.supervisor == SupervisorSystemd {
		// systemd re-executing itself (a package upgrade) closes the agent's
		// connection: the heal below must dial again. The unit lives on.
		h.systemctl(t, "daemon-reexec")
		if st := h.unitState(rec.Unit); st != "active" {
			t.Fatalf("unit %s is %q after daemon-reexec", rec.Unit, st)
		}
	}

	// kill -9 of the daemon: healed within 10 s, the file reads again.
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 10*time.Second, "healed after kill -9", func() error {
		if r, _ := s3.readRecord("libs"); r == nil || r.PID == rec.PID {
			return fmt.Errorf("not mounted again yet")
		}
		_, err := os.Stat(big)
		return err
	})
	t.Logf("%s: healed %s after kill -9", driver, took.Round(time.Millisecond))
	if got := fileSum(t, big); got != want {
		t.Fatalf("big.bin after the heal: sha256 %s, want %s", got, want)
	}
	// Counted once the remount returns, a moment after the record the wait
	// above saw is written.
	eventually(t, 10*time.Second, "one heal counted", func() error {
		if n := testutil.ToFloat64(a.w.s3.m.heals.WithLabelValues("libs", healENOTCONN)) +
			testutil.ToFloat64(a.w.s3.m.heals.WithLabelValues("libs", healProcessGone)); n != 1 {
			return fmt.Errorf("heals counted: %v, want 1", n)
		}
		return nil
	})
	eventually(t, 10*time.Second, "the S3MountHealed Event", func() error {
		if evs := s3Events(api, "S3MountHealed"); len(evs) != 1 || !strings.HasPrefix(evs[0], "Normal libs (libs at "+mountPath+"): ") {
			return fmt.Errorf("S3MountHealed Events %q, want one", evs)
		}
		return nil
	})

	// Agent restart: the new instance adopts the daemon (same PID).
	rec = mustRecord(t, s3, "libs")
	a.stop()
	b := runWarmerOn(t, cfg, k, host)
	eventually(t, 10*time.Second, "ready after restart", b.w.Ready)
	if r := mustRecord(t, s3, "libs"); r.PID != rec.PID || !s3.daemonAlive(r) {
		t.Fatalf("after restart: daemon %d, want the same %d alive", r.PID, rec.PID)
	}
	if got := fileSum(t, big); got != want {
		t.Fatalf("big.bin after restart: sha256 %s, want %s", got, want)
	}
	b.stop()
	if e, _ := s3.mountEntry(mountPath); e == nil {
		t.Fatal("cancelling Run unmounted the mount")
	}
	// A check in flight when Run is cancelled (its stat answers ctx.Err())
	// once killed the daemon as "stat_error" (the next agent then mounted
	// anew instead of adopting it).
	if !s3.daemonAlive(rec) {
		t.Fatalf("cancelling Run stopped daemon %d", rec.PID)
	}

	// Same name and path, another option (a hot reload): a new daemon with
	// it, the old one gone, the record updated, counted but no heal Event.
	// A file open on the old mount does not read on (its daemon is killed).
	old, err := os.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if !readOnlyFlag(s3.cmdline(rec.PID)) {
		t.Fatalf("daemon %d runs %q: no read-only option", rec.PID, s3.cmdline(rec.PID))
	}
	cfg3 := *cfg
	cfg3.S3Mounts = slices.Clone(cfg.S3Mounts)
	cfg3.S3Mounts[0].ReadOnly = false
	d := runWarmerOn(t, &cfg3, k, host)
	eventually(t, 10*time.Second, "mounted again with the new options", func() error {
		if r, _ := s3.readRecord("libs"); r == nil || r.PID == rec.PID {
			return fmt.Errorf("not mounted again yet")
		}
		return d.w.Ready()
	})
	r := mustRecord(t, s3, "libs")
	wantArgv := s3.startArgv(&cfg3.S3Mounts[0], cfg3.S3Mounts[0].Cache)
	// s3fs rewrites its argv in place (bucket:/prefix splits): compare the
	// option, not the whole command line.
	if got := s3.cmdline(r.PID); readOnlyFlag(got) || !slices.Equal(r.Argv, wantArgv) || slices.Equal(rec.Argv, wantArgv) {
		t.Errorf("after the change: daemon %d runs %q, recorded %q; want it read-write, recorded %q (was %q)", r.PID, got, r.Argv, wantArgv, rec.Argv)
	}
	if s3.daemonAlive(rec) {
		t.Errorf("old daemon %d still running", rec.PID)
	}
	if got := fileSum(t, big); got != want {
		t.Fatalf("big.bin after the change: sha256 %s, want %s", got, want)
	}
	if n := testutil.ToFloat64(d.w.s3.m.heals.WithLabelValues("libs", healConfigChanged)); n != 1 {
		t.Errorf("config_changed counted %v, want 1", n)
	}
	if _, err := old.ReadAt(make([]byte, 4096), 40<<20); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("read of a file opened before the change: %v, want ENOTCONN (the README says so)", err)
	}
	d.stop()
	if evs := s3Events(api, "S3MountHealed"); len(evs) != 1 {
		t.Errorf("S3MountHealed Events %q, want only the kill's", evs)
	}
	rec = r

	// Config without the mount: unmounted, daemon gone, record gone.
	cfg2 := *cfg
	cfg2.S3Mounts = nil
	c := runWarmerOn(t, &cfg2, k, host)
	eventually(t, 10*time.Second, "unmounted after removal from config", func() error {
		if e, _ := s3.mountEntry(mountPath); e != nil {
			return fmt.Errorf("%s still mounted", mountPath)
		}
		if r, _ := s3.readRecord("libs"); r != nil {
			return fmt.Errorf("record still there")
		}
		return nil
	})
	eventually(t, 10*time.Second, "daemon exited", func() error {
		if s3.daemonAlive(rec) {
			return fmt.Errorf("daemon %d still running", rec.PID)
		}
		return nil
	})
	if h.supervisor == SupervisorSystemd {
		if st := h.unitState(rec.Unit); st != "inactive" {
			t.Errorf("unit %s is %q after the removal, want inactive", rec.Unit, st)
		}
		c.stop()
		return
	}
	// With no mount left, the daemons' cgroup is gone from every hierarchy
	// (unless another agent on this host has a daemon in it: not empty).
	hier, err := cgroupHierarchies(host.Path(cfg.S3.CgroupRoot))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the daemons' empty cgroups removed", func() error {
		for _, d := range hier {
			if procs, err := os.ReadFile(filepath.Join(d, cgroupDir, "cgroup.procs")); err == nil && len(procs) == 0 {
				return fmt.Errorf("empty %s left behind", filepath.Join(d, cgroupDir))
			}
		}
		return nil
	})
	c.stop()
}

// readOnlyFlag: a daemon command line with the read-only option (s3fs's
// -o ...,ro,...; rclone's --read-only).
func readOnlyFlag(argv []string) bool {
	return slices.ContainsFunc(argv, func(a string) bool {
		return a == "--read-only" || slices.Contains(strings.Split(a, ","), "ro")
	})
}

// tlogWriter writes log lines to t.Log.
type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// killDaemonsOf SIGKILLs every process of driver's binary whose command
// line names mountPath, until none is left (at most 5 s).
func killDaemonsOf(t *testing.T, driver, mountPath string) {
	t.Helper()
	s3 := &s3Mounts{o: &S3Options{}, host: hostpath.New("/")}
	argv := []string{driver}
	for deadline := time.Now().Add(5 * time.Second); ; {
		pid := s3.findDaemon(argv, mountPath)
		if pid == 0 {
			return
		}
		t.Logf("killing %s daemon %d of %s left at the end of the test", driver, pid, mountPath)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if time.Now().After(deadline) {
			t.Errorf("%s daemon %d of %s still running", driver, pid, mountPath)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testS3MissingBinary: a driver binary the host does not have is a failed
// mount whose reason names it (the unit's sh says "not found").
func testS3MissingBinary(t *testing.T, endpoint string, h s3Host) {
	root := t.TempDir()
	cfg := DefaultConfig()
	cfg.S3.AllowedRoots = []string{filepath.Join(root, "mnt")}
	cfg.S3.StateDir = filepath.Join(root, "state")
	cfg.S3.CheckInterval = 200 * time.Millisecond
	cfg.S3.Supervisor = h.supervisor
	cfg.S3.S3fsPath = "s3fs-not-installed"
	cfg.S3Mounts = []S3MountConfig{{Name: "libs", Bucket: "libs", MountPath: filepath.Join(root, "mnt", "libs"),
		EndpointURL: endpoint, Driver: DriverS3fs, Required: true}}
	a := runWarmerOn(t, cfg, nil, h.paths())
	eventually(t, 30*time.Second, "the mount failed, naming the binary", func() error {
		if err := a.w.Ready(); err == nil || !strings.Contains(err.Error(), "s3fs-not-installed: not found") {
			return fmt.Errorf("ready: %v", err)
		}
		return nil
	})
}
