package dnscache

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/nodeagent/nodeagent/agent/config"
)

// Local NXDOMAIN answers: names that cannot exist are answered on the node,
// with the zone's SOA (learned from a real upstream answer) in the authority
// section so that clients cache them per RFC 2308. Two rules, both only on a
// cache miss and never for queries with DO or CD set (the cache does not
// validate, so it cannot hand out the NSEC proofs a validator needs):
//
//   - schema: under a Kubernetes cluster domain the only names are those of
//     the DNS schema that CoreDNS's kubernetes plugin answers (see
//     schemaRuledOut);
//   - rfc8020: below a name the cache holds an unexpired NXDOMAIN for, nothing
//     exists (RFC 8020), in every zone, with the remaining negative TTL.

// Rule label values of local_nxdomain_total.
const (
	ruleSchema  = "schema"
	ruleRFC8020 = "rfc8020"
)

// nxIndexMax bounds the names remembered as NXDOMAIN for the RFC 8020 cut.
const nxIndexMax = 10000

// localNX holds the rules of one instance (from its config) and the state
// they share with an instance that takes over (nxState).
type localNX struct {
	schema  bool
	rfc8020 bool
	domains [][]byte // schema domains, lowercased wire form
	exempt  [][]byte // exempt names, lowercased wire form
	zones   []wireZone
	policy  ttlPolicy
	st      *nxState
}

// wireZone is a router zone by its wire name, longest first.
type wireZone struct {
	wire []byte
	z    *zone
}

// nxState is what the rules learn from upstream answers: the names answered
// NXDOMAIN (until their negative TTL ends) and the SOA of each schema domain.
type nxState struct {
	mu    sync.RWMutex
	names map[string]nxName // lowercased wire name
	soas  map[string]*soaWire
}

type nxName struct {
	expire int64 // unix nanoseconds
	soa    *soaWire
}

// soaWire is a packed SOA record (owner uncompressed) ready to append to an
// answer, with where its TTL sits.
type soaWire struct {
	b      []byte
	ttlOff int
	// negTTL is the negative TTL it gives: min(TTL, MINIMUM), RFC 2308.
	negTTL uint32
}

func newNXState() *nxState {
	return &nxState{names: map[string]nxName{}, soas: map[string]*soaWire{}}
}

// newLocalNX builds the rules of cfg over the router's zones; it returns nil
// when both rules are off.
func newLocalNX(cfg *Config, r *router, st *nxState) *localNX {
	lc := cfg.LocalNXDOMAIN
	if !lc.Schema && !lc.RFC8020 {
		return nil
	}
	l := &localNX{schema: lc.Schema, rfc8020: lc.RFC8020, policy: ttlPolicy{}.fromConfig(cfg.Cache), st: st}
	// The schema domains are known even with the schema rule off: they
	// limit where the RFC 8020 cut applies (see cutAllowed).
	for _, d := range append([]string{cfg.ClusterDNS.Domain}, lc.Domains...) {
		l.domains = append(l.domains, wireName(d))
	}
	for _, e := range lc.Exempt {
		l.exempt = append(l.exempt, wireName(e))
	}
	for _, z := range r.zones { // longest first
		l.zones = append(l.zones, wireZone{wire: wireName(z.name), z: z})
	}
	return l
}

// wireName is the lowercased wire form of a (valid) domain name.
func wireName(s string) []byte {
	b := make([]byte, 256)
	n, err := dns.PackDomainName(dns.CanonicalName(s), b, 0, nil, false)
	if err != nil {
		return []byte{0}
	}
	return b[:n]
}

// wireToName is the presentation form of a wire name.
func wireToName(w []byte) string {
	n, _, err := dns.UnpackDomainName(w, 0)
	if err != nil {
		return "."
	}
	return n
}

// labelOffsets appends the offset of every label of the wire name w (the
// last one is the root's, len(w)-1).
func labelOffsets(dst []int, w []byte) []int {
	for off := 0; off < len(w); off += int(w[off]) + 1 {
		dst = append(dst, off)
		if w[off] == 0 {
			break
		}
	}
	return dst
}

// under reports whether the wire name w is n or below it, and at which
// offset n starts in w.
func under(w, n []byte) (int, bool) {
	if len(n) > len(w) {
		return 0, false
	}
	o := len(w) - len(n)
	if string(w[o:]) != string(n) || !onBoundary(w, o) {
		return 0, false
	}
	return o, true
}

// exempted reports whether w is an exempt name, below one, or above one (an
// empty non-terminal of an exempt name exists).
func (l *localNX) exempted(w []byte) bool {
	for _, e := range l.exempt {
		if _, below := under(w, e); below {
			return true
		}
		if _, above := under(e, w); above {
			return true
		}
	}
	return false
}

// onBoundary reports whether a label of the wire name w starts at offset o.
func onBoundary(w []byte, o int) bool {
	for off := 0; off < len(w); off += int(w[off]) + 1 {
		if off == o {
			return true
		}
		if w[off] == 0 {
			break
		}
	}
	return false
}

// labels returns the labels of w before offset end (lowercase), left to right.
func labels(w []byte, offs []int, end int) [][]byte {
	var out [][]byte
	for _, o := range offs {
		if o >= end {
			break
		}
		out = append(out, w[o+1:o+1+int(w[o])])
	}
	return out
}

// schemaDomain returns the longest schema domain w is in, and where it starts.
func (l *localNX) schemaDomain(w []byte) (int, bool) {
	best, found := len(w)+1, false
	for _, d := range l.domains {
		if o, ok := under(w, d); ok && o < best {
			best, found = o, true
		}
	}
	return best, found
}

// schemaRuledOut reports whether the name with labels ls before a cluster
// domain cannot exist under CoreDNS's kubernetes plugin (v1.11, parse.go,
// kubernetes.go), whatever its pods mode and the Services and Pods there
// are. It errs on the side of forwarding: every name it rules out is one the
// plugin answers NXDOMAIN for (or hands to the next plugin with fallthrough,
// which is what exempt names are for).
//
//	<d>, svc.<d>, pod.<d>           exist (the plugin answers NODATA)
//	dns-version.<d>                 TXT of the schema version
//	dns.<d>, ns.dns.<d>             the plugin's own NS name
//	<ns>.svc.<d>, <svc>.<ns>.svc.<d>, <endpoint>.<svc>.<ns>.svc.<d>   may exist
//	<port>.<proto>.<svc>.<ns>.svc.<d>   only with proto tcp, udp or sctp (or
//	                                    empty), each with or without "_"
//	<ns>.pod.<d>                    may exist
//	[x.[y.]]<pod>.<ns>.pod.<d>      only when <pod> is an IP with dashes: four
//	                                parts for IPv4, else IPv6 with "-" for ":"
//	                                (the plugin ignores labels left of <pod>)
//	anything else                   cannot exist
func schemaRuledOut(ls [][]byte) bool {
	k := len(ls)
	if k == 0 {
		return false
	}
	switch last := string(ls[k-1]); {
	case last == "svc":
		switch m := k - 1; {
		case m <= 3:
			return false
		case m == 4:
			proto := strings.TrimPrefix(string(ls[1]), "_")
			return proto != "" && proto != "tcp" && proto != "udp" && proto != "sctp"
		default:
			return true
		}
	case last == "pod":
		switch m := k - 1; {
		case m <= 1:
			return false
		case m <= 4:
			return !podIP(string(ls[k-3]))
		default:
			return true
		}
	case k == 1 && (last == "dns-version" || last == "dns"):
		return false
	case k == 2 && last == "dns" && string(ls[0]) == "ns":
		return false
	}
	return true
}

// podIP reports whether a pod label is an IP the way CoreDNS reads it: with
// exactly three dashes and no "--" an IPv4 address (leading zeros allowed, as
// older Go versions parsed them), otherwise an IPv6 address with "-" for ":".
func podIP(s string) bool {
	if strings.Count(s, "-") == 3 && !strings.Contains(s, "--") {
		for _, p := range strings.Split(s, "-") {
			if len(p) == 0 || len(p) > 3 {
				return false
			}
			v := 0
			for _, c := range p {
				if c < '0' || c > '9' {
					return false
				}
				v = v*10 + int(c-'0')
			}
			if v > 255 {
				return false
			}
		}
		return true
	}
	return net.ParseIP(strings.ReplaceAll(s, "-", ":")) != nil
}

// cutAllowed reports whether an NXDOMAIN for an ancestor under a cluster
// domain (ls: its labels before the domain) may stand for everything below it. CoreDNS
// breaks RFC 8020 in two places of its schema: <endpoint>.<svc>.<ns>.svc is
// NXDOMAIN for endpoint "_tcp" while _http._tcp.<svc>.<ns>.svc exists, and
// dns.<d> is NXDOMAIN while ns.dns.<d> exists.
func cutAllowed(ls [][]byte) bool {
	k := len(ls)
	if k == 0 {
		return false
	}
	switch last := string(ls[k-1]); {
	case last == "svc":
		return k-1 <= 2
	case k == 1 && last == "dns":
		return false
	}
	return true
}

// answer returns a local NXDOMAIN for q (raw query req) appended to out, and
// the rule that gave it, or nil when the query must be forwarded.
func (l *localNX) answer(out, req []byte, q *query, proto int, udpSize int, now int64) ([]byte, *zone, string) {
	if q.do || q.cd {
		return nil, nil, ""
	}
	w := q.key[:len(q.key)-5]
	var offBuf [128]int
	offs := labelOffsets(offBuf[:0], w)
	if l.exempted(w) {
		return nil, nil, ""
	}
	var z *zone
	zoneOff := len(w) - 1 // the root
	for _, wz := range l.zones {
		if o, ok := under(w, wz.wire); ok {
			z, zoneOff = wz.z, o
			break
		}
	}
	dOff, inDomain := l.schemaDomain(w)
	if l.schema && inDomain {
		if soa := l.st.soa(w[dOff:]); soa != nil && schemaRuledOut(labels(w, offs, dOff)) {
			ttl := uint32(clampTTL(time.Duration(soa.negTTL)*time.Second, l.policy.min, l.policy.denial) / time.Second)
			if resp := appendNX(out, req, q, soa, ttl, proto, udpSize); resp != nil {
				return resp, z, ruleSchema
			}
			return nil, nil, ""
		}
	}
	if !l.rfc8020 {
		return nil, nil, ""
	}
	// Strict ancestors inside the query's zone (an NXDOMAIN from another
	// zone's upstreams says nothing about this one) and below the cluster
	// domain, longest first.
	var dls [][]byte
	if inDomain {
		dls = labels(w, offs, dOff)
	}
	for i, o := range offs[1:] {
		if o >= zoneOff || inDomain && o >= dOff {
			break
		}
		if inDomain && !cutAllowed(dls[i+1:]) {
			continue
		}
		n, ok := l.st.nx(w[o:], now)
		if !ok {
			continue
		}
		ttl := uint32((n.expire - now + int64(time.Second) - 1) / int64(time.Second))
		if resp := appendNX(out, req, q, n.soa, ttl, proto, udpSize); resp != nil {
			return resp, z, ruleRFC8020
		}
		return nil, nil, ""
	}
	return nil, nil, ""
}

// localNXDOMAIN answers a miss locally when a rule rules its name out, and
// counts it; nil means forward.
func (s *server) localNXDOMAIN(out, req []byte, q *query, proto int, now int64) []byte {
	if s.lnx == nil {
		return nil
	}
	resp, z, rule := s.lnx.answer(out, req, q, proto, s.cfg.UDPBufferSize, now)
	if resp != nil {
		s.m.localNX.WithLabelValues(rule).Inc()
		s.m.request(z, proto, q.qtype, dns.RcodeNameError)
	}
	return resp
}

// askSchemaSOAs asks the cluster DNS once for the SOA of each schema domain
// whose SOA is not known yet, so that the schema rule answers from a pod's
// first lookup on; the SOA still comes from a real answer (observe learns it
// from the answer section). On failure the first negative answer teaches it.
func (s *server) askSchemaSOAs() {
	if s.lnx == nil || !s.lnx.schema {
		return
	}
	for _, d := range s.lnx.domains {
		if z := s.r.route(dns.CanonicalName(wireToName(d))); z == nil || len(z.upstreams()) == 0 || s.lnx.st.soa(d) != nil || s.bgCtx.Err() != nil {
			continue // no upstream yet (a SERVFAIL would be cached), or known
		}
		key := append(append([]byte(nil), d...), byte(dns.TypeSOA>>8), byte(dns.TypeSOA), 0, classIN, 0)
		s.sf.Do(string(key), func() (any, error) { return s.fetch(key) })
	}
}

// appendNX writes an NXDOMAIN answer to q with soa (its TTL set to ttl) in
// the authority section, or returns nil when it would not fit a UDP client.
func appendNX(out, req []byte, q *query, soa *soaWire, ttl uint32, proto, udpSize int) []byte {
	dst := append(out[:0], req[:headerLen]...)
	dst[2] = flagQR | req[2]&flagRD
	dst[3] = flagRA | dns.RcodeNameError
	binary.BigEndian.PutUint16(dst[4:], 1)
	binary.BigEndian.PutUint16(dst[6:], 0)
	binary.BigEndian.PutUint16(dst[8:], 1)
	binary.BigEndian.PutUint16(dst[10:], 0)
	dst = append(dst, req[headerLen:headerLen+q.qlen+4]...)
	start := len(dst)
	dst = append(dst, soa.b...)
	binary.BigEndian.PutUint32(dst[start+soa.ttlOff:], ttl)
	if q.edns {
		dst = appendOPT(dst, udpSize, false, 0)
	}
	if len(dst) > q.udpLimit(proto, udpSize) {
		return nil
	}
	return dst
}

func (st *nxState) soa(domain []byte) *soaWire {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.soas[string(domain)]
}

func (st *nxState) nx(name []byte, now int64) (nxName, bool) {
	st.mu.RLock()
	n, ok := st.names[string(name)]
	st.mu.RUnlock()
	return n, ok && now < n.expire
}

// observe learns from an upstream answer r to key (cached for ttl): an
// NXDOMAIN to an A or AAAA query with an SOA and no answer records (a
// CNAME's NXDOMAIN is about its target) is remembered for the RFC 8020 cut
// until it expires; a
// NOERROR answer removes the name and its ancestors from it; a negative
// answer whose SOA is a schema domain's teaches that domain's SOA.
func (l *localNX) observe(key []byte, r *dns.Msg, ttl time.Duration, now int64) {
	if r == nil || len(r.Answer) > 0 && r.Rcode != dns.RcodeSuccess {
		return
	}
	w := key[:len(key)-5]
	switch r.Rcode {
	case dns.RcodeSuccess:
		if len(r.Answer) == 0 {
			l.learnSOA(w, r.Ns)
		} else if r.Question[0].Qtype == dns.TypeSOA {
			l.learnSOA(w, r.Answer)
		}
		l.st.forget(w)
	case dns.RcodeNameError:
		soa := l.learnSOA(w, r.Ns)
		// Only NXDOMAINs for addresses count: CoreDNS answers a TXT query
		// for a namespace or svc.<d> NXDOMAIN while the name exists.
		if qt := r.Question[0].Qtype; soa == nil || ttl <= 0 || !l.rfc8020 || qt != dns.TypeA && qt != dns.TypeAAAA {
			return
		}
		l.st.remember(w, nxName{expire: now + int64(ttl), soa: soa})
	}
}

// learnSOA packs the first SOA of rrs; when its owner is a schema domain that
// w is in, it becomes that domain's SOA.
func (l *localNX) learnSOA(w []byte, rrs []dns.RR) *soaWire {
	var soa *dns.SOA
	for _, rr := range rrs {
		if s, ok := rr.(*dns.SOA); ok {
			soa = s
			break
		}
	}
	if soa == nil {
		return nil
	}
	sw := packSOA(soa)
	if sw == nil {
		return nil
	}
	owner := wireName(soa.Hdr.Name)
	for _, d := range l.domains {
		if string(owner) == string(d) {
			if _, ok := under(w, d); ok {
				l.st.mu.Lock()
				l.st.soas[string(d)] = sw
				l.st.mu.Unlock()
			}
		}
	}
	return sw
}

func packSOA(soa *dns.SOA) *soaWire {
	c := *soa
	c.Hdr.Name = dns.CanonicalName(c.Hdr.Name)
	b := make([]byte, dns.Len(&c)+16)
	n, err := dns.PackRR(&c, b, 0, nil, false)
	if err != nil {
		return nil
	}
	ownerLen, err := skipName(b[:n], 0)
	if err != nil {
		return nil
	}
	return &soaWire{b: b[:n], ttlOff: ownerLen + 4, negTTL: min(soa.Hdr.Ttl, soa.Minttl)}
}

// remember stores an NXDOMAIN name; at the bound it drops expired names,
// then any tenth of them.
func (st *nxState) remember(w []byte, n nxName) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.names) >= nxIndexMax {
		now := time.Now().UnixNano()
		for k, v := range st.names {
			if now >= v.expire {
				delete(st.names, k)
			}
		}
		for k := range st.names {
			if len(st.names) < nxIndexMax*9/10 {
				break
			}
			delete(st.names, k)
		}
	}
	st.names[string(w)] = n
}

// forget removes w and its ancestors: a name that exists proves them.
func (st *nxState) forget(w []byte) {
	st.mu.RLock()
	empty := len(st.names) == 0
	st.mu.RUnlock()
	if empty {
		return
	}
	var offBuf [128]int
	offs := labelOffsets(offBuf[:0], w)
	st.mu.Lock()
	for _, o := range offs {
		delete(st.names, string(w[o:]))
	}
	st.mu.Unlock()
}

// LocalNXConfig turns the local NXDOMAIN rules on and off.
type LocalNXConfig struct {
	// Schema answers NXDOMAIN for names under the cluster domain (and
	// Domains) that the Kubernetes DNS schema rules out.
	Schema bool `yaml:"schema"`
	// Domains are more domains served by CoreDNS's kubernetes plugin.
	Domains []string `yaml:"domains"`
	// Exempt names, the names below them and their ancestors are always
	// forwarded: names that a CoreDNS rewrite, stub zone or other plugin
	// serves under the cluster domain, or a zone whose servers answer
	// NXDOMAIN for names that have children (which breaks RFC 8020).
	Exempt []string `yaml:"exempt"`
	// RFC8020 answers NXDOMAIN below a name the cache holds an unexpired
	// NXDOMAIN for, in every zone.
	RFC8020 bool `yaml:"rfc8020"`
}

func (c LocalNXConfig) validate(errs *config.Errors) {
	for _, l := range []struct {
		key   string
		names []string
	}{{"localNXDOMAIN.domains", c.Domains}, {"localNXDOMAIN.exempt", c.Exempt}} {
		for i, n := range l.names {
			if _, ok := dns.IsDomainName(n); !ok || n == "" || n == "." {
				errs.Addf(fmt.Sprintf("%s[%d]", l.key, i), "must be a domain name other than the root, got %q", n)
			}
		}
	}
}
