package imagewarm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/nodeagent/nodeagent/agent/hostpath"
)

// TestS3CacheOnRaidRoot: a mount with cache "raid" waits for the raid mount
// (not counted as a failure), then caches below it; a new agent adopts it;
// removed, its cache goes too. With no raid mount once cacheWait is over it
// is made without a cache, and a raid mount that appears later does not
// remount it.
func TestS3CacheOnRaidRoot(t *testing.T) {
	endpoint, want := s3Bucket(t, 4<<20)
	if _, err := exec.LookPath(DriverS3fs); err != nil {
		t.Skip("needs s3fs (imagewarm/hack/prereqs.sh installs it)")
	}
	root := t.TempDir()
	raid := filepath.Join(root, "raid")
	mountPath := filepath.Join(root, "mnt", "libs")
	if err := os.MkdirAll(raid, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.S3.AllowedRoots = []string{filepath.Join(root, "mnt")}
	cfg.S3.StateDir = filepath.Join(root, "state")
	cfg.S3.CheckInterval = 200 * time.Millisecond
	cfg.S3.Supervisor = SupervisorCgroup
	cfg.S3.RaidMount = raid
	cfg.S3.CacheWait = time.Hour
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if pid1, _ := os.Readlink("/proc/1/ns/mnt"); pid1 != self {
		cfg.S3.Namespace = MountNamespaceAgent
	}
	cfg.S3Mounts = []S3MountConfig{{Name: "libs", Bucket: "libs", Prefix: "jars/", MountPath: mountPath,
		EndpointURL: endpoint, Region: "us-east-1", ReadOnly: true, Driver: DriverS3fs, Required: true, Cache: CacheOnRaid}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	host := hostpath.New("/")
	s3 := &s3Mounts{o: &cfg.S3, host: host}
	t.Cleanup(func() {
		killDaemonsOf(t, DriverS3fs, s3.nsPath(mountPath))
		_ = exec.Command("umount", "-l", mountPath).Run()
		_ = exec.Command("umount", "-l", raid).Run()
	})

	// No raid mount yet: waiting, not failing.
	a := runWarmerOn(t, cfg, nil, host)
	eventually(t, 10*time.Second, "waiting for the raid mount", func() error {
		if err := a.w.Ready(); err == nil || !strings.Contains(err.Error(), "waiting for the raid mount at "+raid) {
			return fmt.Errorf("ready: %v", err)
		}
		return nil
	})
	if n := testutil.ToFloat64(a.w.s3.m.failures.WithLabelValues("libs")); n != 0 {
		t.Errorf("waiting counted as %v failures", n)
	}
	if rec, _ := s3.readRecord("libs"); rec != nil {
		t.Fatalf("mounted before the raid mount: %+v", rec)
	}

	// raid mounts its array: the cache goes below it.
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", raid).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	eventually(t, 30*time.Second, "mounted once the raid mount is there", a.w.Ready)
	rec := mustRecord(t, s3, "libs")
	dir := filepath.Join(raid, "s3cache", "libs")
	if rec.Cache != dir || !slices.ContainsFunc(s3.cmdline(rec.PID), func(a string) bool { return strings.Contains(a, "use_cache="+dir) }) {
		t.Fatalf("record cache %q, daemon %q: want use_cache=%s", rec.Cache, s3.cmdline(rec.PID), dir)
	}
	if got := fileSum(t, filepath.Join(mountPath, "big.bin")); got != want {
		t.Fatalf("big.bin: sha256 %s, want %s", got, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) == 0 {
		t.Errorf("nothing cached in %s after a read", dir)
	}

	// A new agent adopts it (its cache is what the record says).
	a.stop()
	b := runWarmerOn(t, cfg, nil, host)
	eventually(t, 10*time.Second, "ready after restart", b.w.Ready)
	if r := mustRecord(t, s3, "libs"); r.PID != rec.PID {
		t.Fatalf("after restart: daemon %d, want the same %d", r.PID, rec.PID)
	}
	b.stop()

	// Removed from config: unmounted, the cache the agent made gone.
	cfg2 := *cfg
	cfg2.S3Mounts = nil
	c := runWarmerOn(t, &cfg2, nil, host)
	eventually(t, 10*time.Second, "unmounted, cache removed", func() error {
		if r, _ := s3.readRecord("libs"); r != nil {
			return fmt.Errorf("record still there")
		}
		if _, err := os.Stat(dir); err == nil {
			return fmt.Errorf("%s still there", dir)
		}
		return nil
	})
	c.stop()
	if out, err := exec.Command("umount", raid).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v: %s", raid, err, out)
	}

	// No raid mount and nothing to wait for: mounted without a cache; the
	// raid mount appearing later leaves the daemon alone (open files).
	cfg3 := *cfg
	cfg3.S3.CacheWait = 0
	d := runWarmerOn(t, &cfg3, nil, host)
	eventually(t, 30*time.Second, "mounted without a cache", d.w.Ready)
	rec = mustRecord(t, s3, "libs")
	if rec.Cache != "" || slices.ContainsFunc(s3.cmdline(rec.PID), func(a string) bool { return strings.Contains(a, "use_cache=") }) {
		t.Fatalf("record cache %q, daemon %q: want none", rec.Cache, s3.cmdline(rec.PID))
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", raid).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	checks := func() uint64 {
		var m dto.Metric
		_ = d.w.s3.m.check.Write(&m)
		return m.GetHistogram().GetSampleCount()
	}
	n := checks()
	eventually(t, 10*time.Second, "three checks with the raid mount there", func() error {
		if checks() < n+3 {
			return fmt.Errorf("%d checks so far", checks()-n)
		}
		return nil
	})
	if r := mustRecord(t, s3, "libs"); r.PID != rec.PID {
		t.Errorf("the raid mount appearing remounted: daemon %d, was %d", r.PID, rec.PID)
	}
	d.stop()
}
