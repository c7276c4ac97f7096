package dnscache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// authServer is a small authoritative server on 127.0.0.1 (UDP and TCP)
// whose behaviour tests change while it runs.
type authServer struct {
	addr    string
	udp     *dns.Server
	tcp     *dns.Server
	queries atomic.Int64
	tcpConn atomic.Int64
	// tcpLive and maxTCPLive count the TCP connections open at once.
	tcpLive, maxTCPLive atomic.Int64
	// inflight and maxInflight count queries inside their delay at once.
	inflight, maxInflight atomic.Int64

	mu       sync.Mutex
	perName  map[string]int
	servfail map[string]bool // answer SERVFAIL for these names
	silent   bool            // answer nothing
	hold     chan struct{}   // when set, answers wait until it is closed
	delay    time.Duration
	ttl      map[string]uint32
}

// newAuthServer starts an authServer; opts adjust its TCP server before it
// starts (e.g. MaxTCPQueries).
func newAuthServer(t *testing.T, opts ...func(*dns.Server)) *authServer {
	t.Helper()
	a := &authServer{perName: map[string]int{}, servfail: map[string]bool{}, ttl: map[string]uint32{}}
	var pc net.PacketConn
	var l net.Listener
	for range 50 {
		port := 20000 + rand.IntN(40000)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		var err error
		if pc, err = net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			continue
		}
		if l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			pc.Close()
			continue
		}
		a.addr = fmt.Sprintf("127.0.0.1:%d", port)
		break
	}
	if a.addr == "" {
		t.Fatal("no free port")
	}
	h := dns.HandlerFunc(a.serve)
	a.udp = &dns.Server{PacketConn: pc, Handler: h}
	a.tcp = &dns.Server{Listener: countingListener{l, a}, Handler: h}
	for _, o := range opts {
		o(a.tcp)
	}
	started := make(chan struct{}, 2)
	a.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	a.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	var wg sync.WaitGroup
	wg.Go(func() { a.udp.ActivateAndServe() })
	wg.Go(func() { a.tcp.ActivateAndServe() })
	<-started
	<-started
	t.Cleanup(func() {
		a.udp.Shutdown()
		a.tcp.Shutdown()
		wg.Wait()
	})
	return a
}

type countingListener struct {
	net.Listener
	a *authServer
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	l.a.tcpConn.Add(1)
	n := l.a.tcpLive.Add(1)
	for m := l.a.maxTCPLive.Load(); n > m && !l.a.maxTCPLive.CompareAndSwap(m, n); m = l.a.maxTCPLive.Load() {
	}
	return &countedConn{Conn: c, live: &l.a.tcpLive}, nil
}

// countedConn counts itself out of the live connections once closed.
type countedConn struct {
	net.Conn
	live *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.live.Add(-1) })
	return c.Conn.Close()
}

// burnCPU keeps every CPU busy until the test ends: the load under which
// races between goroutines show.
func burnCPU(t *testing.T) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for x := 0; ; x++ {
				if x%1024 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
			}
		})
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
}

func (a *authServer) count(name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.perName[strings.ToLower(name)]
}

func (a *authServer) set(f func(a *authServer)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

// serve answers the test zone example. (and cluster.local.):
//
//	*.nx.example.      NXDOMAIN, SOA TTL 60, minimum 3
//	nodata.example.    NOERROR, no answer, SOA
//	big.example. TXT   about 800 bytes
//	tc.example.        always truncated, no records
//	anything else      A 192.0.2.1, TTL 300 (or a.ttl[name]), with the owner name in upstream case
func (a *authServer) serve(w dns.ResponseWriter, r *dns.Msg) {
	a.queries.Add(1)
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	a.mu.Lock()
	a.perName[name]++
	servfail, silent, delay, hold := a.servfail[name], a.silent, a.delay, a.hold
	ttl, ok := a.ttl[name]
	a.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if !ok {
		ttl = 300
	}
	if silent {
		return
	}
	n := a.inflight.Add(1)
	for m := a.maxInflight.Load(); n > m && !a.maxInflight.CompareAndSwap(m, n); m = a.maxInflight.Load() {
	}
	time.Sleep(delay)
	a.inflight.Add(-1)
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns.example.", Mbox: "h.example.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 3}
	switch {
	case servfail:
		m.Rcode = dns.RcodeServerFailure
	case strings.HasSuffix(name, ".nx.example."):
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	case name == "nodata.example.":
		m.Ns = []dns.RR{soa}
	case name == "tc.example.":
		m.Truncated = true
	case name == "big.example.":
		txt := &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl}}
		for i := range 8 {
			txt.Txt = append(txt.Txt, strings.Repeat(string(rune('a'+i)), 95))
		}
		m.Answer = []dns.RR{txt}
	case q.Qtype == dns.TypeA:
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IPv4(192, 0, 2, 1)}}
	default:
		m.Ns = []dns.RR{soa}
	}
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(4096, o.Do())
	}
	w.WriteMsg(m)
}

// handedOut holds the ports freePort has returned. The caches bind with
// SO_REUSEPORT, so two parallel tests given the same port (free when each
// checked) would silently share it and answer each other's queries.
var handedOut sync.Map

// freePort finds a port free for both UDP and TCP on 127.0.0.1, never the
// same one twice in a test binary.
func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(40000)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

// testConfig serves on 127.0.0.1 without touching interfaces or rules, with
// every zone forwarded to up.
func testConfig(t *testing.T, up string) *Config {
	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.ManageInterface = false
	cfg.Firewall.Mode = FirewallNone
	cfg.Addresses = []string{"127.0.0.1"}
	cfg.Port = freePort(t)
	cfg.ClusterDNS.Addresses = []string{up}
	cfg.Node.Addresses = []string{up}
	cfg.Upstream.Timeout = 300 * time.Millisecond
	cfg.Upstream.HealthCheckInterval = 200 * time.Millisecond
	cfg.ShutdownGrace = time.Second
	return cfg
}

func testDeps(t *testing.T) (agent.Deps, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	level := slog.LevelWarn
	if os.Getenv("DNSCACHE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return agent.Deps{
		Log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test", t.Name()),
		Metrics: reg,
		Host:    hostpath.New(t.TempDir()),
		Exec:    hostexec.Exec{},
	}, reg
}

// startCache runs a Cache until the test ends and waits until it is ready.
func startCache(t *testing.T, cfg *Config, setup ...func(*Cache)) (*Cache, *prometheus.Registry) {
	t.Helper()
	deps, reg := testDeps(t)
	c, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for c.servingErr() != nil {
		select {
		case err := <-errc:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %v", c.servingErr())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c, reg
}

func addr(cfg *Config) string { return fmt.Sprintf("%s:%d", cfg.Addresses[0], cfg.Port) }

// ask sends one query over UDP (or TCP) and returns the answer.
func ask(t *testing.T, server, name string, qtype uint16, opts ...func(*dns.Msg, *dns.Client)) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	for _, o := range opts {
		o(m, c)
	}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return r
}

func overTCP(_ *dns.Msg, c *dns.Client) { c.Net = "tcp" }

func withEDNS(size uint16, do bool) func(*dns.Msg, *dns.Client) {
	return func(m *dns.Msg, c *dns.Client) { m.SetEdns0(size, do) }
}

func withCD(m *dns.Msg, _ *dns.Client) { m.CheckingDisabled = true }

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func storeOf(st *store) func() *store { return func() *store { return st } }

// udpLoad is clients asking one query at a time each, on a socket of its
// own (its own source port), until stop; a query without a NOERROR answer
// within timeout is lost.
type udpLoad struct {
	sent, lost atomic.Int64
	refused    atomic.Int64 // of lost: nothing bound (a gap), not a slow answer
	done       chan struct{}
	wg         sync.WaitGroup
}

// startUDPLoad dials one socket per client (here, so that a test in a
// namespace can dial there) and asks name(client, i), pausing after each.
func startUDPLoad(clients int, dial func() net.Conn, name func(client, i int) string, timeout, pause time.Duration) *udpLoad {
	l := &udpLoad{done: make(chan struct{})}
	for c := range clients {
		conn := &dns.Conn{Conn: dial()}
		l.wg.Go(func() {
			defer conn.Close()
			for i := 0; ; i++ {
				select {
				case <-l.done:
					return
				default:
				}
				m := new(dns.Msg)
				m.SetQuestion(name(c, i), dns.TypeA)
				conn.SetDeadline(time.Now().Add(timeout))
				l.sent.Add(1)
				if conn.WriteMsg(m) != nil {
					l.lost.Add(1)
					continue
				}
				r, err := conn.ReadMsg()
				if err != nil || r.Rcode != dns.RcodeSuccess {
					l.lost.Add(1)
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					l.refused.Add(1)
				}
				time.Sleep(pause)
			}
		})
	}
	return l
}

// stop ends the load and waits for every client.
func (l *udpLoad) stop() {
	close(l.done)
	l.wg.Wait()
}
