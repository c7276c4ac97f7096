package hostpath

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPaths(t *testing.T) {
	for _, tc := range []struct{ root, got, want string }{
		{"", New("").Proc("mdstat"), "/proc/mdstat"},
		{"/host", New("/host").Sys("block", "nvme0n1"), "/host/sys/block/nvme0n1"},
		{"/host/", New("/host/").Etc("resolv.conf"), "/host/etc/resolv.conf"},
		{"/fixtures", New("/fixtures").Dev("md", "kubernetes"), "/fixtures/dev/md/kubernetes"},
		{"/", New("/").Run("containerd", "containerd.sock"), "/run/containerd/containerd.sock"},
	} {
		if tc.got != tc.want {
			t.Errorf("root %q: got %q, want %q", tc.root, tc.got, tc.want)
		}
	}
}

// A fixture host tree with the symlinks real hosts have: every path
// resolves below the root, as the host itself would see it. (Joined
// lexically, the absolute /etc/resolv.conf link led to the container's own
// /run.)
func TestSymlinksResolveBelowTheRoot(t *testing.T) {
	root := t.TempDir()
	files := []string{
		"run/systemd/resolve/stub-resolv.conf",
		"run/systemd/resolve/resolv.conf",
		"usr/lib/os-release",
		"etc/passwd",
	}
	links := map[string]string{
		"etc/resolv.conf":  "/run/systemd/resolve/stub-resolv.conf", // Ubuntu, Bottlerocket
		"etc/os-release":   "../usr/lib/os-release",                 // relative
		"etc/escape":       "../../../../../etc/passwd",             // climbs above /: stops at the root
		"etc/absolute-dir": "/run/systemd",                          // a directory, then more below it
		"var/run":          "/run",
		"etc/loop-a":       "/etc/loop-b",
		"etc/loop-b":       "/etc/loop-a",
	}
	for _, f := range files {
		must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755))
		must(t, os.WriteFile(filepath.Join(root, f), []byte(f), 0o644))
	}
	for l, target := range links {
		must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(l)), 0o755))
		must(t, os.Symlink(target, filepath.Join(root, l)))
	}
	p := New(root)
	for _, tc := range []struct {
		name string
		got  string
		want string // below root; "" = a file with this content is read through it
	}{
		{"absolute link", p.Etc("resolv.conf"), "run/systemd/resolve/stub-resolv.conf"},
		{"relative link", p.Etc("os-release"), "usr/lib/os-release"},
		{"link above the root", p.Etc("escape"), "etc/passwd"},
		{"absolute link to a directory", p.Path("etc", "absolute-dir", "resolve", "resolv.conf"), "run/systemd/resolve/resolv.conf"},
		{"link in the middle", p.Path("var", "run", "systemd", "resolve", "stub-resolv.conf"), "run/systemd/resolve/stub-resolv.conf"},
		{"missing file below a link", p.Path("var", "run", "nodeagent", "state"), "run/nodeagent/state"},
		{"dot-dot in elem", p.Path("..", "..", "etc", "passwd"), "etc/passwd"},
	} {
		if want := filepath.Join(root, tc.want); tc.got != want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, want)
		}
	}
	if got, err := p.Resolve("etc", "resolv.conf"); err != nil || got != filepath.Join(root, "run/systemd/resolve/stub-resolv.conf") {
		t.Errorf("Resolve = %q, %v", got, err)
	}
	if _, err := p.Resolve("etc", "loop-a"); err == nil {
		t.Errorf("a symlink loop resolved")
	}
	if got := p.Etc("loop-a"); got != filepath.Join(root, "etc", "loop-a") {
		t.Errorf("Path of a loop = %q, want the lexical path", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
