package dnscache

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestTCPUpstreamClosesConnections: an upstream that closes each TCP
// connection after a few queries (as miekg's MaxTCPQueries, 128 by default,
// and CoreDNS's idle timeout do), asked for new names by many clients at
// once on busy CPUs, costs no SERVFAIL: a closed connection is never reused
// and the queries it carried are asked again on a live one.
func TestTCPUpstreamClosesConnections(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t, func(s *dns.Server) { s.MaxTCPQueries = 10 })
	cfg := testConfig(t, up.addr)
	cfg.Node.Protocol = ProtoTCP
	cfg.Upstream.Timeout = 2 * time.Second
	startCache(t, cfg)
	burnCPU(t)

	const clients, each = 32, 60
	var servfail, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			for j := range each {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("c%d-%d.example.", i, j), dns.TypeA)
				r, _, err := c.Exchange(m, addr(cfg))
				switch {
				case err != nil:
					failed.Add(1)
				case r.Rcode == dns.RcodeServerFailure:
					servfail.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d queries over %d upstream connections (at most %d at once)", clients*each, up.tcpConn.Load(), up.maxTCPLive.Load())
	if servfail.Load() != 0 || failed.Load() != 0 {
		t.Fatalf("%d SERVFAIL and %d unanswered of %d queries, want 0", servfail.Load(), failed.Load(), clients*each)
	}
	if up.tcpConn.Load() < clients*each/10 {
		t.Fatalf("only %d connections opened: the upstream did not close them, the test proves nothing", up.tcpConn.Load())
	}
}
