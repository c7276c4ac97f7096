// Command benchupstream is the benchmark's upstream: an authoritative server
// that answers every A query with one record (TTL -ttl), over UDP and TCP,
// so that cache misses (every name new) measure the cache, not a resolver.
// A TXT query for queries.bench. answers how many other queries it has
// answered, and one for PREFIX.queries.bench. how many of those were for
// names whose first label is PREFIX followed by digits (pop17.bench...), so
// the benchmark can tell how many went past a cache.
//
// With -max-tcp-queries N it closes each TCP connection after N queries
// (miekg/dns's MaxTCPQueries; 0 is its default, 128). A TXT query for
// tcp.conns.bench. answers "OPENED MAX": the TCP connections accepted, and
// the most open at once since the previous such query.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/miekg/dns"
)

func main() {
	listen := flag.String("listen", "127.0.0.2:53", "address to serve on (UDP and TCP)")
	ttl := flag.Uint("ttl", 300, "TTL of every answer")
	maxTCPQueries := flag.Int("max-tcp-queries", 0, "close a TCP connection after this many queries (0: miekg/dns's default, 128; -1: never)")
	flag.Parse()
	var conns connCounter

	var answered atomic.Int64
	var byPrefix sync.Map // prefix -> *atomic.Int64
	count := func(prefix string) *atomic.Int64 {
		if c, ok := byPrefix.Load(prefix); ok {
			return c.(*atomic.Int64)
		}
		c, _ := byPrefix.LoadOrStore(prefix, new(atomic.Int64))
		return c.(*atomic.Int64)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeTXT && r.Question[0].Name == "tcp.conns.bench." {
			m.Answer = []dns.RR{&dns.TXT{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
				Txt: []string{conns.report()},
			}}
			w.WriteMsg(m)
			return
		}
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeTXT && strings.HasSuffix(r.Question[0].Name, "queries.bench.") {
			n := answered.Load()
			if p, ok := strings.CutSuffix(r.Question[0].Name, ".queries.bench."); ok {
				n = count(p).Load()
			}
			m.Answer = []dns.RR{&dns.TXT{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
				Txt: []string{strconv.FormatInt(n, 10)},
			}}
			w.WriteMsg(m)
			return
		}
		answered.Add(1)
		if len(r.Question) == 1 {
			label := r.Question[0].Name
			if i := strings.IndexByte(label, '.'); i >= 0 {
				label = label[:i]
			}
			count(strings.TrimRight(label, "0123456789")).Add(1)
		}
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: uint32(*ttl)},
				A:   net.IPv4(192, 0, 2, 1),
			}}
		}
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(1232, o.Do())
		}
		w.WriteMsg(m)
	})
	errc := make(chan error, 2)
	udp := &dns.Server{Addr: *listen, Net: "udp", Handler: h, ReusePort: true}
	go func() { errc <- udp.ListenAndServe() }()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchupstream:", err)
		os.Exit(1)
	}
	tcp := &dns.Server{Listener: countingListener{l, &conns}, Handler: h, MaxTCPQueries: *maxTCPQueries}
	go func() { errc <- tcp.ActivateAndServe() }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "benchupstream:", err)
		os.Exit(1)
	case <-sig:
	}
}

// connCounter counts TCP connections: accepted, open, the most open at once.
type connCounter struct {
	mu                 sync.Mutex
	opened, open, peak int
}

func (c *connCounter) report() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := fmt.Sprintf("%d %d", c.opened, c.peak)
	c.peak = c.open
	return s
}

type countingListener struct {
	net.Listener
	c *connCounter
}

func (l countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return conn, err
	}
	l.c.mu.Lock()
	l.c.opened++
	l.c.open++
	l.c.peak = max(l.c.peak, l.c.open)
	l.c.mu.Unlock()
	return &countedConn{Conn: conn, c: l.c}, nil
}

type countedConn struct {
	net.Conn
	c    *connCounter
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.c.mu.Lock()
		c.c.open--
		c.c.mu.Unlock()
	})
	return c.Conn.Close()
}
