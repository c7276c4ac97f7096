package conntrack

import (
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// enaCounterNames are the ENA driver's allowance statistics (ethtool -S),
// in metric order. conntrack_allowance_available is a level, the rest count
// packets dropped since the driver loaded.
var enaCounterNames = []string{
	"bw_in_allowance_exceeded",
	"bw_out_allowance_exceeded",
	"pps_allowance_exceeded",
	"conntrack_allowance_exceeded",
	"linklocal_allowance_exceeded",
	"conntrack_allowance_available",
}

const enaAvailable = 5 // index of conntrack_allowance_available

// enaStats is one interface's allowance counters.
type enaStats struct {
	iface string
	vals  [6]uint64
	has   [6]bool
}

// enaAllowances picks the allowance counters out of an interface's ethtool
// statistics; ok is false when it has none (not an ENA interface, or a
// driver too old to report them).
func enaAllowances(iface string, st map[string]uint64) (s enaStats, ok bool) {
	s.iface = iface
	for i, name := range enaCounterNames {
		if v, found := st[name]; found {
			s.vals[i], s.has[i], ok = v, true, true
		}
	}
	return s, ok
}

// enaReader reads the allowance counters of the interfaces whose driver is
// one of drivers, through the ETHTOOL_GSTATS ioctl (safchain/ethtool). The
// interface list is refreshed at most every enaRefresh, so a scrape costs
// three ioctls per ENA interface and nothing for the other (veth) ones.
type enaReader struct {
	ns      netns.NsHandle
	drivers []string
	match   *regexp.Regexp

	mu        sync.Mutex
	et        *ethtool.Ethtool
	targets   []string
	refreshed time.Time
}

const enaRefresh = time.Minute

func newENAReader(ns netns.NsHandle, cfg ENAConfig) *enaReader {
	r := &enaReader{ns: ns, drivers: cfg.Drivers}
	if cfg.Interfaces != "" {
		r.match = regexp.MustCompile(cfg.Interfaces) // checked by Validate
	}
	return r
}

// read returns the allowance counters of every matching interface that has
// them. Interfaces without them are skipped without error.
func (r *enaReader) read(now time.Time) ([]enaStats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.et == nil {
		if err := netnsrun.Run(r.ns, func() (err error) { r.et, err = ethtool.NewEthtool(); return err }); err != nil {
			return nil, fmt.Errorf("ethtool socket: %w", err)
		}
	}
	if r.targets == nil || now.Sub(r.refreshed) >= enaRefresh {
		if err := r.discover(); err != nil {
			return nil, err
		}
		r.refreshed = now
	}
	var out []enaStats
	var firstErr error
	for _, iface := range r.targets {
		st, err := r.et.Stats(iface)
		if err != nil {
			// Gone since discovery: look again on the next scrape.
			r.targets = nil
			if firstErr == nil {
				firstErr = fmt.Errorf("ethtool stats of %s: %w", iface, err)
			}
			continue
		}
		if s, ok := enaAllowances(iface, st); ok {
			out = append(out, s)
		}
	}
	return out, firstErr
}

// discover lists the interfaces and keeps those of a wanted driver.
func (r *enaReader) discover() error {
	h, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	r.targets = r.targets[:0:0]
	for _, l := range links {
		name := l.Attrs().Name
		if r.match != nil && !r.match.MatchString(name) {
			continue
		}
		drv, err := r.et.DriverName(name)
		if err != nil || !slices.Contains(r.drivers, drv) {
			continue // no ethtool driver info (lo, bridges): not ENA
		}
		r.targets = append(r.targets, name)
	}
	return nil
}

func (r *enaReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.et != nil {
		r.et.Close()
		r.et = nil
	}
}
