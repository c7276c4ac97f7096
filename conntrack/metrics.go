package conntrack

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names.
const (
	labelSource    = "source"
	labelReason    = "reason"
	labelProto     = "proto"
	labelResult    = "result"
	labelInterface = "interface"
	labelStat      = "stat"
)

// DNS counting pass results.
const (
	resultOK            = "ok"
	resultTableTooLarge = "table_too_large"
	resultNoTable       = "no_table"
)

const namespace, subsystem = "nodeagent", "conntrack"

func fqName(name string) string { return prometheus.BuildFQName(namespace, subsystem, name) }

// descs are the descriptions of everything the collector exports on a scrape.
type descs struct {
	entries, limit, ratio  *prometheus.Desc
	counters               [nCounters]*prometheus.Desc
	other                  *prometheus.Desc
	source                 *prometheus.Desc
	readDuration           *prometheus.Desc
	dnsFlows, dnsUnreplied *prometheus.Desc
	dnsDuration, dnsLast   *prometheus.Desc
	ena                    [6]*prometheus.Desc
}

func newDescs() *descs {
	d := &descs{
		entries: prometheus.NewDesc(fqName("entries"),
			"Entries in the conntrack table of the agent's network namespace (the host's).", nil, nil),
		limit: prometheus.NewDesc(fqName("entries_limit"),
			"Most entries the table may hold (nf_conntrack_max); past it new flows are dropped.", nil, nil),
		ratio: prometheus.NewDesc(fqName("utilization_ratio"),
			"entries / entries_limit: at 1 the kernel drops new flows, UDP DNS first.", nil, nil),
		other: prometheus.NewDesc(fqName("other_stat_total"),
			"Per-CPU conntrack counters, summed, that this build has no name for, by the kernel's name.", []string{labelStat}, nil),
		source: prometheus.NewDesc(fqName("stats_source"),
			"1 for where this scrape read the table statistics: netlink (ctnetlink), procfs (/proc/net/stat/nf_conntrack) or none (neither readable: see read_errors_total).",
			[]string{labelSource}, nil),
		readDuration: prometheus.NewDesc(fqName("stats_read_duration_seconds"),
			"Time this scrape took to read the table statistics and the ENA counters.", nil, nil),
		dnsFlows: prometheus.NewDesc(fqName("dns_flows"),
			"Entries to the DNS port (dnsFlows.port), by protocol, at the last counting pass.", []string{labelProto}, nil),
		dnsUnreplied: prometheus.NewDesc(fqName("dns_flows_unreplied"),
			"Entries to the DNS port that have seen no reply (queries unanswered so far), by protocol, at the last counting pass.", []string{labelProto}, nil),
		dnsDuration: prometheus.NewDesc(fqName("dns_count_duration_seconds"),
			"How long the last DNS counting pass took (filtered kernel dumps).", nil, nil),
		dnsLast: prometheus.NewDesc(fqName("dns_count_last_success_timestamp_seconds"),
			"When the DNS flows were last counted (Unix time).", nil, nil),
	}
	for i, c := range counterDefs {
		d.counters[i] = prometheus.NewDesc(fqName(c.name+"_total"), c.help, nil, nil)
	}
	enaHelp := [6]string{
		"Packets queued or dropped because the instance's inbound bandwidth allowance was exceeded (ENA).",
		"Packets queued or dropped because the instance's outbound bandwidth allowance was exceeded (ENA).",
		"Packets dropped because the instance's packets-per-second allowance was exceeded (ENA).",
		"Packets dropped because the instance's tracked-connections allowance was exceeded (ENA): new flows, DNS too, fail.",
		"Packets to link-local services (the VPC DNS resolver, IMDS, time sync) dropped above 1024 packets/s per interface (ENA): DNS throttling.",
		"Tracked connections the instance can still open before it reaches its conntrack allowance (ENA).",
	}
	for i, name := range enaCounterNames {
		n := "ena_" + name + "_total"
		if i == enaAvailable {
			n = "ena_" + name
		}
		d.ena[i] = prometheus.NewDesc(fqName(n), enaHelp[i], []string{labelInterface}, nil)
	}
	return d
}

func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{d.entries, d.limit, d.ratio, d.other, d.source, d.readDuration,
		d.dnsFlows, d.dnsUnreplied, d.dnsDuration, d.dnsLast} {
		ch <- x
	}
	for _, x := range d.counters {
		ch <- x
	}
	for _, x := range d.ena {
		ch <- x
	}
}

// metrics are the feature's own counters (not read from the kernel).
type metrics struct {
	readErrors *prometheus.CounterVec
	dnsPasses  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, col prometheus.Collector) (*metrics, error) {
	m := &metrics{
		readErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "read_errors_total",
			Help: "Failed reads, by source (netlink, procfs, ethtool, dns_count) and reason (permission: no CAP_NET_ADMIN; unsupported: no conntrack here; timeout; error).",
		}, []string{labelSource, labelReason}),
		dnsPasses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "dns_count_passes_total",
			Help: "DNS counting passes, by result: ok, table_too_large (skipped: more entries than dnsFlows.maxTableEntries), no_table, permission, unsupported, timeout, error.",
		}, []string{labelResult}),
	}
	for _, c := range []prometheus.Collector{m.readErrors, m.dnsPasses, col} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
