package imagewarm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// systemdUnits runs the FUSE daemons as transient units of the host's
// systemd (as the Mountpoint CSI driver v1 runs mount-s3), through its
// private D-Bus socket: systemd owns their cgroup, so stopping, upgrading or
// deleting the agent pod leaves them running, and `systemctl status
// nodeagent-s3-NAME` shows them. The agent still heals them itself (the
// units have Restart=no), counting and reporting each heal.
type systemdUnits struct {
	socket string // as the agent sees it (below the host root)

	mu   sync.Mutex
	conn *sdbus.Conn
}

// unitName is the transient unit of mount name.
func unitName(mount string) string { return "nodeagent-s3-" + mount + ".service" }

// connection is the open connection, dialed anew once lost (systemd
// re-executing itself on an upgrade closes it).
func (u *systemdUnits) connection() (*sdbus.Conn, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil && u.conn.Connected() {
		return u.conn, nil
	}
	if u.conn != nil {
		u.conn.Close()
		u.conn = nil
	}
	c, err := sdbus.NewConnection(func() (*dbus.Conn, error) {
		conn, err := dbus.Dial("unix:path=" + u.socket)
		if err != nil {
			return nil, err
		}
		// The private socket is no bus: no Hello, EXTERNAL auth as our uid.
		if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	})
	if err != nil {
		return nil, fmt.Errorf("systemd at %s: %w", u.socket, err)
	}
	u.conn = c
	return c, nil
}

func (u *systemdUnits) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil {
		u.conn.Close()
		u.conn = nil
	}
}

// execStart is one ExecStart entry (D-Bus signature (sasb)): the binary,
// its argv and whether an unclean exit fails.
type execStart struct {
	Path             string
	Args             []string
	UncleanIsFailure bool
}

// unitExec runs argv on the host: the host's /bin/sh finds argv[0] on the
// unit's PATH (D-Bus takes only an absolute path, and the host's binaries
// are not visible in the agent's container) and execs it, so /proc shows
// the same command line as a daemon the agent started itself. A binary
// missing on the host is sh's "not found" in the log.
func unitExec(argv []string) execStart {
	return execStart{Path: "/bin/sh", Args: append([]string{"/bin/sh", "-c", `exec "$@"`, "sh"}, argv...), UncleanIsFailure: true}
}

// unitProperties: a service of Type=exec, output appended to logFile, no
// restart (the agent heals, and counts it), unloaded once dead so the name
// can start again.
func unitProperties(desc string, argv, env []string, logFile string) []sdbus.Property {
	return []sdbus.Property{
		sdbus.PropDescription(desc),
		sdbus.PropType("exec"),
		{Name: "ExecStart", Value: dbus.MakeVariant([]execStart{unitExec(argv)})},
		{Name: "Environment", Value: dbus.MakeVariant(env)},
		{Name: "StandardOutputFileToAppend", Value: dbus.MakeVariant(logFile)},
		{Name: "StandardErrorFileToAppend", Value: dbus.MakeVariant(logFile)},
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
}

// start starts unit and waits for its start job (done once the daemon is
// exec'd). A unit of that name still loaded (a daemon killed a moment ago,
// not yet collected) is stopped first, once.
func (u *systemdUnits) start(ctx context.Context, unit string, props []sdbus.Property) error {
	c, err := u.connection()
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		done := make(chan string, 1)
		_, err := c.StartTransientUnitContext(ctx, unit, "fail", props, done)
		if dbusErrorIs(err, "org.freedesktop.systemd1.UnitExists") && attempt == 0 {
			if err := u.stop(ctx, unit); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("systemd: start %s: %w", unit, err)
		}
		select {
		case r := <-done:
			if r != "done" {
				return fmt.Errorf("systemd: start %s: %s", unit, r)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stop stops unit and waits for it (systemd sends SIGTERM, then SIGKILL
// after its timeout); a unit not loaded is stopped already.
func (u *systemdUnits) stop(ctx context.Context, unit string) error {
	c, err := u.connection()
	if err != nil {
		return err
	}
	done := make(chan string, 1)
	if _, err := c.StopUnitContext(ctx, unit, "replace", done); err != nil {
		if dbusErrorIs(err, "org.freedesktop.systemd1.NoSuchUnit") {
			return nil
		}
		return fmt.Errorf("systemd: stop %s: %w", unit, err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	_ = c.ResetFailedUnitContext(ctx, unit) // collected already, usually
	return nil
}

// kill sends sig to every process of unit.
func (u *systemdUnits) kill(ctx context.Context, unit string, sig syscall.Signal) error {
	c, err := u.connection()
	if err != nil {
		return err
	}
	err = c.KillUnitWithTarget(ctx, unit, sdbus.All, int32(sig))
	if dbusErrorIs(err, "org.freedesktop.systemd1.NoSuchUnit") {
		return nil // gone already
	}
	return err
}

func dbusErrorIs(err error, name string) bool {
	var e dbus.Error
	return errors.As(err, &e) && e.Name == name
}

// daemonEnv is what a unit's daemon gets of the agent's environment (a
// unit inherits none): the credentials and settings the drivers read
// (AWS_*, s3fs's AWSACCESSKEYID and AWSSECRETACCESSKEY, RCLONE_*) and the
// proxy variables. rclone goes without AWS_CA_BUNDLE, as when the agent
// starts it itself.
func daemonEnv(driver string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case driver == DriverRclone && k == "AWS_CA_BUNDLE":
		case strings.HasPrefix(k, "AWS"), strings.HasPrefix(k, "RCLONE_"),
			slices.Contains([]string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}, strings.ToUpper(k)):
			env = append(env, kv)
		}
	}
	return env
}

// supervise picks how the daemons outlive the agent: systemd units when
// configured, or (auto) when the host's systemd answers on its socket;
// otherwise a cgroup of the agent's own. systemd needs the host's mount
// namespace.
func (s *s3Mounts) supervise() {
	o := s.o
	if o.Supervisor == SupervisorCgroup || o.Namespace != MountNamespaceHost {
		return
	}
	u := &systemdUnits{socket: s.host.Path(o.SystemdSocket)}
	if o.Supervisor == SupervisorAuto {
		if _, err := os.Stat(u.socket); err != nil {
			s.log.Info("no systemd socket on the host: S3 mount daemons get a cgroup of the agent's", "socket", o.SystemdSocket)
			return
		}
		if _, err := u.connection(); err != nil {
			s.log.Warn("systemd does not answer: S3 mount daemons get a cgroup of the agent's", "err", err)
			return
		}
	}
	s.units = u
	s.log.Info("S3 mount daemons run as transient systemd units", "socket", o.SystemdSocket)
}
