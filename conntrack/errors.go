package conntrack

import (
	"errors"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Read error reasons.
const (
	reasonPermission  = "permission"  // no CAP_NET_ADMIN in the namespace
	reasonUnsupported = "unsupported" // no conntrack here (module not loaded, file missing, old kernel)
	reasonTimeout     = "timeout"
	reasonOther       = "error"
)

// reasonOf classifies a read error for the reason label.
func reasonOf(err error) string {
	var op *netlink.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES), errors.Is(err, os.ErrPermission):
		return reasonPermission
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EPROTONOSUPPORT),
		errors.Is(err, os.ErrNotExist), errors.Is(err, errFilterIgnored):
		return reasonUnsupported
	case errors.Is(err, unix.EAGAIN), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, errPassTimeout):
		return reasonTimeout
	}
	return reasonOther
}
