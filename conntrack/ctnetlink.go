package conntrack

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/vishvananda/netns"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// ctnetlink message types (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtGetStatsCPU  = 4 // IPCTNL_MSG_CT_GET_STATS_CPU
	ipctnlMsgExpGetStatsCPU = 3 // IPCTNL_MSG_EXP_GET_STATS_CPU
)

// netlinkStats reads the table statistics over ctnetlink. ti-mo/conntrack
// decodes the global stats (entries, limit) fully; its per-CPU Stats drops
// the attributes newer kernels added (CTA_STATS_CLASH_RESOLVE,
// CTA_STATS_CHAIN_TOOLONG), so the per-CPU dumps are sent on ti-mo/netfilter
// and every attribute is decoded here.
type netlinkStats struct {
	mu   sync.Mutex
	ct   *ct.Conn
	nf   *netfilter.Conn
	ns   netns.NsHandle
	open bool
}

func (n *netlinkStats) dial() error {
	if n.open {
		return nil
	}
	err := netnsrun.Run(n.ns, func() error {
		c, err := ct.Dial(nil)
		if err != nil {
			return err
		}
		f, err := netfilter.Dial(nil)
		if err != nil {
			c.Close()
			return err
		}
		n.ct, n.nf = c, f
		return nil
	})
	if err != nil {
		return fmt.Errorf("ctnetlink socket: %w", err)
	}
	n.open = true
	return nil
}

// close releases the sockets; read opens them again.
func (n *netlinkStats) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closeLocked()
}

func (n *netlinkStats) closeLocked() {
	if n.open {
		n.ct.Close()
		n.nf.Close()
		n.open = false
	}
}

// entries asks for the global stats only.
func (n *netlinkStats) entries() (uint64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.dial(); err != nil {
		return 0, err
	}
	g, err := n.ct.StatsGlobal()
	if err != nil {
		n.closeLocked()
		return 0, err
	}
	return uint64(g.Entries), nil
}

// read does three round trips: global stats, per-CPU stats, expect stats.
func (n *netlinkStats) read() (stats, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := stats{source: SourceNetlink}
	if err := n.dial(); err != nil {
		return s, err
	}
	g, err := n.ct.StatsGlobal()
	if err != nil {
		n.closeLocked()
		return s, fmt.Errorf("IPCTNL_MSG_CT_GET_STATS: %w", err)
	}
	s.entries, s.limit = uint64(g.Entries), uint64(g.MaxEntries)
	cpu, err := n.query(netfilter.NFSubsysCTNetlink, ipctnlMsgCtGetStatsCPU)
	if err != nil {
		n.closeLocked()
		return s, fmt.Errorf("IPCTNL_MSG_CT_GET_STATS_CPU: %w", err)
	}
	if err := decodeCPUStats(&s, cpu, 0); err != nil {
		return s, err
	}
	exp, err := n.query(netfilter.NFSubsysCTNetlinkExp, ipctnlMsgExpGetStatsCPU)
	if err != nil {
		n.closeLocked()
		return s, fmt.Errorf("IPCTNL_MSG_EXP_GET_STATS_CPU: %w", err)
	}
	if err := decodeCPUStats(&s, exp, firstExpect); err != nil {
		return s, err
	}
	return s, nil
}

func (n *netlinkStats) query(sub netfilter.SubsystemID, typ netfilter.MessageType) ([]netlink.Message, error) {
	req, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: sub, MessageType: typ, Family: netfilter.ProtoUnspec,
		Flags: netlink.Request | netlink.Dump,
	}, nil)
	if err != nil {
		return nil, err
	}
	return n.nf.Query(req)
}

// decodeCPUStats adds every CTA_STATS_* attribute of msgs (one message per
// CPU) to s: attribute type t is counterDefs[base+t-1]; types past the known
// ones go to s.other as "attr_<t>" (or "exp_attr_<t>").
func decodeCPUStats(s *stats, msgs []netlink.Message, base int) error {
	limit := firstExpect
	prefix := "attr_"
	if base == firstExpect {
		limit, prefix = nCounters-firstExpect, "exp_attr_"
	}
	for _, m := range msgs {
		_, attrs, err := netfilter.UnmarshalNetlink(m)
		if err != nil {
			return fmt.Errorf("decode stats: %w", err)
		}
		for _, a := range attrs {
			if len(a.Data) != 4 {
				continue
			}
			v := uint64(a.Uint32())
			if t := int(a.Type); t >= 1 && t <= limit {
				s.add(base+t-1, v)
			} else {
				s.addOther(prefix+strconv.Itoa(t), v)
			}
		}
	}
	return nil
}
