// Package sockopt holds the socket options the agent's servers share.
package sockopt

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// ReusePort is a net.ListenConfig Control function that sets SO_REUSEPORT
// (and SO_REUSEADDR): during a rolling update the new agent process binds the
// same DNS addresses while the old one still serves, so DNS has no gap. Not
// for the metrics port: there two processes answering alternately make
// counters jump, so exactly one binds it (agent.listenMetrics).
func ReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
	})
	return errors.Join(err, serr)
}
