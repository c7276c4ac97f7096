package dnscache

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// schemaVerdict runs the schema rule on a presentation name under domain.
func schemaVerdict(name, domain string) bool {
	w := wireName(name)
	offs := labelOffsets(nil, w)
	o, ok := under(w, wireName(domain))
	if !ok {
		return false
	}
	return schemaRuledOut(labels(w, offs, o))
}

// TestSchemaRule: every name shape CoreDNS's kubernetes plugin can answer
// (in any pods mode, with any Services) is forwarded; the shapes it cannot
// are ruled out.
func TestSchemaRule(t *testing.T) {
	t.Parallel()
	exists := []struct{ what, name string }{
		{"the domain", "cluster.local."},
		{"svc apex", "svc.cluster.local."},
		{"pod apex", "pod.cluster.local."},
		{"namespace", "default.svc.cluster.local."},
		{"ClusterIP or ExternalName Service", "kubernetes.default.svc.cluster.local."},
		{"in upper case", "KUBERNETES.Default.SVC.Cluster.Local."},
		{"headless hostname", "web-0.nginx.default.svc.cluster.local."},
		{"headless endpoint by IPv4", "10-244-1-5.nginx.default.svc.cluster.local."},
		{"headless endpoint by IPv6", "fd00-10-244--5.nginx.default.svc.cluster.local."},
		{"endpoint that looks like a protocol", "_tcp.nginx.default.svc.cluster.local."},
		{"SRV of a named TCP port", "_http._tcp.nginx.default.svc.cluster.local."},
		{"SRV of a UDP port", "_dns._udp.kube-dns.kube-system.svc.cluster.local."},
		{"SRV of an SCTP port", "_x._sctp.s.ns.svc.cluster.local."},
		{"SRV in upper case", "_HTTP._TCP.nginx.default.svc.cluster.local."},
		{"SRV without underscores (CoreDNS strips them if present)", "http.tcp.nginx.default.svc.cluster.local."},
		{"SRV with an empty protocol (matches every protocol)", "_http._.nginx.default.svc.cluster.local."},
		{"pod namespace", "default.pod.cluster.local."},
		{"pod IPv4", "10-244-1-5.default.pod.cluster.local."},
		{"pod IPv4 with leading zeros", "010-244-001-005.default.pod.cluster.local."},
		{"pod IPv6 compressed", "fd00-10-244--5.default.pod.cluster.local."},
		{"pod IPv6 full", "2001-db8-0-0-0-0-0-1.default.pod.cluster.local."},
		{"pod IPv6 loopback", "--1.default.pod.cluster.local."},
		{"label left of a pod (CoreDNS ignores it)", "x.10-244-1-5.default.pod.cluster.local."},
		{"two labels left of a pod", "_a._b.10-244-1-5.default.pod.cluster.local."},
		{"schema version TXT", "dns-version.cluster.local."},
		{"the plugin's NS name", "ns.dns.cluster.local."},
		{"its parent", "dns.cluster.local."},
		{"other domain", "foo.example.com."},
	}
	for _, c := range exists {
		if schemaVerdict(c.name, "cluster.local") {
			t.Errorf("%s: %s ruled out, but CoreDNS may answer it", c.what, c.name)
		}
	}
	impossible := []struct{ what, name string }{
		{"ndots:5 expansion in the namespace", "s3.us-east-1.amazonaws.com.default.svc.cluster.local."},
		{"ndots:5 expansion in svc", "s3.us-east-1.amazonaws.com.svc.cluster.local."},
		{"ndots:5 expansion in the domain", "s3.us-east-1.amazonaws.com.cluster.local."},
		{"Service name expanded in the namespace", "kubernetes.default.svc.cluster.local.default.svc.cluster.local."},
		{"Service name expanded in svc", "kubernetes.default.svc.default.svc.cluster.local."},
		{"child of the domain", "foo.cluster.local."},
		{"five labels before svc", "a.b.c.d.e.svc.cluster.local."},
		{"four labels, protocol not tcp/udp/sctp", "_http._foo.nginx.default.svc.cluster.local."},
		{"pod name not an IP", "a-b-c-d.default.pod.cluster.local."},
		{"pod name of a StatefulSet", "web-0.default.pod.cluster.local."},
		{"pod name with five parts", "1-2-3-4-5.default.pod.cluster.local."},
		{"pod IPv4 out of range", "256-1-1-1.default.pod.cluster.local."},
		{"five labels before pod", "a.b.c.1-2-3-4.default.pod.cluster.local."},
		{"below dns-version", "x.dns-version.cluster.local."},
		{"below dns", "foo.dns.cluster.local."},
	}
	for _, c := range impossible {
		if !schemaVerdict(c.name, "cluster.local") {
			t.Errorf("%s: %s not ruled out", c.what, c.name)
		}
	}
}

// testLocalNX is a localNX over the zones cluster.local, corp.example and
// ".", with the cluster domain's SOA learned.
func testLocalNX(t *testing.T, mod func(*Config)) (*localNX, *nxState) {
	t.Helper()
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Zones = []ZoneConfig{{Name: "corp.example", Addresses: []string{"127.0.0.1:1"}, Protocol: ProtoUDP}}
	cfg.LocalNXDOMAIN.Domains = []string{"cluster2.local"}
	cfg.LocalNXDOMAIN.Exempt = []string{"stub.cluster.local", "broken.example"}
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st := newNXState()
	l := newLocalNX(cfg, newRouter([]string{"cluster.local", ".", "corp.example", "cluster2.local"}), st)
	if l == nil {
		return nil, st
	}
	soa := func(zone string) *dns.SOA {
		return &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 5},
			Ns: "ns.dns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: 5}
	}
	for _, z := range []string{"cluster.local.", "cluster2.local."} {
		l.observe(key(z, dns.TypeA), &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError},
			Question: []dns.Question{{Name: "nx." + z, Qtype: dns.TypeA, Qclass: dns.ClassINET}}, Ns: []dns.RR{soa(z)}}, 0, 0)
	}
	return l, st
}

// key is the cache key of name and qtype (no DO, no CD).
func key(name string, qtype uint16) []byte {
	return append(wireName(name), byte(qtype>>8), byte(qtype), 0, 1, 0)
}

// nxAt records an upstream NXDOMAIN for name (SOA of zone) at now, cached ttl.
func nxAt(l *localNX, name, zone string, ttl time.Duration, now int64) {
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + zone, Mbox: "h." + zone, Serial: 1, Minttl: 30}
	l.observe(key(name, dns.TypeAAAA), &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError},
		Question: []dns.Question{{Name: name, Qtype: dns.TypeAAAA, Qclass: dns.ClassINET}}, Ns: []dns.RR{soa}}, ttl, now)
}

// localVerdict asks l about name A (with DO when do) and returns the rule
// that answered it, "" when forwarded.
func localVerdict(t *testing.T, l *localNX, name string, do bool, now int64) string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	if do {
		m.SetEdns0(1232, true)
	}
	req, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var q query
	if qe := parseQuery(req, &q); qe != qeOK {
		t.Fatalf("parse %s: %v", name, qe)
	}
	resp, _, rule := l.answer(make([]byte, 0, 512), req, &q, protoUDP, 1232, now)
	if (resp == nil) != (rule == "") {
		t.Fatalf("%s: answer %d bytes with rule %q", name, len(resp), rule)
	}
	if resp != nil {
		r := new(dns.Msg)
		if err := r.Unpack(resp); err != nil {
			t.Fatalf("%s: local answer does not parse: %v", name, err)
		}
		if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || r.Id != m.Id {
			t.Fatalf("%s: local answer is not an NXDOMAIN with an SOA: %v", name, r)
		}
	}
	return rule
}

// TestLocalNXRules: which rule answers which name, given what the cache
// learned; forwarded cases first among equals, as they are the ones that
// must never be answered.
func TestLocalNXRules(t *testing.T) {
	t.Parallel()
	now := time.Now().UnixNano()
	learnNX := func(name, zone string) func(*localNX) {
		return func(l *localNX) { nxAt(l, name, zone, 5*time.Second, now) }
	}
	tests := []struct {
		name  string
		cfg   func(*Config)
		learn func(l *localNX)
		ask   string
		do    bool
		at    time.Duration // after now
		want  string
	}{
		{name: "schema: impossible child of the domain", ask: "com.cluster.local.", want: ruleSchema},
		{name: "schema: extra domain", ask: "com.cluster2.local.", want: ruleSchema},
		{name: "schema: possible Service forwarded", ask: "web.default.svc.cluster.local."},
		{name: "schema: not before the domain's SOA is known", cfg: func(c *Config) { c.LocalNXDOMAIN.Domains = []string{"other.local"} },
			ask: "com.other.local."},
		{name: "schema: DO forwarded", ask: "com.cluster.local.", do: true},
		{name: "schema: turned off", cfg: func(c *Config) { c.LocalNXDOMAIN.Schema = false }, ask: "com.cluster.local."},
		{name: "exempt stub zone forwarded", ask: "db.stub.cluster.local."},
		{name: "exempt name itself forwarded", ask: "stub.cluster.local."},
		{name: "ancestor of an exempt name forwarded", cfg: func(c *Config) { c.LocalNXDOMAIN.Exempt = []string{"a.b.cluster.local"} },
			ask: "b.cluster.local."},
		{name: "rfc8020: below a missing namespace", learn: learnNX("nons.svc.cluster.local.", "cluster.local."),
			ask: "web.nons.svc.cluster.local.", want: ruleRFC8020},
		{name: "rfc8020: below a missing Service", learn: learnNX("web.default.svc.cluster.local.", "cluster.local."),
			ask: "web-0.web.default.svc.cluster.local.", want: ruleRFC8020},
		{name: "rfc8020: the name itself is the cache's business", learn: learnNX("web.nons.svc.cluster.local.", "cluster.local."),
			ask: "web.nons.svc.cluster.local."},
		{name: "rfc8020: not below CoreDNS's NXDOMAIN for an endpoint named _tcp",
			learn: learnNX("_tcp.web.default.svc.cluster.local.", "cluster.local."),
			ask:   "_http._tcp.web.default.svc.cluster.local."},
		{name: "rfc8020: not below CoreDNS's NXDOMAIN for dns.<domain>",
			cfg:   func(c *Config) { c.LocalNXDOMAIN.Schema = false },
			learn: learnNX("dns.cluster.local.", "cluster.local."),
			ask:   "ns.dns.cluster.local."},
		{name: "rfc8020: not from the node zone into the cluster zone",
			learn: learnNX("local.", "."),
			ask:   "web.default.svc.cluster.local."},
		{name: "rfc8020: not from the node zone into a forwarded zone",
			learn: learnNX("example.", "."),
			ask:   "a.corp.example."},
		{name: "rfc8020: any zone", learn: learnNX("b.example.", "example."),
			ask: "x.a.b.example.", want: ruleRFC8020},
		{name: "rfc8020: in upper case", learn: learnNX("B.Example.", "example."),
			ask: "X.b.EXAMPLE.", want: ruleRFC8020},
		{name: "rfc8020: expires with the negative TTL", learn: learnNX("b.example.", "example."),
			ask: "a.b.example.", at: 5 * time.Second},
		{name: "rfc8020: NXDOMAIN not cached (TTL 0) is not remembered", learn: func(l *localNX) { nxAt(l, "b.example.", "example.", 0, now) },
			ask: "a.b.example."},
		{name: "rfc8020: a name found below since", learn: func(l *localNX) {
			nxAt(l, "b.example.", "example.", 5*time.Second, now)
			l.observe(key("c.b.example.", dns.TypeA), &dns.Msg{Question: []dns.Question{{Name: "c.b.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}},
				Answer: []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "c.b.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(192, 0, 2, 1)}}}, time.Second, now)
		}, ask: "a.b.example."},
		{name: "rfc8020: an NXDOMAIN after a CNAME is about its target", learn: func(l *localNX) {
			l.observe(key("b.example.", dns.TypeA), &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError},
				Question: []dns.Question{{Name: "b.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET}},
				Answer:   []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: "b.example.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "gone.other."}},
				Ns:       []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "other.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60}, Ns: "ns.other.", Mbox: "h.other.", Minttl: 30}}},
				5*time.Second, now)
		}, ask: "a.b.example."},
		{name: "rfc8020: not from a TXT query (CoreDNS: NXDOMAIN for TXT of a namespace that exists)", learn: func(l *localNX) {
			l.observe(key("lnx.svc.cluster.local.", dns.TypeTXT), &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError},
				Question: []dns.Question{{Name: "lnx.svc.cluster.local.", Qtype: dns.TypeTXT, Qclass: dns.ClassINET}},
				Ns:       []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "cluster.local.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 5}, Ns: "ns.dns.cluster.local.", Mbox: "h.cluster.local.", Minttl: 5}}},
				5*time.Second, now)
		}, ask: "web.lnx.svc.cluster.local."},
		{name: "rfc8020: DO forwarded", learn: learnNX("b.example.", "example."),
			ask: "a.b.example.", do: true},
		{name: "rfc8020: exempt zone", learn: learnNX("b.broken.example.", "broken.example."),
			ask: "a.b.broken.example."},
		{name: "rfc8020: turned off", cfg: func(c *Config) { c.LocalNXDOMAIN.RFC8020 = false },
			learn: learnNX("b.example.", "example."), ask: "a.b.example."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := testLocalNX(t, tc.cfg)
			if tc.learn != nil {
				tc.learn(l)
			}
			if got := localVerdict(t, l, tc.ask, tc.do, now+int64(tc.at)); got != tc.want {
				t.Fatalf("%s: rule %q, want %q", tc.ask, got, tc.want)
			}
		})
	}
	t.Run("both off", func(t *testing.T) {
		if l, _ := testLocalNX(t, func(c *Config) { c.LocalNXDOMAIN.Schema, c.LocalNXDOMAIN.RFC8020 = false, false }); l != nil {
			t.Fatal("rules built with both off")
		}
	})
}

// TestLocalNXBounded: the names remembered for RFC 8020 stay bounded.
func TestLocalNXBounded(t *testing.T) {
	t.Parallel()
	l, st := testLocalNX(t, nil)
	now := time.Now().UnixNano()
	for i := range 3 * nxIndexMax {
		nxAt(l, fmt.Sprintf("n%d.example.", i), "example.", time.Minute, now)
	}
	st.mu.RLock()
	n := len(st.names)
	st.mu.RUnlock()
	if n > nxIndexMax {
		t.Fatalf("%d names remembered, bound %d", n, nxIndexMax)
	}
}

// kubeLike answers like CoreDNS's kubernetes plugin for cluster.local (a few
// names exist, the rest NXDOMAIN with the zone's SOA, NODATA for names that
// exist with other types) and like an authoritative server for example.:
// below nx.example. NXDOMAIN, the rest A.
type kubeLike struct {
	addr string
	mu   sync.Mutex
	asks map[string]int
}

func newKubeLike(t *testing.T) *kubeLike {
	t.Helper()
	k := &kubeLike{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), asks: map[string]int{}}
	pc, err := net.ListenPacket("udp", k.addr)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(k.serve), NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() { srv.ActivateAndServe(); close(done) }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return k
}

func (k *kubeLike) count(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.asks[strings.ToLower(name)]
}

func (k *kubeLike) serve(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	k.mu.Lock()
	k.asks[name]++
	k.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	zone := "example."
	if dns.IsSubDomain("cluster.local.", name) {
		zone = "cluster.local."
	}
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 5},
		Ns: "ns.dns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: 5}
	exists := map[string]bool{"cluster.local.": true, "svc.cluster.local.": true, "default.svc.cluster.local.": true,
		"kubernetes.default.svc.cluster.local.": true}
	switch {
	case name == zone && q.Qtype == dns.TypeSOA:
		m.Answer = []dns.RR{soa}
	case zone == "cluster.local." && exists[name] && q.Qtype == dns.TypeA && name == "kubernetes.default.svc.cluster.local.":
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(10, 96, 0, 1)}}
	case zone == "cluster.local." && exists[name]:
		m.Ns = []dns.RR{soa}
	case zone == "cluster.local.", strings.HasSuffix(name, ".nx.example."):
		m.Rcode = dns.RcodeNameError
		soa.Hdr.Ttl, soa.Minttl = 60, 3
		if zone == "cluster.local." {
			soa.Hdr.Ttl, soa.Minttl = 5, 5
		}
		m.Ns = []dns.RR{soa}
	default:
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
	}
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(1232, o.Do())
	}
	w.WriteMsg(m)
}

// TestLocalNXDOMAIN runs the cache against kubeLike and checks what a client
// sees: local answers with the zone's SOA, counted, no upstream query; every
// name that exists answered by the upstream.
func TestLocalNXDOMAIN(t *testing.T) {
	t.Parallel()
	up := newKubeLike(t)
	cfg := testConfig(t, up.addr)
	cfg.ClusterDNS.Protocol, cfg.Node.Protocol = ProtoUDP, ProtoUDP
	c, _ := startCache(t, cfg)
	srv := addr(cfg)
	local := func(rule string) float64 { return testutil.ToFloat64(c.m.localNX.WithLabelValues(rule)) }

	// At start the cache asks the cluster DNS for the domain's SOA; from
	// then on impossible names are answered on the node.
	eventually(t, 5*time.Second, "the cluster domain's SOA learned", func() bool { return c.nx.soa(wireName("cluster.local")) != nil })
	if up.count("cluster.local.") != 1 {
		t.Fatalf("cluster.local. SOA asked %d times, want 1", up.count("cluster.local."))
	}
	if r := ask(t, srv, "s3.amazonaws.com.default.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("first impossible name: %s", dns.RcodeToString[r.Rcode])
	}
	if up.count("s3.amazonaws.com.default.svc.cluster.local.") != 0 || local(ruleSchema) != 1 {
		t.Fatal("first impossible name forwarded")
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, name := range []string{"s3.us-east-1.amazonaws.com.svc.cluster.local.", "S3.amazonaws.COM.cluster.local."} {
			opts := []func(*dns.Msg, *dns.Client){withEDNS(1232, false)}
			if proto == "tcp" {
				opts = append(opts, overTCP)
			}
			r := ask(t, srv, name, dns.TypeAAAA, opts...)
			if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Question[0].Name != name {
				t.Fatalf("%s over %s: %v", name, proto, r)
			}
			soa, ok := r.Ns[0].(*dns.SOA)
			if !ok || soa.Hdr.Name != "cluster.local." || soa.Hdr.Ttl == 0 || soa.Hdr.Ttl > 5 || soa.Minttl != 5 {
				t.Fatalf("%s: authority %v, want the cluster domain's SOA with TTL 1-5", name, r.Ns[0])
			}
			if r.IsEdns0() == nil || !r.RecursionAvailable || r.Authoritative {
				t.Fatalf("%s: flags or OPT wrong: %v", name, r)
			}
			if n := up.count(name); n != 0 {
				t.Fatalf("%s asked upstream %d times", name, n)
			}
		}
	}
	if v := local(ruleSchema); v != 5 {
		t.Fatalf("local_nxdomain_total{rule=schema} = %v, want 5", v)
	}
	// Names that exist go upstream, whatever their type.
	for _, q := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"kubernetes.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess},
		{"kubernetes.default.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess},
		{"default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess},
		{"svc.cluster.local.", dns.TypeA, dns.RcodeSuccess},
		{"_https._tcp.kubernetes.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeNameError}, // kubeLike has no ports
	} {
		if r := ask(t, srv, q.name, q.qtype); r.Rcode != q.rcode || up.count(q.name) == 0 {
			t.Fatalf("%s %s: %s, upstream asked %d times", q.name, dns.TypeToString[q.qtype], dns.RcodeToString[r.Rcode], up.count(q.name))
		}
	}
	// DO: forwarded.
	if ask(t, srv, "x.cluster.local.", dns.TypeA, withEDNS(1232, true)); up.count("x.cluster.local.") != 1 {
		t.Fatal("DO query answered locally")
	}

	// RFC 8020: a namespace that does not exist, then names below it.
	if r := ask(t, srv, "nons.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("nons: %s", dns.RcodeToString[r.Rcode])
	}
	r := ask(t, srv, "web.nons.svc.cluster.local.", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || up.count("web.nons.svc.cluster.local.") != 0 || local(ruleRFC8020) != 1 {
		t.Fatalf("below a cached NXDOMAIN: %s, upstream asked %d times, rfc8020 %v", dns.RcodeToString[r.Rcode], up.count("web.nons.svc.cluster.local."), local(ruleRFC8020))
	}
	// Any zone; the negative TTL counts down and ends.
	ask(t, srv, "b.nx.example.", dns.TypeA)
	r = ask(t, srv, "a.b.nx.example.", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || up.count("a.b.nx.example.") != 0 || r.Ns[0].Header().Name != "example." || r.Ns[0].Header().Ttl > 3 {
		t.Fatalf("below b.nx.example.: %v, upstream asked %d times", r, up.count("a.b.nx.example."))
	}
	time.Sleep(3100 * time.Millisecond) // the SOA minimum
	ask(t, srv, "a.b.nx.example.", dns.TypeA)
	if up.count("a.b.nx.example.") != 1 {
		t.Fatal("RFC 8020 answer outlived the NXDOMAIN it came from")
	}
}

func TestLocalNXValidate(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.LocalNXDOMAIN.Domains = []string{"ok.local", ""}
	cfg.LocalNXDOMAIN.Exempt = []string{"."}
	err := cfg.Validate()
	for _, want := range []string{`localNXDOMAIN.domains[1]: must be a domain name other than the root, got ""`,
		`localNXDOMAIN.exempt[0]: must be a domain name other than the root, got "."`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %s", err, want)
		}
	}
}
