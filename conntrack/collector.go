package conntrack

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"
)

// sourceNone: neither ctnetlink nor /proc gave the statistics.
const sourceNone = "none"

// collector reads the table statistics and the ENA counters on every
// scrape, and exports the last DNS counting pass. A scrape never dumps the
// table and never runs a command.
type collector struct {
	d      *descs
	source string // config: auto, netlink, procfs
	proc   string // the agent's own /proc: its netns files are the host's
	ns     netns.NsHandle
	nl     *netlinkStats
	ena    enaSource // nil when disabled
	m      *metrics
	// dnsProtos are the protocols the DNS pass counts (dnsFlows.protocols).
	dnsProtos []string
	log       *slog.Logger
	now       func() time.Time

	mu       sync.Mutex
	last     string // source of the previous scrape, to log changes once
	dns      *dnsResult
	dnsStale bool // the last pass failed or was skipped: flows not exported
}

// enaSource reads the ENA allowance counters (enaReader; tests use fixtures).
type enaSource interface {
	read(now time.Time) ([]enaStats, error)
	close()
}

// dnsResult is the outcome of the last successful DNS counting pass.
type dnsResult struct {
	udp, tcp dnsCount
	took     time.Duration
	at       time.Time
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { c.d.describe(ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	s, ok := c.readStats()
	src := sourceNone
	if ok {
		src = s.source
		ch <- prometheus.MustNewConstMetric(c.d.entries, prometheus.GaugeValue, float64(s.entries))
		if s.limit > 0 {
			ch <- prometheus.MustNewConstMetric(c.d.limit, prometheus.GaugeValue, float64(s.limit))
			ch <- prometheus.MustNewConstMetric(c.d.ratio, prometheus.GaugeValue, float64(s.entries)/float64(s.limit))
		}
		for i := range s.counters {
			if s.has[i] {
				ch <- prometheus.MustNewConstMetric(c.d.counters[i], prometheus.CounterValue, float64(s.counters[i]))
			}
		}
		for name, v := range s.other {
			ch <- prometheus.MustNewConstMetric(c.d.other, prometheus.CounterValue, float64(v), name)
		}
	}
	for _, name := range []string{SourceNetlink, SourceProcfs, sourceNone} {
		v := 0.0
		if name == src {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.d.source, prometheus.GaugeValue, v, name)
	}
	if c.ena != nil {
		c.collectENA(ch)
	}
	ch <- prometheus.MustNewConstMetric(c.d.readDuration, prometheus.GaugeValue, time.Since(start).Seconds())

	c.mu.Lock()
	r, stale := c.dns, c.dnsStale
	c.mu.Unlock()
	if r != nil && !stale {
		for _, p := range c.dnsProtos {
			n := r.udp
			if p == ProtoTCP {
				n = r.tcp
			}
			ch <- prometheus.MustNewConstMetric(c.d.dnsFlows, prometheus.GaugeValue, float64(n.flows), p)
			ch <- prometheus.MustNewConstMetric(c.d.dnsUnreplied, prometheus.GaugeValue, float64(n.unreplied), p)
		}
	}
	if r != nil {
		ch <- prometheus.MustNewConstMetric(c.d.dnsDuration, prometheus.GaugeValue, r.took.Seconds())
		ch <- prometheus.MustNewConstMetric(c.d.dnsLast, prometheus.GaugeValue, float64(r.at.UnixNano())/1e9)
	}
}

// readStats reads from ctnetlink, falling back to /proc (source auto). It
// logs once whenever the source changes, saying why.
func (c *collector) readStats() (stats, bool) {
	var s stats
	var nlErr, procErr error
	if c.source != SourceProcfs {
		if s, nlErr = c.nl.read(); nlErr == nil {
			c.settle(SourceNetlink, nil, nil)
			return s, true
		}
		c.m.readErrors.WithLabelValues(SourceNetlink, reasonOf(nlErr)).Inc()
	}
	if c.source != SourceNetlink {
		if s, procErr = readProcStat(c.proc, c.ns); procErr == nil {
			c.settle(SourceProcfs, nlErr, nil)
			return s, true
		}
		c.m.readErrors.WithLabelValues(SourceProcfs, reasonOf(procErr)).Inc()
	}
	c.settle(sourceNone, nlErr, procErr)
	return s, false
}

func (c *collector) settle(src string, nlErr, procErr error) {
	c.mu.Lock()
	changed := c.last != src
	c.last = src
	c.mu.Unlock()
	if !changed {
		return
	}
	switch src {
	case SourceNetlink:
		c.log.Info("reading conntrack statistics over ctnetlink")
	case SourceProcfs:
		if nlErr != nil {
			c.log.Warn("ctnetlink not usable, reading /proc/net/stat/nf_conntrack instead", "reason", reasonOf(nlErr), "err", nlErr,
				"hint", hint(reasonOf(nlErr)))
		} else {
			c.log.Info("reading conntrack statistics from /proc/net/stat/nf_conntrack")
		}
	default:
		c.log.Warn("no conntrack statistics readable in this network namespace", "netlinkErr", errString(nlErr), "procErr", errString(procErr),
			"hint", "is nf_conntrack loaded, and does a rule in this namespace use it?")
	}
}

func hint(reason string) string {
	switch reason {
	case reasonPermission:
		return "ctnetlink needs CAP_NET_ADMIN (the chart adds it when conntrack is enabled)"
	case reasonUnsupported:
		return "nf_conntrack_netlink is not loaded"
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (c *collector) collectENA(ch chan<- prometheus.Metric) {
	list, err := c.ena.read(c.now())
	if err != nil {
		c.m.readErrors.WithLabelValues("ethtool", reasonOf(err)).Inc()
	}
	for _, s := range list {
		for i := range s.vals {
			if !s.has[i] {
				continue
			}
			t := prometheus.CounterValue
			if i == enaAvailable {
				t = prometheus.GaugeValue
			}
			ch <- prometheus.MustNewConstMetric(c.d.ena[i], t, float64(s.vals[i]), s.iface)
		}
	}
}

// tableEntries is the table's current entry count, for the DNS pass budget:
// one ctnetlink round trip, or the nf_conntrack_count sysctl.
func (c *collector) tableEntries() (uint64, bool) {
	if c.source != SourceProcfs {
		if n, err := c.nl.entries(); err == nil {
			return n, true
		}
	}
	if n, err := readCount(c.proc, c.ns); err == nil {
		return n, true
	}
	return 0, false
}
