package imagewarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/prometheus/procfs"

	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
)

// s3Mounts keeps the configured S3 mounts up.
type s3Mounts struct {
	o      *S3Options
	mounts []*s3Mount
	host   hostpath.Paths
	exec   hostexec.Runner
	log    *slog.Logger
	m      *s3metrics
	kube   *kube.Client  // Events on the Node; nil without a cluster
	units  *systemdUnits // nil: the daemons get the agent's cgroup
}

// s3Mount is one configured mount and where it stands.
type s3Mount struct {
	cfg S3MountConfig

	mu     sync.Mutex
	up     bool
	reason string // why not up

	cacheWaitSince time.Time // a first mount began waiting for the raid mount (keep's own)
}

// mountRecord is what the agent keeps (in stateDir) about a mount it made:
// a new agent adopts it, and only recorded paths are ever unmounted.
type mountRecord struct {
	Name      string   `json:"name"`
	MountPath string   `json:"mountPath"`
	PID       int      `json:"pid"`
	Argv      []string `json:"argv"`
	// Unit is the daemon's systemd unit; "" when in the agent's cgroup.
	Unit string `json:"unit,omitempty"`
	// Cache is the cache directory the agent chose (cache "raid"): made by
	// it, removed with the mount.
	Cache string `json:"cache,omitempty"`
}

func newS3Mounts(c *S3Config, host hostpath.Paths, ex hostexec.Runner, log *slog.Logger, m *s3metrics) *s3Mounts {
	s := &s3Mounts{o: &c.S3, host: host, exec: ex, log: log, m: m}
	for _, mc := range c.S3Mounts {
		s.mounts = append(s.mounts, &s3Mount{cfg: mc, reason: "not checked yet"})
		m.up.WithLabelValues(mc.Name).Set(0)
	}
	return s
}

// run unmounts what the agent mounted and the config no longer names, then
// keeps every configured mount up until ctx is done. Mounts stay when it
// returns.
func (s *s3Mounts) run(ctx context.Context) {
	s.supervise()
	if s.units != nil {
		defer s.units.close()
	}
	s.removeUnconfigured(ctx)
	if len(s.mounts) == 0 {
		s.removeCgroups(ctx)
	}
	var wg sync.WaitGroup
	for _, mt := range s.mounts {
		wg.Go(func() { s.keep(ctx, mt) })
	}
	wg.Wait()
}

// ready: nil when every required mount answered its last stat.
func (s *s3Mounts) ready() error {
	var bad []string
	for _, mt := range s.mounts {
		if !mt.cfg.Required {
			continue
		}
		mt.mu.Lock()
		if !mt.up {
			bad = append(bad, mt.cfg.Name+" ("+mt.reason+")")
		}
		mt.mu.Unlock()
	}
	if bad != nil {
		return fmt.Errorf("required S3 mounts not up: %s", strings.Join(bad, ", "))
	}
	return nil
}

func (s *s3Mounts) set(mt *s3Mount, up bool, reason string) {
	mt.mu.Lock()
	mt.up, mt.reason = up, reason
	mt.mu.Unlock()
	v := 0.0
	if up {
		v = 1
	}
	s.m.up.WithLabelValues(mt.cfg.Name).Set(v)
}

// removeUnconfigured unmounts every recorded mount whose name the config no
// longer has (or whose path changed), and forgets it.
func (s *s3Mounts) removeUnconfigured(ctx context.Context) {
	entries, err := os.ReadDir(s.host.Path(s.o.StateDir))
	if err != nil {
		return // none recorded yet
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		rec, err := s.readRecord(name)
		if err != nil || rec == nil {
			continue
		}
		if slices.ContainsFunc(s.mounts, func(mt *s3Mount) bool {
			return mt.cfg.Name == rec.Name && mt.cfg.MountPath == rec.MountPath
		}) {
			continue
		}
		if err := s.teardown(ctx, rec); err != nil {
			s.log.Warn("unmount of a removed S3 mount failed", "mount", rec.Name, "path", rec.MountPath, "err", err)
			continue
		}
		s.log.Info("unmounted an S3 mount no longer configured", "mount", rec.Name, "path", rec.MountPath)
	}
}

// teardown unmounts a recorded mount (lazily: readers keep their open
// files), stops its daemon and forgets it.
func (s *s3Mounts) teardown(ctx context.Context, rec *mountRecord) error {
	if e, err := s.mountEntry(rec.MountPath); err != nil {
		return err
	} else if e != nil {
		if !isFUSE(e) {
			return fmt.Errorf("%s is now a %s mount, not ours: left alone", rec.MountPath, e.FSType)
		}
		if _, err := s.exec.Run(ctx, s.inNamespace(hostexec.Cmd{Name: "umount", Args: []string{"-l", s.nsPath(rec.MountPath)}, Timeout: 30 * time.Second})); err != nil {
			return fmt.Errorf("unmount %s: %w", rec.MountPath, err)
		}
	}
	if rec.Unit != "" && s.units != nil {
		if err := s.units.stop(ctx, rec.Unit); err != nil {
			return err
		}
	} else if s.daemonAlive(rec) {
		_ = syscall.Kill(rec.PID, syscall.SIGTERM)
	}
	// Until it has exited (its cgroup can go only then; after the unmount
	// it may already be on its way out), at most 5 s.
	for i := 0; i < 100 && rec.PID > 0 && !s.exited(rec.PID); i++ {
		if !sleep(ctx, 50*time.Millisecond) {
			break
		}
	}
	_ = os.RemoveAll(s.host.Path(s.o.StateDir, rec.Name+".tmp"))
	if rec.Cache != "" {
		_ = os.RemoveAll(s.host.Path(rec.Cache))
	}
	return s.forget(rec.Name)
}

func (s *s3Mounts) recordPath(name string) string {
	return s.host.Path(s.o.StateDir, name+".json")
}

func (s *s3Mounts) readRecord(name string) (*mountRecord, error) {
	b, err := os.ReadFile(s.recordPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r mountRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("record %s: %w", s.recordPath(name), err)
	}
	return &r, nil
}

func (s *s3Mounts) writeRecord(r *mountRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	p := s.recordPath(r.Name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func (s *s3Mounts) forget(name string) error {
	if err := os.Remove(s.recordPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// mountEntry is the mountinfo line for the host path, or nil: PID 1's for
// namespace host, the agent's own (where it is below the host root) for
// namespace agent.
func (s *s3Mounts) mountEntry(path string) (*mountinfo.Info, error) {
	pid := "1"
	if s.o.Namespace != MountNamespaceHost {
		pid = "self"
	}
	f, err := os.Open(s.host.Proc(pid, "mountinfo"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ms, err := mountinfo.GetMountsFromReader(f, mountinfo.SingleEntryFilter(s.nsPath(path)))
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, nil
	}
	return ms[len(ms)-1], nil // the top one when stacked
}

func isFUSE(e *mountinfo.Info) bool {
	return e.FSType == "fuse" || strings.HasPrefix(e.FSType, "fuse.")
}

// nsPath is where host path p is in the mount namespace the daemons run in:
// p itself in the host's, below the host root in the agent's (where, in a
// pod, a Bidirectional host path carries the mount to the host), as raid does.
func (s *s3Mounts) nsPath(p string) string {
	if s.o.Namespace == MountNamespaceHost {
		return p
	}
	return s.host.Path(p)
}

// inNamespace wraps c to run in PID 1's mount namespace when configured
// (the agent has hostPID), as raid does.
func (s *s3Mounts) inNamespace(c hostexec.Cmd) hostexec.Cmd {
	if s.o.Namespace != MountNamespaceHost {
		return c
	}
	ns := filepath.Join(s.host.Proc(), "1", "ns", "mnt")
	return hostexec.Cmd{Name: "nsenter", Args: append([]string{"--mount=" + ns, "--", c.Name}, c.Args...), Env: c.Env, Timeout: c.Timeout}
}

// kill sends sig to rec's daemon: through systemd to a unit's (the agent
// need not share the host's PID namespace for it), else to its PID.
func (s *s3Mounts) kill(ctx context.Context, rec *mountRecord, sig syscall.Signal) {
	if rec.Unit != "" && s.units != nil {
		err := s.units.kill(ctx, rec.Unit, sig)
		if err == nil {
			return
		}
		s.log.Warn("systemd did not signal the S3 mount daemon: signalling its PID", "unit", rec.Unit, "err", err)
	}
	if s.daemonAlive(rec) {
		_ = syscall.Kill(rec.PID, sig)
	}
}

// process is pid in the host's /proc (false: gone).
func (s *s3Mounts) process(pid int) (procfs.Proc, bool) {
	fs, err := procfs.NewFS(s.host.Proc())
	if err != nil {
		return procfs.Proc{}, false
	}
	p, err := fs.Proc(pid)
	return p, err == nil
}

// cmdline is pid's command line, nil when the process is gone or a zombie.
func (s *s3Mounts) cmdline(pid int) []string {
	p, ok := s.process(pid)
	if !ok {
		return nil
	}
	argv, err := p.CmdLine()
	if err != nil || len(argv) == 0 {
		return nil
	}
	return argv
}

// daemonAlive: rec's process still runs and is a daemon of rec's path (a
// reused PID is not).
func (s *s3Mounts) daemonAlive(rec *mountRecord) bool {
	return rec.PID > 0 && isDaemonOf(s.cmdline(rec.PID), rec.Argv, s.nsPath(rec.MountPath))
}

// exited: pid is gone or a zombie (out of its cgroups). A process that is
// still exiting has no cmdline any more but is not out yet.
func (s *s3Mounts) exited(pid int) bool {
	p, ok := s.process(pid)
	if !ok {
		return true
	}
	st, err := p.Stat()
	return err != nil || st.State == "Z" || st.State == "X"
}

// isDaemonOf: argv is a process of the same binary naming mountPath.
func isDaemonOf(argv, want []string, mountPath string) bool {
	if len(argv) == 0 || len(want) == 0 || filepath.Base(argv[0]) != filepath.Base(want[0]) {
		return false
	}
	return slices.Contains(argv[1:], mountPath)
}

// findDaemon scans /proc for the daemon started with argv.
func (s *s3Mounts) findDaemon(argv []string, mountPath string) int {
	fs, err := procfs.NewFS(s.host.Proc())
	if err != nil {
		return 0
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return 0
	}
	for _, p := range procs {
		if cl, err := p.CmdLine(); err == nil && isDaemonOf(cl, argv, mountPath) {
			return p.PID
		}
	}
	return 0
}

// rss is the daemon's resident memory in bytes (0 if unknown).
func (s *s3Mounts) rss(pid int) float64 {
	p, ok := s.process(pid)
	if !ok {
		return 0
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0
	}
	return float64(st.VmRSS)
}

// newS3 registers the S3 metrics and allocates the mounts.
func (w *Warmer) newS3() (*s3Mounts, error) {
	m, err := newS3Metrics(w.deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("imagewarm: register S3 metrics: %w", err)
	}
	ex := w.deps.Exec
	if ex == nil {
		ex = hostexec.Exec{}
	}
	s := newS3Mounts(&w.cfg.S3Config, w.deps.Host, ex, w.log, m)
	s.kube = w.deps.Kube
	return s, nil
}

// startS3 runs the S3 mounts beside the image loop; the returned func
// cancels them and waits.
func (w *Warmer) startS3(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if len(w.s3.mounts) > 0 || w.cfg.S3.StateDir != "" {
		wg.Go(func() { w.s3.run(ctx) })
	}
	return ctx, func() { cancel(); wg.Wait() }
}
