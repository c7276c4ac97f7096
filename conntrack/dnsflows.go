package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// ctnetlink constants for the filtered dump (include/uapi/linux/netfilter/
// nfnetlink_conntrack.h; CTA_FILTER since Linux 5.9).
const (
	nfnlSubsysCTNetlink = 1
	ipctnlMsgCtGet      = 1

	ctaTupleOrig  = 1
	ctaStatus     = 3
	ctaFilter     = 25
	ctaTupleProto = 2
	ctaProtoNum   = 1
	ctaProtoDPort = 3

	ctaFilterOrigFlags      = 1
	ctaFilterFlagProtoNum   = 1 << 3
	ctaFilterFlagProtoDPort = 1 << 5

	ipsSeenReply = 1 << 1 // IPS_SEEN_REPLY in CTA_STATUS

	nlaTypeMask = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

var (
	errFilterIgnored = errors.New("the kernel ignored CTA_FILTER (older than Linux 5.9): it dumped entries that do not match")
	errPassTimeout   = errors.New("counting pass timed out")
)

// dnsCount is one pass's result for one protocol.
type dnsCount struct {
	flows, unreplied uint64
}

// dnsFilterRequest builds the ctnetlink dump request for the entries whose
// original tuple is proto (IPPROTO_UDP, IPPROTO_TCP) to port, of one family:
// CTA_TUPLE_ORIG holds the values, CTA_FILTER the flags saying which of
// them to compare. The kernel only accepts tuple filters for one family
// (AF_INET or AF_INET6; AF_UNSPEC is EOPNOTSUPP) and compares ports only
// with a protocol number (ctnetlink_parse_tuple_filter), so a full count
// takes one dump per family and protocol.
func dnsFilterRequest(family uint8, proto uint8, port uint16, seq uint32) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(ctaTupleOrig, func(t *netlink.AttributeEncoder) error {
		t.Nested(ctaTupleProto, func(p *netlink.AttributeEncoder) error {
			p.Uint8(ctaProtoNum, proto)
			p.Bytes(ctaProtoDPort, binary.BigEndian.AppendUint16(nil, port))
			return nil
		})
		return nil
	})
	ae.Nested(ctaFilter, func(f *netlink.AttributeEncoder) error {
		f.Uint32(ctaFilterOrigFlags, ctaFilterFlagProtoNum|ctaFilterFlagProtoDPort)
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	// nfgenmsg: family, version (NFNETLINK_V0), resource id.
	data := append([]byte{family, 0, 0, 0}, attrs...)
	return netlink.Message{
		Header: netlink.Header{
			Length:   uint32(unix.NLMSG_HDRLEN + len(data)),
			Type:     netlink.HeaderType(nfnlSubsysCTNetlink<<8 | ipctnlMsgCtGet),
			Flags:    netlink.Request | netlink.Dump,
			Sequence: seq,
		},
		Data: data,
	}.MarshalBinary()
}

// dnsCounter counts DNS entries with filtered dumps on raw netlink sockets,
// streaming each answer through one reused buffer per socket:
// mdlayher/netlink's Conn.Receive gathers a whole multi-part dump in memory,
// which is what a bounded pass must not do. Memory is the buffers, whatever
// the table holds.
type dnsCounter struct {
	ns   netns.NsHandle
	port uint16
	// families are the families always walked; with autoIPv6, AF_INET6 is
	// added for a pass when the namespace has a global IPv6 address.
	families []uint8
	autoIPv6 bool
	protos   []uint8
	// parallel is how many walks run at once, each on its own socket.
	parallel int
	bufs     [][]byte
	// walks and took are the last pass's walks and each one's duration.
	walks []walk
	took  []time.Duration
}

// walk is one filtered dump: one family and protocol.
type walk struct{ family, proto uint8 }

func newDNSCounter(ns netns.NsHandle, cfg DNSFlowsConfig) *dnsCounter {
	d := &dnsCounter{ns: ns, port: uint16(cfg.Port), parallel: cfg.ParallelWalks}
	for _, f := range cfg.Families {
		switch f {
		case FamilyIPv6:
			d.families = append(d.families, unix.AF_INET6)
		case FamilyAuto:
			d.families = append(d.families, unix.AF_INET)
			d.autoIPv6 = true
		default:
			d.families = append(d.families, unix.AF_INET)
		}
	}
	for _, p := range cfg.Protocols {
		if p == ProtoTCP {
			d.protos = append(d.protos, unix.IPPROTO_TCP)
		} else {
			d.protos = append(d.protos, unix.IPPROTO_UDP)
		}
	}
	return d
}

// passWalks lists the walks of one pass. With families [auto] IPv6 is
// walked only when the namespace has a global (or unique local) IPv6
// address: without one no IPv6 DNS flow can reach or leave it, and two of
// the four walks of the whole table are saved.
func (d *dnsCounter) passWalks() ([]walk, error) {
	fams := d.families
	if d.autoIPv6 {
		v6, err := hasGlobalIPv6(d.ns)
		if err != nil {
			return nil, err
		}
		if v6 {
			fams = []uint8{unix.AF_INET, unix.AF_INET6}
		}
	}
	var ws []walk
	for _, f := range fams {
		for _, p := range d.protos {
			ws = append(ws, walk{f, p})
		}
	}
	return ws, nil
}

// hasGlobalIPv6 reports whether ns has an IPv6 address that is neither
// loopback nor link-local (one RTM_GETADDR dump).
func hasGlobalIPv6(ns netns.NsHandle) (bool, error) {
	h, err := vnl.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("list IPv6 addresses: %w", err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, vnl.FAMILY_V6)
	if err != nil {
		return false, fmt.Errorf("list IPv6 addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() {
			return true, nil
		}
	}
	return false, nil
}

// count runs one filtered dump per family and protocol and returns the
// counts by protocol. Each dump walks the whole table in the kernel; up to
// parallel of them run at once, each on its own socket (and so on its own
// CPU). It gives up at deadline.
func (d *dnsCounter) count(deadline time.Time) (udp, tcp dnsCount, err error) {
	ws, err := d.passWalks()
	if err != nil {
		return udp, tcp, err
	}
	workers := max(1, min(d.parallel, len(ws)))
	fds := make([]int, 0, workers)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	err = netnsrun.Run(d.ns, func() error {
		for range workers {
			fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return udp, tcp, fmt.Errorf("ctnetlink socket: %w", err)
	}
	for len(d.bufs) < workers {
		d.bufs = append(d.bufs, make([]byte, 64<<10))
	}
	counts := make([]dnsCount, len(ws))
	errs := make([]error, len(ws))
	d.walks, d.took = ws, make([]time.Duration, len(ws))
	var next atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ws) {
					return
				}
				start := time.Now()
				errs[i] = d.dump(fds[w], d.bufs[w], uint32(i+1), ws[i], &counts[i], deadline)
				d.took[i] = time.Since(start)
				if errs[i] != nil {
					next.Store(int32(len(ws))) // the pass has failed: start no more walks
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return udp, tcp, err
	}
	for i, w := range ws {
		out := &udp
		if w.proto == unix.IPPROTO_TCP {
			out = &tcp
		}
		out.flows += counts[i].flows
		out.unreplied += counts[i].unreplied
	}
	return udp, tcp, nil
}

func (d *dnsCounter) dump(fd int, buf []byte, seq uint32, w walk, out *dnsCount, deadline time.Time) error {
	req, err := dnsFilterRequest(w.family, w.proto, d.port, seq)
	if err != nil {
		return err
	}
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send dump request: %w", err)
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errPassTimeout
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		n, _, flags, _, err := unix.Recvmsg(fd, buf, nil, 0)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR) && time.Now().After(deadline):
			return errPassTimeout
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("receive dump: %w", err)
		case flags&unix.MSG_TRUNC != 0:
			return errors.New("receive dump: message larger than the buffer")
		}
		done, err := d.tally(buf[:n], w.proto, out)
		if err != nil || done {
			return err
		}
	}
}

// tally counts the conntrack entries in one read; done is true at NLMSG_DONE.
// Every entry is checked against the filter: a kernel without CTA_FILTER
// dumps everything, and then the count would be the whole table.
func (d *dnsCounter) tally(b []byte, proto uint8, out *dnsCount) (done bool, err error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, fmt.Errorf("receive dump: bad message length %d", l)
		}
		body := b[unix.NLMSG_HDRLEN:l]
		switch {
		case typ == unix.NLMSG_DONE:
			return true, nil
		case typ == unix.NLMSG_ERROR:
			if len(body) >= 4 {
				if errno := -int32(binary.NativeEndian.Uint32(body[0:4])); errno != 0 {
					return false, fmt.Errorf("dump request: %w", unix.Errno(errno))
				}
			}
		case typ>>8 == nfnlSubsysCTNetlink && len(body) >= 4:
			gotProto, port, status := entryFacts(body[4:])
			if gotProto != proto || port != d.port {
				return false, errFilterIgnored
			}
			out.flows++
			if status&ipsSeenReply == 0 {
				out.unreplied++
			}
		}
		b = b[min(nlmsgAlign(l), len(b)):]
	}
	return false, nil
}

// entryFacts reads the original tuple's protocol and destination port and
// the status bits of one entry's attributes.
func entryFacts(attrs []byte) (proto uint8, port uint16, status uint32) {
	walkAttrs(attrs, func(typ uint16, v []byte) {
		switch typ {
		case ctaTupleOrig:
			walkAttrs(v, func(typ uint16, v []byte) {
				if typ != ctaTupleProto {
					return
				}
				walkAttrs(v, func(typ uint16, v []byte) {
					switch {
					case typ == ctaProtoNum && len(v) >= 1:
						proto = v[0]
					case typ == ctaProtoDPort && len(v) >= 2:
						port = binary.BigEndian.Uint16(v)
					}
				})
			})
		case ctaStatus:
			if len(v) >= 4 {
				status = binary.BigEndian.Uint32(v)
			}
		}
	})
	return proto, port, status
}

// walkAttrs calls fn for each netlink attribute in b. It is the allocation-
// free walk of the hot path (once per DNS entry); mdlayher/netlink's
// AttributeDecoder would allocate a decoder per nesting level and entry.
func walkAttrs(b []byte, fn func(typ uint16, v []byte)) {
	for len(b) >= unix.NLA_HDRLEN {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < unix.NLA_HDRLEN || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:4])&nlaTypeMask, b[unix.NLA_HDRLEN:l])
		b = b[min(nlaAlign(l), len(b)):]
	}
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func nlaAlign(n int) int   { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }
