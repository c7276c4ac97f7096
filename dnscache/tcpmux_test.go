package dnscache

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestTCPUpstreamClosesConnections: an upstream that closes each TCP
// connection after a few queries (as miekg's MaxTCPQueries, 128 by default,
// and CoreDNS's idle timeout do), asked for new names by many clients at
// once on busy CPUs, costs no SERVFAIL: a closed connection is never reused
// and the queries it carried are asked again on a live one. At most
// upstream.maxConns connections are open at any moment.
func TestTCPUpstreamClosesConnections(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t, func(s *dns.Server) { s.MaxTCPQueries = 10 })
	cfg := testConfig(t, up.addr)
	cfg.Node.Protocol = ProtoTCP
	// Long enough that on busy CPUs only a closed connection, the mechanism
	// under test, could fail a query, not a slow scheduler.
	cfg.Upstream.Timeout = 10 * time.Second
	var logs syncBuffer
	startCache(t, cfg, func(c *Cache) {
		c.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	burnCPU(t)

	const clients, each = 32, 60
	var servfail, failed atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			c := &dns.Client{Net: "udp", Timeout: 15 * time.Second}
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
		t.Fatalf("%d SERVFAIL and %d unanswered of %d queries, want 0; failures:\n%s", servfail.Load(), failed.Load(), clients*each, logs.grep("upstream failed"))
	}
	if up.tcpConn.Load() < clients*each/10 {
		t.Fatalf("only %d connections opened: the upstream did not close them, the test proves nothing", up.tcpConn.Load())
	}
	if n := up.maxTCPLive.Load(); n > int64(cfg.Upstream.MaxConns) {
		t.Fatalf("%d connections open at once, want at most upstream.maxConns %d", n, cfg.Upstream.MaxConns)
	}
}

// TestTCPMaxConns: a burst of queries far beyond what the connections
// pipeline opens no more than upstream.maxConns connections.
func TestTCPMaxConns(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t, func(s *dns.Server) { s.MaxTCPQueries = -1 })
	cfg := testConfig(t, up.addr)
	cfg.Upstream.Timeout = 5 * time.Second
	m, err := newMetrics(prometheus.NewRegistry(), storeOf(newStore(100, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	u := newUpstream(netip.MustParseAddrPort(up.addr), ProtoTCP, cfg.Upstream, m, slog.New(slog.DiscardHandler))
	defer u.close()
	start := make(chan struct{})
	var wg sync.WaitGroup
	var errs atomic.Int64
	for i := range 500 {
		wg.Go(func() {
			q := new(dns.Msg)
			q.SetQuestion(fmt.Sprintf("burst%d.example.", i), dns.TypeA)
			<-start
			if _, err := u.exchange(context.Background(), q); err != nil {
				errs.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := up.tcpConn.Load(); n > int64(cfg.Upstream.MaxConns) || errs.Load() != 0 {
		t.Fatalf("500 concurrent queries opened %d connections (%d failed), want at most upstream.maxConns %d and no failure", n, errs.Load(), cfg.Upstream.MaxConns)
	}
}

// TestTCPClientConnectionCap: at most maxTCPConnections client connections
// are open; a new one closes the one idle longest, and the others keep
// being answered.
func TestTCPClientConnectionCap(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t)
	cfg := testConfig(t, up.addr)
	cfg.MaxTCPConnections = 3
	c, _ := startCache(t, cfg)
	var conns []*dns.Conn
	for i := range 4 {
		dc, err := dns.DialTimeout("tcp", addr(cfg), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		conns = append(conns, dc)
		if _, err := exchangeOn(dc, fmt.Sprintf("conn%d.example.", i)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if _, err := exchangeOn(conns[0], "again.example."); err == nil {
		t.Fatal("the connection idle longest still answers beside 3 others with maxTCPConnections 3")
	}
	for i, dc := range conns[1:] {
		if _, err := exchangeOn(dc, fmt.Sprintf("again%d.example.", i)); err != nil {
			t.Fatalf("connection %d closed: %v", i+1, err)
		}
	}
	if n := testutil.ToFloat64(c.m.tcpConns); n != 3 {
		t.Fatalf("tcp_connections = %v, want 3", n)
	}
}

func exchangeOn(dc *dns.Conn, name string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	dc.SetDeadline(time.Now().Add(2 * time.Second))
	if err := dc.WriteMsg(m); err != nil {
		return nil, err
	}
	return dc.ReadMsg()
}
