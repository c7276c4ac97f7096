package imagewarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodeagent/nodeagent/agent/hostexec"
)

// errForeign: something the agent did not mount sits at the path.
var errForeign = errors.New("mounted by something else (not in the agent's records): left alone")

// keep checks mt every checkInterval (jittered) and mounts it again when it
// is dead, with jittered exponential backoff between failed attempts.
func (s *s3Mounts) keep(ctx context.Context, mt *s3Mount) {
	backoff := s.o.Retry.InitialBackoff
	var downSince time.Time
	failNoticed := false // a Warning Event for this run of failures was sent
	lastFail := ""       // the last attempt's error, kept in the not-ready reason
	for ctx.Err() == nil {
		wait := jitter(s.o.CheckInterval)
		rec, reason, err := s.check(ctx, mt)
		if ctx.Err() != nil {
			// Stopping: a check cut short (its stat answers ctx.Err()) says
			// nothing about the mount. Acting on it killed a healthy daemon
			// that the next agent was to adopt.
			return
		}
		switch {
		case err != nil:
			s.set(mt, false, err.Error())
		case reason == "":
			if !downSince.IsZero() {
				s.m.healTime.Observe(time.Since(downSince).Seconds())
				downSince = time.Time{}
			}
			s.set(mt, true, "")
			backoff = s.o.Retry.InitialBackoff
			failNoticed, lastFail = false, ""
		default:
			changed := reason == healConfigChanged // not dead: no heal time, no Event
			if downSince.IsZero() && !changed {
				downSince = time.Now()
			}
			if lastFail != "" {
				s.set(mt, false, reason+": mount failed: "+lastFail)
			} else {
				s.set(mt, false, reason)
			}
			heal := rec != nil
			switch {
			case heal && changed:
				s.log.Info("S3 mount options changed, mounting again", "mount", mt.cfg.Name, "pid", rec.PID,
					"was", strings.Join(rec.Argv, " "), "now", strings.Join(s.startArgv(&mt.cfg, wantCache(&mt.cfg, rec)), " "))
			case heal:
				s.log.Warn("S3 mount dead, mounting again", "mount", mt.cfg.Name, "reason", reason, "pid", rec.PID)
			}
			if err := s.remount(ctx, mt, rec); err != nil {
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, errCacheWait) {
					s.set(mt, false, err.Error()) // not a failure: checked again next interval
					break
				}
				s.m.failures.WithLabelValues(mt.cfg.Name).Inc()
				wait = jitter(backoff)
				backoff = min(2*backoff, s.o.Retry.MaxBackoff)
				s.set(mt, false, reason+": mount failed: "+err.Error())
				s.log.Warn("S3 mount failed", "mount", mt.cfg.Name, "retryIn", wait.Round(time.Millisecond), "err", err)
				if s.kube != nil && !failNoticed {
					s.kube.Event(corev1.EventTypeWarning, "S3MountFailed", "Mount", "%s (%s at %s): %s: %v",
						mt.cfg.Name, mt.cfg.Bucket, mt.cfg.MountPath, reason, err)
				}
				failNoticed, lastFail = true, err.Error()
				break
			}
			if heal {
				s.m.heals.WithLabelValues(mt.cfg.Name, reason).Inc()
				if s.kube != nil && !changed {
					s.kube.Event(corev1.EventTypeNormal, "S3MountHealed", "Remount", "%s (%s at %s): %s (daemon %d), mounted again after %s",
						mt.cfg.Name, mt.cfg.Bucket, mt.cfg.MountPath, reason, rec.PID, time.Since(downSince).Round(10*time.Millisecond))
				}
			}
			wait = 0 // check it right away
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// check returns the record of mt and why it needs mounting ("" = healthy),
// or an error when it must be left alone.
func (s *s3Mounts) check(ctx context.Context, mt *s3Mount) (*mountRecord, string, error) {
	start := time.Now()
	defer func() { s.m.check.Observe(time.Since(start).Seconds()) }()
	rec, err := s.readRecord(mt.cfg.Name)
	if err != nil {
		return nil, "", err
	}
	e, err := s.mountEntry(mt.cfg.MountPath)
	if err != nil {
		return rec, "", err
	}
	switch {
	case rec == nil && e != nil:
		return nil, "", fmt.Errorf("%s is %s (%s): %w", mt.cfg.MountPath, e.FSType, e.Source, errForeign)
	case rec == nil:
		return nil, "not mounted yet", nil
	case e == nil:
		return rec, healUnmounted, nil
	case !isFUSE(e):
		return rec, "", fmt.Errorf("%s is a %s mount over ours: %w", mt.cfg.MountPath, e.FSType, errForeign)
	}
	if rec.PID > 0 && !s.daemonAlive(rec) {
		return rec, healProcessGone, nil
	}
	if rec.PID > 0 {
		s.m.rss.WithLabelValues(mt.cfg.Name).Set(s.rss(rec.PID))
	}
	switch err := s.statRoot(ctx, mt.cfg.MountPath); {
	case errors.Is(err, syscall.ENOTCONN):
		return rec, healENOTCONN, nil
	case err != nil:
		return rec, healStatError, nil
	}
	// Healthy, but started with other options than the config's now (same
	// name and path, a hot reload): mounted again to take them.
	if !slices.Equal(rec.Argv, s.startArgv(&mt.cfg, wantCache(&mt.cfg, rec))) {
		return rec, healConfigChanged, nil
	}
	return rec, "", nil
}

// statRoot stats path (as the host sees it) within statTimeout. A hung
// daemon leaves the stat goroutine blocked until the daemon dies or is
// unmounted.
func (s *s3Mounts) statRoot(ctx context.Context, path string) error {
	done := make(chan error, 1)
	go func() {
		_, err := os.Stat(s.host.Path(path))
		done <- err
	}()
	t := time.NewTimer(s.o.StatTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("stat %s: no answer in %s", path, s.o.StatTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// remount clears what is left of rec (its daemon, its dead mount: lazily,
// so open files do not block it) and mounts mt.
func (s *s3Mounts) remount(ctx context.Context, mt *s3Mount, rec *mountRecord) error {
	if err := ctx.Err(); err != nil {
		return err // a stopping agent kills no daemon
	}
	if rec != nil {
		s.kill(ctx, rec, syscall.SIGKILL)
		if e, err := s.mountEntry(rec.MountPath); err == nil && e != nil && isFUSE(e) {
			if _, err := s.exec.Run(ctx, s.inNamespace(hostexec.Cmd{Name: "umount", Args: []string{"-l", s.nsPath(rec.MountPath)}, Timeout: 30 * time.Second})); err != nil {
				return fmt.Errorf("lazy unmount of the dead mount: %w", err)
			}
		}
		if err := s.forget(rec.Name); err != nil {
			return err
		}
	}
	return s.mount(ctx, mt, rec == nil)
}

// mount starts the FUSE daemon detached (startDaemon), waits for its mount
// to answer and records it. first: the mount has no record (not a heal).
func (s *s3Mounts) mount(ctx context.Context, mt *s3Mount, first bool) error {
	c := &mt.cfg
	if e, err := s.mountEntry(c.MountPath); err != nil {
		return err
	} else if e != nil {
		return fmt.Errorf("%s: %w", c.MountPath, errForeign)
	}
	cache, err := s.cacheDir(mt, first)
	if err != nil {
		return err
	}
	nsMountPath := s.nsPath(c.MountPath)
	dirs := []string{"-p", nsMountPath}
	if cache != "" {
		dirs = append(dirs, s.nsPath(cache))
	}
	if _, err := s.exec.Run(ctx, s.inNamespace(hostexec.Cmd{Name: "mkdir", Args: dirs})); err != nil {
		return err
	}
	if err := os.MkdirAll(s.host.Path(s.o.StateDir, c.Name+".tmp"), 0o700); err != nil {
		return err
	}
	argv := s.startArgv(c, cache)
	logFile := filepath.Join(s.o.StateDir, c.Name+".log")
	unit, err := s.startDaemon(ctx, c, argv, logFile)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.o.MountTimeout)
	for {
		pid := s.findDaemon(argv, nsMountPath)
		e, _ := s.mountEntry(c.MountPath)
		if e != nil && pid > 0 && s.statRoot(ctx, c.MountPath) == nil {
			rec := &mountRecord{Name: c.Name, MountPath: c.MountPath, PID: pid, Argv: argv, Unit: unit}
			if c.Cache == CacheOnRaid {
				rec.Cache = cache
			}
			if err := s.writeRecord(rec); err != nil {
				return err
			}
			if unit == "" {
				if err := s.detachCgroup(pid); err != nil {
					s.log.Warn("FUSE daemon left in the agent's cgroup", "mount", c.Name, "pid", pid, "err", err)
				}
			}
			s.log.Info("S3 mount up", "mount", c.Name, "path", c.MountPath, "driver", c.driver(), "pid", pid, "unit", unit)
			return nil
		}
		if pid == 0 && e == nil && time.Until(deadline) < s.o.MountTimeout-2*time.Second {
			return fmt.Errorf("%s exited: %s", argv[0], s.logTail(logFile))
		}
		if time.Now().After(deadline) {
			s.abandon(unit, argv, nsMountPath, c.MountPath)
			return fmt.Errorf("%s did not mount in %s: %s", argv[0], s.o.MountTimeout, s.logTail(logFile))
		}
		if !sleep(ctx, 100*time.Millisecond) {
			s.abandon(unit, argv, nsMountPath, c.MountPath)
			return ctx.Err()
		}
	}
}

// startArgv is the daemon's command line for c with cache (a host path,
// "" = none) as mount starts it and its record keeps it: c in the daemon's
// mount namespace (host paths below the host root in namespace agent),
// plus scratch space in namespace agent. check compares a record's with it
// to find changed options.
func (s *s3Mounts) startArgv(c *S3MountConfig, cache string) []string {
	local := *c
	local.MountPath = s.nsPath(c.MountPath)
	local.Cache = ""
	if cache != "" {
		local.Cache = s.nsPath(cache)
	}
	argv := s.o.daemonArgv(&local)
	if s.o.Namespace != MountNamespaceHost {
		argv = append(argv, s.scratchArgs(&local)...)
	}
	return argv
}

// abandon stops a daemon the agent started but did not record (stopping,
// or its mount never answered): the next agent would find its mount foreign
// and leave it forever. Killed, its mount lazily unmounted; nothing used it.
func (s *s3Mounts) abandon(unit string, argv []string, nsMountPath, mountPath string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if unit != "" {
		_ = s.units.kill(ctx, unit, syscall.SIGKILL)
	}
	// setsid -f may not have exec'd the daemon yet: look for a moment.
	for i := 0; unit == "" && i < 10; i++ {
		if pid := s.findDaemon(argv, nsMountPath); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			break
		}
		if !sleep(ctx, 50*time.Millisecond) {
			break
		}
	}
	if e, err := s.mountEntry(mountPath); err == nil && e != nil && isFUSE(e) {
		_, _ = s.exec.Run(ctx, s.inNamespace(hostexec.Cmd{Name: "umount", Args: []string{"-l", nsMountPath}, Timeout: 5 * time.Second}))
	}
}

// startDaemon starts the daemon detached from the agent: as a transient
// systemd unit (returned), or with setsid -f (its own session, parent
// init, stdio to logFile), moved to the agent's cgroup once found.
func (s *s3Mounts) startDaemon(ctx context.Context, c *S3MountConfig, argv []string, logFile string) (unit string, err error) {
	if s.units != nil {
		unit = unitName(c.Name)
		desc := fmt.Sprintf("nodeagent S3 mount %s (%s at %s)", c.Name, c.Bucket, c.MountPath)
		return unit, s.units.start(ctx, unit, unitProperties(desc, argv, daemonEnv(c.driver()), logFile))
	}
	daemon := argv
	if c.driver() == DriverRclone {
		daemon = append([]string{"env", "-u", "AWS_CA_BUNDLE"}, argv...)
	}
	script := `log=$1; shift; exec setsid -f "$@" >>"$log" 2>&1 </dev/null`
	start := hostexec.Cmd{Name: "sh", Args: append([]string{"-c", script, "sh", s.nsPath(logFile)}, daemon...), Timeout: 30 * time.Second}
	_, err = s.exec.Run(ctx, s.inNamespace(start))
	return "", err
}

// scratchArgs point a daemon in the agent's mount namespace at scratch
// space in stateDir (a host path): the pod's own /tmp and $HOME are gone
// once the agent pod is deleted, while the daemon keeps running.
func (s *s3Mounts) scratchArgs(c *S3MountConfig) []string {
	dir := s.nsPath(filepath.Join(s.o.StateDir, c.Name+".tmp"))
	switch c.driver() {
	case DriverS3fs:
		return []string{"-o", "tmpdir=" + dir}
	case DriverRclone:
		if c.Cache == "" {
			return []string{"--cache-dir", dir}
		}
	}
	return nil
}

func (s *s3Mounts) logTail(logFile string) string {
	b, _ := os.ReadFile(s.host.Path(logFile))
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return string(b)
}

// cgroupDir is the agent's cgroup for FUSE daemons, in every hierarchy.
const cgroupDir = "nodeagent-s3mounts"

// detachCgroup moves pid into a cgroup of the agent's own below the host
// cgroup root (v2: one tree; v1: every hierarchy), so that deleting the
// agent pod (its container cgroup) does not kill the daemon. Without
// systemd there is no transient unit; this is the path used and tested.
func (s *s3Mounts) detachCgroup(pid int) error {
	if s.o.CgroupRoot == "" {
		return nil
	}
	root := s.host.Path(s.o.CgroupRoot)
	dirs, err := cgroupHierarchies(root)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		cg := filepath.Join(d, cgroupDir)
		if err := os.Mkdir(cg, 0o755); err != nil && !os.IsExist(err) {
			errs = append(errs, err)
			continue
		}
		if err := inheritCpuset(d, cg); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	if len(dirs) == 0 {
		return fmt.Errorf("no cgroup hierarchy under %s", root)
	}
	return errors.Join(errs...)
}

// cgroupHierarchies are the hierarchies below root: root itself (v2), or
// every v1 controller directory.
func cgroupHierarchies(root string) ([]string, error) {
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err == nil {
		return []string{root}, nil // v2
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		d := filepath.Join(root, e.Name())
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			continue // cpu -> cpu,cpuacct links
		}
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			dirs = append(dirs, d)
		}
	}
	return dirs, nil
}

// removeCgroups removes the agent's daemon cgroup from every hierarchy once
// no mount is configured (rmdir: only an empty one goes; the name is the
// agent's own, nothing else is touched).
// A daemon that was just stopped keeps it busy (EBUSY) until its last
// thread has exited: retried for up to 2 s unless a live process (one with
// a command line: another agent's daemon) is in it.
func (s *s3Mounts) removeCgroups(ctx context.Context) {
	if s.o.CgroupRoot == "" {
		return
	}
	dirs, _ := cgroupHierarchies(s.host.Path(s.o.CgroupRoot))
	for _, d := range dirs {
		cg := filepath.Join(d, cgroupDir)
		for i := 0; ; i++ {
			err := os.Remove(cg)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if s.liveIn(cg) || i == 100 || !sleep(ctx, 20*time.Millisecond) {
				s.log.Info("daemon cgroup not removed", "cgroup", cg, "err", err)
				break
			}
		}
	}
}

// inheritCpuset gives a new v1 cpuset cgroup its parent's CPUs and memory
// nodes: a v1 cpuset cgroup starts with none, and refuses tasks until it has
// both. Other hierarchies have no such files.
func inheritCpuset(parent, cg string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(cg, f))
		if err != nil || len(bytes.TrimSpace(cur)) > 0 {
			continue // not a v1 cpuset, or set already
		}
		v, err := os.ReadFile(filepath.Join(parent, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(cg, f), v, 0o644); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(cg, f), err)
		}
	}
	return nil
}

// liveIn: a process in cgroup dir cg still has its command line (it is not
// on its way out).
func (s *s3Mounts) liveIn(cg string) bool {
	procs, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	for _, f := range strings.Fields(string(procs)) {
		if pid, err := strconv.Atoi(f); err == nil && len(s.cmdline(pid)) > 0 {
			return true
		}
	}
	return false
}
