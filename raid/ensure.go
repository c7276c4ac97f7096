package raid

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodeagent/nodeagent/agent/hostexec"
)

// Report is the outcome of one Ensure (or, for Plan, what Ensure would do).
type Report struct {
	Decision Decision `json:"decision"`
	// State is what discovery found before acting.
	State *State `json:"state"`
	// Device is the kernel name mounted at the path, once known.
	Device string `json:"device,omitempty"`
	// Done lists the commands run, in order.
	Done []string `json:"done,omitempty"`
	// ArrayState is md's array_state of the array mounted, if any.
	ArrayState string `json:"arrayState,omitempty"`
	// Ready: the filesystem is mounted at the path.
	Ready         bool   `json:"ready"`
	Path          string `json:"path"`
	CapacityBytes uint64 `json:"capacityBytes,omitempty"`
	FreeBytes     uint64 `json:"freeBytes,omitempty"`
	// Seconds is how long the Ensure took.
	Seconds float64 `json:"seconds"`
}

// Plan discovers and decides without changing anything: `nodeagent raid status`.
func (f *Feature) Plan(ctx context.Context) (*Report, error) {
	start := time.Now()
	st, err := Discover(ctx, f.cfg, f.host, f.run)
	if err != nil {
		return nil, err
	}
	d := Decide(f.cfg, st)
	rep := &Report{Decision: d, State: st, Device: d.Device, Path: f.cfg.Mount.Path}
	rep.Ready = (d.Action == ActionNone || (d.Action == ActionAdopt && st.AtPath != nil)) ||
		(d.Action == ActionNoDisks && f.cfg.AllowNoDisks)
	f.fillUsage(rep)
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// Ensure discovers, decides and acts: create, assemble, format, mount, make
// the directories. It is idempotent; with nothing to do it only reads.
func (f *Feature) Ensure(ctx context.Context) (*Report, error) {
	start := time.Now()
	unlock, err := f.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep, err := f.Plan(ctx)
	if err != nil {
		return nil, err
	}
	// Once started, the steps run to the end (each bounded by
	// commandTimeout): a SIGTERM or a reload between mdadm --create and
	// mkfs would leave an array without a filesystem, which nodeagent then
	// refuses to format.
	err = f.act(context.WithoutCancel(ctx), rep)
	rep.Seconds = time.Since(start).Seconds()
	return rep, err
}

func (f *Feature) act(ctx context.Context, rep *Report) error {
	d := rep.Decision
	fsType := f.cfg.Filesystem.Type
	switch d.Action {
	case ActionBlocked:
		return nil
	case ActionNoDisks:
		rep.Ready = f.cfg.AllowNoDisks
		return nil
	case ActionNone:
		// mounted; the directories may still be missing (made by hand, or
		// a config change added one).
	case ActionMount, ActionAdopt:
		if d.Array != nil {
			fsType = d.Array.FS.Type
		} else if len(d.Members) == 1 {
			fsType = d.Members[0].Sig.Type
		}
		if rep.State.AtPath == nil {
			if err := f.mount(ctx, rep, d.Device, fsType); err != nil {
				return err
			}
		}
	case ActionAssemble:
		if err := f.exec(ctx, rep, "assemble", assembleCmd(f.cfg, d.UUID, f.devs(d.Members))); err != nil {
			return err
		}
		md, err := f.findArray(d.Members)
		if err != nil {
			return err
		}
		sig, err := prober{run: f.run, host: f.host, timeout: f.cfg.CommandTimeout}.signature(ctx, md)
		if err != nil {
			return err
		}
		if sig.Blank() {
			rep.Decision.Action, rep.Decision.Reason = ActionBlocked, fmt.Sprintf("nodeagent's array %s was assembled but has no filesystem; nodeagent formats only arrays it has just created, so it is left unmounted", md)
			return nil
		}
		if err := f.mount(ctx, rep, md, sig.Type); err != nil {
			return err
		}
	case ActionCreate, ActionRecreate:
		if d.Action == ActionRecreate {
			for _, m := range d.Members {
				if m.Sig.IsMD() && m.Sig.MDName == f.cfg.Array.Name { // only our own superblocks
					if err := f.exec(ctx, rep, "zero_superblock", zeroCmd(f.host.Dev(m.Name))); err != nil {
						return err
					}
				}
			}
		}
		dev := ""
		if d.Layout == LayoutRAID0 {
			if err := f.exec(ctx, rep, "create", createCmd(f.cfg, f.devs(d.Members))); err != nil {
				return err
			}
			md, err := f.findArray(d.Members)
			if err != nil {
				return err
			}
			dev = md
		} else {
			dev = d.Members[0].Name
		}
		if err := f.mkfs(ctx, rep, dev, len(d.Members)); err != nil {
			return err
		}
		if err := f.mount(ctx, rep, dev, fsType); err != nil {
			return err
		}
	case ActionFormat:
		dev := d.Members[0].Name
		if err := f.mkfs(ctx, rep, dev, 1); err != nil {
			return err
		}
		if err := f.mount(ctx, rep, dev, fsType); err != nil {
			return err
		}
	}
	if err := f.directories(); err != nil {
		f.count("directories", err)
		return err
	}
	return f.verify(rep)
}

// mkfs formats a device we have just created (or a blank single disk).
// It probes once more first: a device that is not blank is never formatted.
func (f *Feature) mkfs(ctx context.Context, rep *Report, dev string, members int) error {
	sig, err := prober{run: f.run, host: f.host, timeout: f.cfg.CommandTimeout}.signature(ctx, dev)
	if err != nil {
		return err
	}
	if !sig.Blank() {
		err := fmt.Errorf("raid: %s is not blank (%s); not formatting it", dev, sig.Type)
		f.count("mkfs", err)
		return err
	}
	return f.exec(ctx, rep, "mkfs", mkfsCmd(f.cfg, f.host.Dev(dev), members))
}

func (f *Feature) mount(ctx context.Context, rep *Report, dev, fsType string) error {
	if err := f.exec(ctx, rep, "mkdir", f.mkdirCmd()); err != nil {
		return err
	}
	if err := f.exec(ctx, rep, "mount", f.mountCmd(dev, fsType)); err != nil {
		return err
	}
	rep.Device = dev
	return nil
}

// verify reads the mount table again: ready only when the device is mounted
// at the path.
func (f *Feature) verify(rep *Report) error {
	mounts, err := readMounts(f.host, f.cfg.Mount.Namespace)
	if err != nil {
		return err
	}
	var at *Mount
	for i := range mounts {
		if mounts[i].Point == f.cfg.Mount.Path {
			at = &mounts[i]
		}
	}
	if at == nil {
		return fmt.Errorf("raid: nothing is mounted at %s after mounting it", f.cfg.Mount.Path)
	}
	if rep.Device != "" {
		if dev := readTrim(f.host.Sys("block", rep.Device, "dev")); dev != "" && dev != at.Dev {
			return fmt.Errorf("raid: %s holds %s (%s), not %s", f.cfg.Mount.Path, at.Source, at.Dev, rep.Device)
		}
	}
	rep.Ready = true
	if rep.Decision.Layout == LayoutRAID0 {
		rep.ArrayState = readTrim(f.host.Sys("block", rep.Device, "md", "array_state"))
	}
	f.fillUsage(rep)
	return nil
}

// directories makes the configured directories with owner and mode; it sets
// owner and mode on directories that exist too.
func (f *Feature) directories() error {
	for _, dc := range f.cfg.Directories {
		p := filepath.Join(f.host.Path(f.cfg.Mount.Path), dc.Path)
		mode, _ := parseMode(dc.Mode) // validated
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("raid: directories: %w", err)
		}
		if err := os.Chown(p, dc.UID, dc.GID); err != nil {
			return fmt.Errorf("raid: directories: %w", err)
		}
		if err := os.Chmod(p, os.FileMode(mode&0o777)|modeBits(mode)); err != nil {
			return fmt.Errorf("raid: directories: %w", err)
		}
	}
	return nil
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

func (f *Feature) fillUsage(rep *Report) {
	if !rep.Ready || rep.Decision.Action == ActionNoDisks {
		return
	}
	var s unix.Statfs_t
	if err := unix.Statfs(f.host.Path(f.cfg.Mount.Path), &s); err == nil {
		rep.CapacityBytes = s.Blocks * uint64(s.Bsize)
		rep.FreeBytes = s.Bavail * uint64(s.Bsize)
	}
}

// findArray finds the md device whose members are exactly these disks.
func (f *Feature) findArray(members []Disk) (string, error) {
	blocks, err := readSysBlock(f.host)
	if err != nil {
		return "", err
	}
	var want []string
	for _, m := range members {
		want = append(want, m.Name)
	}
	slices.Sort(want)
	for _, b := range blocks {
		got := slices.Clone(b.slaves)
		slices.Sort(got)
		if b.md && slices.Equal(got, want) {
			return b.name, nil
		}
	}
	return "", fmt.Errorf("raid: no md device over %v after mdadm", want)
}

// devs are the members' device paths for mdadm.
func (f *Feature) devs(ds []Disk) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = f.host.Dev(d.Name)
	}
	return out
}

// exec runs one command, counts it, and records it in the report.
func (f *Feature) exec(ctx context.Context, rep *Report, op string, c hostexec.Cmd) error {
	if c.Timeout == 0 {
		c.Timeout = f.cfg.CommandTimeout
	}
	f.log.Info("running", "op", op, "cmd", c.String())
	_, err := f.run.Run(ctx, c)
	f.count(op, err)
	rep.Done = append(rep.Done, c.String())
	if err != nil {
		return fmt.Errorf("raid: %s: %w", op, err)
	}
	return nil
}

func (f *Feature) count(op string, err error) {
	if f.m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	f.m.operations.WithLabelValues(op, result).Inc()
}

// lock takes the Ensure lock shared with every agent on the node and
// `nodeagent raid ensure`. It waits (polling, so that a cancelled ctx is
// not stuck behind another process's long mkfs) until it has it.
func (f *Feature) lock(ctx context.Context) (func(), error) {
	if f.lockPath == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(f.lockPath), 0o755); err != nil {
		return nil, fmt.Errorf("raid: lock: %w", err)
	}
	fd, err := unix.Open(f.lockPath, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raid: lock: %w", err)
	}
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Close(fd) }, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			unix.Close(fd)
			return nil, fmt.Errorf("raid: lock %s: %w", f.lockPath, err)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			unix.Close(fd)
			return nil, fmt.Errorf("raid: waiting for %s (another agent or `nodeagent raid ensure` holds it): %w", f.lockPath, ctx.Err())
		case <-t.C:
		}
	}
}
