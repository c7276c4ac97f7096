package dnscache

import (
	"log/slog"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// FuzzRequest feeds arbitrary packets through the whole request path (parse,
// cache lookup, miss handling with an upstream-less zone, answer rendering,
// truncation). Run it with:
//
//	go test ./dnscache -run '^$' -fuzz FuzzRequest -fuzztime 60s
//
// The seed corpus is the f.Add calls below plus testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	seed := func(mod func(*dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetQuestion("www.Example.com.", dns.TypeA)
		mod(m)
		b, _ := m.Pack()
		return b
	}
	f.Add(seed(func(*dns.Msg) {}), false)
	f.Add(seed(func(m *dns.Msg) { m.SetEdns0(4096, true) }), false)
	f.Add(seed(func(m *dns.Msg) { m.SetEdns0(512, false); m.CheckingDisabled = true }), true)
	f.Add(seed(func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeANY }), false)
	f.Add(seed(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), false)
	f.Add(seed(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }), false)
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}, false)
	f.Add([]byte{}, false)
	f.Add(seed(func(m *dns.Msg) { m.Question[0].Name = "s3.us-east-1.amazonaws.com.svc.cluster.local." }), false)
	f.Add(seed(func(m *dns.Msg) { m.Question[0].Name = "x.nx.example."; m.SetEdns0(512, false) }), false)

	cfg := DefaultConfig()
	st := newStore(1000, 1<<20)
	m, err := newMetrics(prometheus.NewRegistry(), storeOf(st))
	if err != nil {
		f.Fatal(err)
	}
	r := newRouter([]string{"."}) // no upstreams: misses end in SERVFAIL at once
	s := newServer(cfg, st, r, m, slog.New(slog.DiscardHandler))
	// The cluster domain's SOA and an NXDOMAIN are known, so local NXDOMAIN
	// answers (schema and RFC 8020) are rendered too.
	s.lnx = newLocalNX(cfg, r, newNXState())
	now := time.Now().UnixNano()
	nxAt(s.lnx, "cluster.local.", "cluster.local.", time.Hour, now)
	nxAt(s.lnx, "nx.example.", "example.", time.Hour, now)
	// A cached answer, so hits are rendered too.
	key := []byte("\x03www\x07example\x03com\x00\x00\x01\x00\x01\x00")
	e, err := newEntry(key, answerFor("www.example.com.", 60), 60e9, true, 0, time.Now().UnixNano())
	if err != nil {
		f.Fatal(err)
	}
	st.put(e, time.Now().UnixNano())

	f.Fuzz(func(t *testing.T, pkt []byte, tcp bool) {
		proto := protoUDP
		if tcp {
			proto = protoTCP
		}
		if len(pkt) > cfg.MaxQuerySize {
			pkt = pkt[:cfg.MaxQuerySize]
		}
		var q query
		resp, miss, expired := s.answer(pkt, proto, &q, nil)
		if miss {
			resp = s.resolve(pkt, proto, &q, expired, nil)
		}
		if resp == nil {
			return
		}
		msg := new(dns.Msg)
		if err := msg.Unpack(resp); err != nil {
			t.Fatalf("answer does not parse: %v\nquery % x\nanswer % x", err, pkt, resp)
		}
		if !msg.Response || msg.Id != uint16(pkt[0])<<8|uint16(pkt[1]) {
			t.Fatalf("answer is not a response to the query: %v", msg)
		}
		if proto == protoUDP && len(resp) > max(q.udpSize, 512) {
			t.Fatalf("UDP answer of %d bytes for a %d-byte client", len(resp), q.udpSize)
		}
	})
}
