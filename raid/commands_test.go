package raid

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostpath"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./raid -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test ./raid -run %s -update to accept):\ngot:\n%s\nwant:\n%s", p, t.Name(), got, want)
	}
}

// TestCommandLines pins every command line the feature runs.
func TestCommandLines(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	ext4 := DefaultConfig()
	ext4.Filesystem.Type = FSExt4
	ext4.Mount.Discard = true
	ext4.Mount.Namespace = MountNamespaceAgent
	host := hostpath.New("/host")
	f := &Feature{cfg: cfg, host: host}
	fa := &Feature{cfg: ext4, host: host}
	devs := []string{"/host/dev/nvme1n1", "/host/dev/nvme2n1", "/host/dev/nvme3n1", "/host/dev/nvme4n1"}
	var b strings.Builder
	for _, c := range []struct {
		what string
		line string
	}{
		{"probe", blkidCmd("/host/dev/nvme1n1").String()},
		{"examine", examineCmd("/host/dev/nvme1n1").String()},
		{"detail", detailCmd("/host/dev/md127").String()},
		{"create 4 disks", createCmd(cfg, devs).String()},
		{"create 1 disk (singleDisk: array)", createCmd(cfg, devs[:1]).String()},
		{"assemble", assembleCmd(cfg, "bfb8c88a:deaffd66:0c95b6b8:5dcebd9c", devs[:2]).String()},
		{"zero our superblock (onIncomplete: recreate)", zeroCmd("/host/dev/nvme1n1").String()},
		{"mkfs.xfs array of 4", mkfsCmd(cfg, "/host/dev/md127", 4).String()},
		{"mkfs.xfs one disk", mkfsCmd(cfg, "/host/dev/nvme1n1", 1).String()},
		{"mkfs.ext4 array of 4", mkfsCmd(ext4, "/host/dev/md127", 4).String()},
		{"mkfs.ext4 one disk", mkfsCmd(ext4, "/host/dev/nvme1n1", 1).String()},
		{"mkdir, host namespace", f.mkdirCmd().String()},
		{"mount, host namespace", f.mountCmd("md127", "xfs").String()},
		{"mkdir, agent namespace", fa.mkdirCmd().String()},
		{"mount, agent namespace, discard", fa.mountCmd("md127", "ext4").String()},
	} {
		fmt.Fprintf(&b, "# %s\n%s\n", c.what, c.line)
	}
	golden(t, "commands.golden", b.String())
}

// TestEnsure runs Ensure on fixture trees through a fake host that changes
// the tree as the kernel would, and pins the commands run, in order.
func TestEnsure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fixture string
		edit    func(*Config)
		ready   bool
		device  string
	}{
		{fixture: "fresh_blank", ready: true, device: "md127"},
		{fixture: "reboot_superblocks", ready: true, device: "md127"},
		{fixture: "running_unmounted", ready: true, device: "md127"},
		{fixture: "running_mounted", ready: true, device: "md127"},
		{fixture: "single_disk", ready: true, device: "nvme1n1"},
		{fixture: "host_array_bottlerocket", ready: true, device: "md127"},
		{fixture: "member_missing", ready: false},
		{fixture: "member_missing", edit: func(c *Config) { c.OnIncomplete = OnIncompleteRecreate }, ready: true, device: "md127"},
		{fixture: "foreign_array", ready: false},
	} {
		name := tc.fixture
		if tc.edit != nil {
			name += "_recreate"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			host := fixture(t, tc.fixture)
			cfg := DefaultConfig()
			cfg.Directories = []DirectoryConfig{{Path: "spark", UID: os.Getuid(), GID: os.Getgid(), Mode: "0750"}}
			if tc.edit != nil {
				tc.edit(cfg)
			}
			run := &fakeHost{t: t, host: host}
			f, err := New(cfg, agent.Deps{Host: host, Exec: run})
			if err != nil {
				t.Fatal(err)
			}
			f.lockPath = ""
			rep, err := f.Ensure(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Ready != tc.ready || rep.Device != tc.device {
				t.Fatalf("ready=%v device=%q, want %v %q: %s", rep.Ready, rep.Device, tc.ready, tc.device, rep.Decision.Reason)
			}
			if tc.ready {
				fi, err := os.Stat(host.Path(cfg.Mount.Path, "spark"))
				if err != nil || fi.Mode().Perm() != 0o750 {
					t.Errorf("spark directory: %v %v", fi, err)
				}
			} else if _, err := os.Stat(host.Path(cfg.Mount.Path)); err == nil {
				t.Errorf("not ready, yet %s was made", cfg.Mount.Path)
			}
			var changes []string
			for _, c := range run.cmds {
				if !strings.HasPrefix(c, "blkid -p") && !strings.HasPrefix(c, "mdadm --examine") && !strings.HasPrefix(c, "mdadm --detail") {
					changes = append(changes, c)
				}
			}
			golden(t, filepath.Join("ensure", name+".golden"), strings.Join(changes, "\n")+"\n")
			// A second Ensure finds everything in place and changes nothing.
			run.cmds = nil
			rep, err = f.Ensure(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range run.cmds {
				if !strings.HasPrefix(c, "blkid -p") && !strings.HasPrefix(c, "mdadm --examine") && !strings.HasPrefix(c, "mdadm --detail") {
					t.Errorf("second Ensure ran %q (decision %s: %s)", c, rep.Decision.Action, rep.Decision.Reason)
				}
			}
		})
	}
}

// TestEnsureFailure: a failing mkfs is an error naming the step; nothing is
// mounted and the feature is not ready.
func TestEnsureFailure(t *testing.T) {
	t.Parallel()
	host := fixture(t, "single_disk")
	run := &fakeHost{t: t, host: host, fail: "mkfs.xfs"}
	f, err := New(DefaultConfig(), agent.Deps{Host: host, Exec: run})
	if err != nil {
		t.Fatal(err)
	}
	f.lockPath = ""
	rep, err := f.Ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "raid: mkfs: mkfs.xfs") || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("err = %v", err)
	}
	if rep.Ready {
		t.Error("ready after a failed mkfs")
	}
	f.publish(context.Background(), rep, err)
	if f.Ready() == nil {
		t.Error("Ready() is nil after a failed mkfs")
	}
}

// TestLock: a second Ensure waits for the first one's lock, and gives up
// when its context ends.
func TestLock(t *testing.T) {
	t.Parallel()
	f := &Feature{lockPath: filepath.Join(t.TempDir(), "raid.lock")}
	unlock, err := f.lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	g := &Feature{lockPath: f.lockPath}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := g.lock(ctx); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("second lock while held: %v", err)
	}
	unlock()
	unlock2, err := g.lock(context.Background())
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
