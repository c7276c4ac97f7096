package dnscache

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// setupError carries the reason label of a failed setup step.
type setupError struct {
	reason string
	err    error
}

func (e *setupError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// netlinkHandle opens a netlink handle in ns (or the current namespace).
func netlinkHandle(ns netns.NsHandle) (*netlink.Handle, error) {
	if ns.IsOpen() {
		return netlink.NewHandleAt(ns)
	}
	return netlink.NewHandle()
}

// interfaceAlias marks an interface the agent created (IFLA_IFALIAS, shown
// by `ip -d link` as "alias"): Teardown removes only an interface carrying
// it, never one of the same name made by someone else (node-local-dns's
// own nodelocaldns).
const interfaceAlias = "nodeagent-dnscache: created by nodeagent, removed when dnscache is disabled"

// ensureInterface makes the dummy interface exist, be up and hold addrs (as
// /32 or /128, without duplicate address detection). It reports whether it
// changed anything.
func ensureInterface(h *netlink.Handle, name, kind string, addrs []netip.Addr) (changed bool, err error) {
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		la := netlink.NewLinkAttrs()
		la.Name = name
		var l netlink.Link = &netlink.Dummy{LinkAttrs: la}
		if kind == "bridge" {
			l = &netlink.Bridge{LinkAttrs: la}
		}
		if err := h.LinkAdd(l); err != nil && !errors.Is(err, unix.EEXIST) {
			return false, &setupError{reasonInterface, fmt.Errorf("add %s %s: %w", kind, name, err)}
		}
		changed = true
		if link, err = h.LinkByName(name); err == nil {
			if err := h.LinkSetAlias(link, interfaceAlias); err != nil {
				return changed, &setupError{reasonInterface, fmt.Errorf("mark %s as the agent's: %w", name, err)}
			}
		}
	}
	if err != nil {
		return changed, &setupError{reasonInterface, fmt.Errorf("find %s: %w", name, err)}
	}
	if link.Type() != kind {
		return changed, &setupError{reasonInterface, fmt.Errorf("%s exists and is a %s interface, not %s", name, link.Type(), kind)}
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return changed, &setupError{reasonAddress, fmt.Errorf("list addresses of %s: %w", name, err)}
	}
	for _, a := range addrs {
		found := false
		for _, h := range have {
			if ip, ok := netip.AddrFromSlice(h.IP); ok && ip.Unmap() == a {
				found = true
			}
		}
		if found {
			continue
		}
		bits := a.BitLen()
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return changed, &setupError{reasonAddress, fmt.Errorf("add %s to %s: %w", a, name, err)}
		}
		changed = true
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return changed, &setupError{reasonInterface, fmt.Errorf("set %s up: %w", name, err)}
		}
		changed = true
	}
	return changed, nil
}

// removeInterface deletes the interface if it exists and the agent created
// it (it carries interfaceAlias). It reports whether one was left in place
// because it is someone else's.
func removeInterface(h *netlink.Handle, name, kind string) (foreign bool, err error) {
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if link.Attrs().Alias != interfaceAlias {
		return true, nil
	}
	if link.Type() != kind {
		return false, fmt.Errorf("%s is a %s interface, not %s: not deleting it", name, link.Type(), kind)
	}
	return false, h.LinkDel(link)
}
