package dnscache

import (
	"strconv"
	"sync"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric label names.
const (
	labelZone     = "zone"
	labelProto    = "proto"
	labelType     = "type"
	labelRcode    = "rcode"
	labelUpstream = "upstream"
	labelReason   = "reason"
	labelRule     = "rule"
)

// Setup error reasons.
const (
	reasonInterface = "interface"
	reasonAddress   = "address"
	reasonLinkWatch = "link_watch"
	reasonNftables  = "nftables"
	reasonIptables  = "iptables"
	reasonListen    = "listen"
	reasonService   = "service"
	reasonResolv    = "resolv_conf"
)

// Dropped request reasons.
const (
	dropMalformed = "malformed"
	dropOverload  = "overload"
)

const namespace, subsystem = "nodeagent", "dnscache"

// metrics is every collector of the feature.
type metrics struct {
	requests         *prometheus.CounterVec
	dropped          *prometheus.CounterVec
	hits             prometheus.Counter
	misses           prometheus.Counter
	stale            prometheus.Counter
	prefetches       prometheus.Counter
	coalesced        prometheus.Counter
	evictions        prometheus.CounterFunc
	entries          prometheus.GaugeFunc
	bytes            prometheus.GaugeFunc
	upstreamDuration *prometheus.HistogramVec
	upstreamHealthy  *prometheus.GaugeVec
	setupErrors      *prometheus.CounterVec
	reconciles       prometheus.Counter
	tcpConns         prometheus.Gauge
	localNX          *prometheus.CounterVec

	// counters caches requests children per (zone, type, rcode) for cache entries.
	counters sync.Map
}

type counterKey struct {
	zone  *zone
	qtype string
	rcode int
}

// requestCounters returns the requests counters (udp, tcp) for answers of
// one zone, type and rcode, shared by every cache entry that has them.
func (m *metrics) requestCounters(z *zone, qtype uint16, rcode int) *[2]prometheus.Counter {
	k := counterKey{z, typeLabel(qtype), rcode}
	if v, ok := m.counters.Load(k); ok {
		return v.(*[2]prometheus.Counter)
	}
	var c [2]prometheus.Counter
	for p := range c {
		c[p] = m.requests.WithLabelValues(zoneLabel(z), protoNames[p], k.qtype, rcodeLabel(rcode))
	}
	v, _ := m.counters.LoadOrStore(k, &c)
	return v.(*[2]prometheus.Counter)
}

func newMetrics(reg prometheus.Registerer, st func() *store) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help}
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts(opts("requests_total",
			"DNS requests answered, by zone, protocol, query type and response code.")),
			[]string{labelZone, labelProto, labelType, labelRcode}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts(opts("dropped_requests_total",
			"Packets not answered: not a query, or the server was overloaded.")), []string{labelReason}),
		hits:       prometheus.NewCounter(prometheus.CounterOpts(opts("cache_hits_total", "Queries answered from a fresh cache entry."))),
		misses:     prometheus.NewCounter(prometheus.CounterOpts(opts("cache_misses_total", "Queries that needed an upstream (no entry, or an expired one)."))),
		stale:      prometheus.NewCounter(prometheus.CounterOpts(opts("cache_stale_answers_total", "Expired entries served because the upstreams failed or were slower than cache.staleWait (RFC 8767)."))),
		prefetches: prometheus.NewCounter(prometheus.CounterOpts(opts("cache_prefetches_total", "Popular entries refreshed before expiry."))),
		coalesced:  prometheus.NewCounter(prometheus.CounterOpts(opts("cache_coalesced_total", "Misses that joined an identical upstream query already in flight."))),
		evictions: prometheus.NewCounterFunc(prometheus.CounterOpts(opts("cache_evictions_total", "Entries evicted to stay within the entry and byte bounds.")),
			func() float64 { return float64(st().evictions.Load()) }),
		entries: prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("cache_entries", "Entries in the cache.")),
			func() float64 { return float64(st().entries.Load()) }),
		bytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("cache_size_bytes", "Approximate memory held by cache entries.")),
			func() float64 { return float64(st().bytes.Load()) }),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "upstream_request_duration_seconds",
			Help:    "Duration of queries to upstreams, by upstream and response code (timeout and error for failures).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{labelUpstream, labelRcode}),
		upstreamHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("upstream_healthy",
			"1 when the upstream answers, 0 after upstream.maxFails consecutive failures until a health check passes.")), []string{labelUpstream}),
		setupErrors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("setup_errors_total",
			"Failures to ensure the interface, addresses, firewall rules, listeners or upstream discovery, by reason.")), []string{labelReason}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts(opts("setup_reconciles_total", "Times the interface and rules were re-ensured."))),
		tcpConns:   prometheus.NewGauge(prometheus.GaugeOpts(opts("tcp_connections", "Client TCP connections open (at most maxTCPConnections)."))),
		localNX: prometheus.NewCounterVec(prometheus.CounterOpts(opts("local_nxdomain_total",
			"NXDOMAIN answered on the node without asking an upstream, by rule (schema, rfc8020).")), []string{labelRule}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.dropped, m.hits, m.misses, m.stale, m.prefetches, m.coalesced,
		m.evictions, m.entries, m.bytes, m.upstreamDuration, m.upstreamHealthy, m.setupErrors, m.reconciles, m.tcpConns, m.localNX} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{reasonInterface, reasonAddress, reasonLinkWatch, reasonNftables, reasonIptables, reasonListen, reasonService, reasonResolv} {
		m.setupErrors.WithLabelValues(r)
	}
	for _, r := range []string{dropMalformed, dropOverload} {
		m.dropped.WithLabelValues(r)
	}
	for _, r := range []string{ruleSchema, ruleRFC8020} {
		m.localNX.WithLabelValues(r)
	}
	return m, nil
}

// protocols index entry.reqs.
const (
	protoUDP = 0
	protoTCP = 1
)

var protoNames = [2]string{"udp", "tcp"}

// typeLabel keeps the type label's cardinality bounded.
func typeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeCNAME, dns.TypeMX, dns.TypeNS, dns.TypePTR, dns.TypeSOA, dns.TypeSRV,
		dns.TypeTXT, dns.TypeDS, dns.TypeDNSKEY, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeCAA, dns.TypeANY, dns.TypeNAPTR:
		return dns.TypeToString[t]
	}
	return "other"
}

func rcodeLabel(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return strconv.Itoa(rc)
}

func zoneLabel(z *zone) string {
	if z == nil {
		return "none"
	}
	return z.name
}

func (m *metrics) request(z *zone, proto int, qtype uint16, rcode int) {
	m.requests.WithLabelValues(zoneLabel(z), protoNames[proto], typeLabel(qtype), rcodeLabel(rcode)).Inc()
}
