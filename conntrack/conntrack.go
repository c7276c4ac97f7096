package conntrack

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nodeagent/nodeagent/agent"
)

// Name is the feature's name: config section, log attribute, metric subsystem.
const Name = "conntrack"

// Conntrack is the conntrack and ENA allowance metrics feature.
type Conntrack struct {
	cfg *Config
	log *slog.Logger
	col *collector
	dns *dnsCounter
	// lastResult is the previous pass's result, to log changes once.
	lastResult string
}

var _ agent.Feature = (*Conntrack)(nil)

// New validates cfg and registers the collector; it opens nothing.
func New(cfg *Config, deps agent.Deps) (*Conntrack, error) {
	return newIn(cfg, deps, netns.None(), "/proc")
}

// newIn builds the feature for network namespace ns (tests pass their own;
// the agent's is the host's) reading proc. The files read there
// (net/stat/nf_conntrack, sys/net/netfilter) belong to the reader's network
// namespace, not to a host path: the agent's own /proc shows the host's
// table because the agent runs in the host network, so no host mount is
// needed; tests point proc at fixture trees.
func newIn(cfg *Config, deps agent.Deps, ns netns.NsHandle, proc string) (*Conntrack, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	col := &collector{
		d: newDescs(), source: cfg.Source, proc: proc, ns: ns,
		nl: &netlinkStats{ns: ns}, log: log, now: time.Now, dnsProtos: cfg.DNSFlows.Protocols,
	}
	if cfg.ENA.Enabled {
		col.ena = newENAReader(ns, cfg.ENA)
	}
	m, err := newMetrics(deps.Metrics, col)
	if err != nil {
		return nil, fmt.Errorf("conntrack: register metrics: %w", err)
	}
	col.m = m
	c := &Conntrack{cfg: cfg, log: log, col: col}
	if cfg.DNSFlows.Enabled {
		c.dns = newDNSCounter(ns, cfg.DNSFlows)
	}
	return c, nil
}

// Name implements agent.Feature.
func (c *Conntrack) Name() string { return Name }

// Run counts the DNS flows every dnsFlows.interval until ctx is done; the
// statistics themselves are read by the collector on each scrape.
func (c *Conntrack) Run(ctx context.Context) error {
	defer c.col.nl.close()
	if c.col.ena != nil {
		defer c.col.ena.close()
	}
	// Say at once where the statistics come from, and why not netlink.
	c.col.readStats()
	if c.dns == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c.countDNS()
		t.Reset(c.cfg.DNSFlows.Interval)
	}
}

// countDNS runs one bounded counting pass and publishes its result.
func (c *Conntrack) countDNS() {
	entries, ok := c.col.tableEntries()
	result := resultOK
	var res *dnsResult
	switch {
	case !ok:
		result = resultNoTable
	case c.cfg.DNSFlows.MaxTableEntries > 0 && entries > uint64(c.cfg.DNSFlows.MaxTableEntries):
		result = resultTableTooLarge
		c.log.Debug("DNS flow count skipped: table larger than dnsFlows.maxTableEntries", "entries", entries,
			"maxTableEntries", c.cfg.DNSFlows.MaxTableEntries)
	default:
		start := time.Now()
		udp, tcp, err := c.dns.count(start.Add(c.cfg.DNSFlows.Timeout))
		if err != nil {
			result = reasonOf(err)
			c.col.m.readErrors.WithLabelValues("dns_count", result).Inc()
			if result != c.lastResult {
				c.log.Warn("DNS flow count failed; retrying every dnsFlows.interval, logged again when the reason changes",
					"reason", result, "err", err, "interval", c.cfg.DNSFlows.Interval)
			}
			break
		}
		res = &dnsResult{udp: udp, tcp: tcp, took: time.Since(start), at: time.Now()}
	}
	if result == resultOK && c.lastResult != resultOK && c.lastResult != "" {
		c.log.Info("DNS flows counted again", "previously", c.lastResult)
	}
	c.lastResult = result
	c.col.m.dnsPasses.WithLabelValues(result).Inc()
	c.col.mu.Lock()
	if res != nil {
		c.col.dns = res
	}
	// Without a fresh count the flow gauges go away rather than show old
	// figures; the last good pass's timestamp stays.
	c.col.dnsStale = res == nil
	c.col.mu.Unlock()
}
