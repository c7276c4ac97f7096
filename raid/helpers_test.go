package raid

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture copies testdata/<name> (a tree mirroring /sys, /proc/1 and the
// probe outputs under exec/) into a temporary host root.
func fixture(t *testing.T, name string) hostpath.Paths {
	t.Helper()
	src := filepath.Join("testdata", name)
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	// procfs reads /proc/self via a symlink; give it one.
	_ = os.Symlink("1", filepath.Join(dst, "proc", "self"))
	return hostpath.New(dst)
}

// fakeHost answers the probes from the fixture's exec/ files (a missing
// blkid file means a blank device: exit 2) and, for the commands that change
// the host, changes the fixture tree the way the kernel would: mdadm
// --create/--assemble add md127 over the members, mount adds a mountinfo line.
type fakeHost struct {
	t    *testing.T
	host hostpath.Paths
	mu   sync.Mutex
	cmds []string
	// fail makes the command whose line starts with it fail.
	fail string
}

func (f *fakeHost) Run(_ context.Context, c hostexec.Cmd) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := strings.ReplaceAll(c.String(), f.host.Root, "<root>")
	f.cmds = append(f.cmds, line)
	if f.fail != "" && strings.HasPrefix(line, f.fail) {
		return nil, &hostexec.ExitError{Cmd: line, ExitCode: 1, Stderr: "injected failure", Err: fmt.Errorf("exit status 1")}
	}
	args := c.Args
	if c.Name == "nsenter" {
		args = args[3:] // --mount=..., --, name
		c.Name = c.Args[2]
	}
	last := filepath.Base(args[len(args)-1])
	exec := func(kind string) ([]byte, error) {
		b, err := os.ReadFile(f.host.Path("exec", kind+"."+last))
		if err != nil {
			if kind == "blkid" {
				return nil, &hostexec.ExitError{Cmd: line, ExitCode: 2, Err: fmt.Errorf("exit status 2")}
			}
			return nil, &hostexec.ExitError{Cmd: line, ExitCode: 1, Stderr: "no fixture for " + kind + "." + last, Err: fmt.Errorf("exit status 1")}
		}
		return b, nil
	}
	switch {
	case c.Name == "blkid":
		return exec("blkid")
	case c.Name == "mdadm" && args[0] == "--examine":
		return exec("examine")
	case c.Name == "mdadm" && args[0] == "--detail":
		return exec("detail")
	case c.Name == "mdadm" && (args[0] == "--create" || args[0] == "--assemble"):
		md := f.host.Sys("block", "md127")
		f.write(filepath.Join(md, "dev"), "9:127\n")
		f.write(filepath.Join(md, "size"), "4194304\n")
		f.write(filepath.Join(md, "md", "array_state"), "clean\n")
		for _, a := range args {
			if strings.HasPrefix(a, f.host.Dev()) {
				name := filepath.Base(a)
				f.write(filepath.Join(md, "slaves", name), "")
				f.write(f.host.Sys("block", name, "holders", "md127"), "")
			}
		}
		f.write(f.host.Path("exec", "detail.md127"), "MD_LEVEL=raid0\nMD_NAME=any:nodeagent\nMD_UUID=bfb8c88a:deaffd66:0c95b6b8:5dcebd9c\n")
		if args[0] == "--assemble" {
			f.write(f.host.Path("exec", "blkid.md127"), "TYPE=xfs\nLABEL=nodeagent\n")
		}
	case c.Name == "mkfs.xfs" || c.Name == "mkfs.ext4":
		f.write(f.host.Path("exec", "blkid."+last), "TYPE=xfs\nLABEL=nodeagent\n")
	case c.Name == "mkdir":
		return nil, os.MkdirAll(f.host.Path(args[len(args)-1]), 0o755)
	case c.Name == "mount":
		dev := strings.TrimSpace(f.read(f.host.Sys("block", filepath.Base(args[len(args)-2]), "dev")))
		point := args[len(args)-1]
		if !strings.HasPrefix(point, f.host.Root) {
			point = f.host.Path(point)
		}
		_ = os.MkdirAll(point, 0o755)
		mi := f.host.Proc("1", "mountinfo")
		f.write(mi, f.read(mi)+fmt.Sprintf("99 22 %s / %s rw,noatime shared:9 - %s /dev/x rw\n", dev, strings.TrimPrefix(point, f.host.Root), args[1]))
	}
	return nil, nil
}

func (f *fakeHost) write(p, s string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeHost) read(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
