package dnscache

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// Root tests run in a throwaway network namespace each and use the real
// kernel: netlink, nftables or iptables, conntrack.

func needRoot(t *testing.T, bins ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, netlink, nftables); run dnscache/hack/prereqs.sh and the tests as root")
	}
	for _, b := range append([]string{"ip"}, bins...) {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s in PATH (dnscache/hack/prereqs.sh installs it)", b)
		}
	}
}

// runInNS builds a Cache from cfg and deps, runs it in ns and waits until it
// is ready. stop cancels Run and returns its error.
func runInNS(t *testing.T, cfg *Config, deps agent.Deps, ns *testNS) (stop func() error) {
	t.Helper()
	c, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	c.ns = ns.handle
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-errc })
		return runErr
	}
	// Registered after newTestNS's clean-up, so it runs before the namespace
	// handle is closed, also when the test stops at a t.Fatal before calling
	// stop. Without it the cache outlived the test on a closed handle, whose
	// fd number the process soon reused (netns.Get of the host namespace in
	// netnsrun.Run): the leaked cache then made its interface in the host's
	// namespace (a stale host nodelocaldns, found by e2e's clean-state check).
	t.Cleanup(func() { stop() })
	eventually(t, 10*time.Second, "ready", func() bool { return c.Ready() == nil })
	return stop
}

// testNS is a named namespace (so that `ip netns exec` reaches it) with lo up.
type testNS struct {
	name   string
	handle netns.NsHandle
}

func newTestNS(t *testing.T) *testNS {
	t.Helper()
	name := fmt.Sprintf("dnsc-%d-%d", os.Getpid(), rand.IntN(1<<20))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open netns %s: %v", name, err)
	}
	n := &testNS{name: name, handle: ns}
	t.Cleanup(func() {
		ns.Close()
		exec.Command("ip", "netns", "del", name).Run()
	})
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return n
}

// run runs a command inside the namespace.
func (n *testNS) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

func (n *testNS) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.run(t, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// dial opens a socket inside the namespace.
func (n *testNS) dial(t *testing.T, network, address string) net.Conn {
	t.Helper()
	var c net.Conn
	err := netnsrun.Run(n.handle, func() error {
		var err error
		c, err = net.DialTimeout(network, address, 2*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveUDP serves up's zone on address inside the namespace (a control
// server without NOTRACK rules) until the returned stop is called. It logs
// each query it reads and what writing its answer returned, so that a lost
// answer shows whether it was read and written (stop waits for the
// handlers, so none logs after the test).
func (n *testNS) serveUDP(t *testing.T, address string, up *authServer) (stop func()) {
	t.Helper()
	var srv *dns.Server
	if err := netnsrun.Run(n.handle, func() error {
		pc, err := net.ListenPacket("udp", address)
		srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			t.Logf("control server %s: read %s from %s", w.LocalAddr(), r.Question[0].Name, w.RemoteAddr())
			up.serve(loggedWriter{w, t}, r)
		})}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { srv.ActivateAndServe() })
	return func() { srv.Shutdown(); wg.Wait() }
}

// loggedWriter logs what writing an answer returned.
type loggedWriter struct {
	dns.ResponseWriter
	t *testing.T
}

func (w loggedWriter) WriteMsg(m *dns.Msg) error {
	err := w.ResponseWriter.WriteMsg(m)
	w.t.Logf("control server %s: wrote the answer to %s for %s: err %v", w.LocalAddr(), w.RemoteAddr(), m.Question[0].Name, err)
	return err
}

// evidence logs the namespace's state for a lost packet: its conntrack
// flows and statistics (insert_failed, drop, clash_resolve), the kernel's
// IP, UDP and ICMP counters (discards, no route, no port, buffer errors),
// the addresses and local routes, the sockets with their queues, and the
// host's per-CPU backlog drops (second column of softnet_stat).
func (n *testNS) evidence(t *testing.T) {
	t.Helper()
	for _, c := range [][]string{
		{"conntrack", "-L"}, {"conntrack", "-S"}, {"cat", "/proc/net/snmp6"},
		{"ip", "addr"}, {"ip", "-6", "route", "show", "table", "local"},
		{"ss", "-uanm"}, {"cat", "/proc/net/softnet_stat"},
	} {
		out, err := n.run(t, c...)
		if c[1] == "/proc/net/snmp6" { // the counters that are not 0
			var keep []string
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) == 2 && f[1] != "0" {
					keep = append(keep, l)
				}
			}
			out = strings.Join(keep, "\n")
		}
		t.Logf("%s (err %v):\n%s", strings.Join(c, " "), err, out)
	}
}

// monitor records the namespace's link, address and route events with
// their times (ip -ts monitor) until the returned stop ends it and returns
// them.
func (n *testNS) monitor(t *testing.T) (stop func() string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("ip", "-n", n.name, "-ts", "monitor", "link", "address", "route")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Logf("ip monitor: %v", err)
		return func() string { return "" }
	}
	return sync.OnceValue(func() string {
		cmd.Process.Kill()
		cmd.Wait()
		return out.String()
	})
}

// query asks address (inside the namespace) for name over network.
func (n *testNS) query(t *testing.T, network, address, name string) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Conn{Conn: n.dial(t, network, address)}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if err := c.WriteMsg(m); err != nil {
		return nil, err
	}
	return c.ReadMsg()
}

// waitLocalRoute waits until the kernel routes addr to this host. An IPv6
// address is listed (and can be bound) at once, but its local route is
// added later by the addrconf work queue, which a loaded machine runs late:
// until then a packet to it is routed away and lost (a query to the new
// address timed out after 2 s in 8 of 30 runs under load).
func (n *testNS) waitLocalRoute(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 10*time.Second, "the local route of "+addr, func() bool {
		out, err := n.run(t, "ip", "-6", "route", "show", "table", "local", addr)
		return err == nil && strings.Contains(out, "local "+addr)
	})
}

// nsExec runs the cache's host commands (iptables) inside the namespace.
type nsExec struct{ ns string }

func (e nsExec) Run(ctx context.Context, c hostexec.Cmd) ([]byte, error) {
	c.Args = append([]string{"netns", "exec", e.ns, c.Name}, c.Args...)
	c.Name = "ip"
	return hostexec.Exec{}.Run(ctx, c)
}

func rootConfig(t *testing.T, ns *testNS, up *authServer) *Config {
	cfg := DefaultConfig()
	cfg.Enabled = true
	cfg.ReconcileInterval = time.Second
	cfg.ClusterDNS.Addresses = []string{up.addr}
	cfg.Node.Addresses = []string{up.addr}
	cfg.Upstream.Timeout = 500 * time.Millisecond
	cfg.ShutdownGrace = time.Second
	cfg.InterfaceType = linkKind(t, ns)
	return cfg
}

// linkKind is dummy where the kernel has the driver, else a port-less bridge
// (some VM kernels are built without CONFIG_DUMMY). It probes inside the
// test's namespace: a root test never touches the host's.
func linkKind(t *testing.T, ns *testNS) string {
	h, err := netlink.NewHandleAt(ns.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = fmt.Sprintf("dnscprobe%d", rand.IntN(1000))
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: la}); err != nil {
		t.Logf("no dummy interfaces on this kernel (%v): using a bridge", err)
		return "bridge"
	}
	if l, err := h.LinkByName(la.Name); err == nil {
		h.LinkDel(l)
	}
	return "dummy"
}

// TestRootInterfaceAndRules: the interface and nftables rules are created,
// re-created after being deleted by hand, answer on the link-local address,
// keep its queries out of conntrack, outlive Run, and go with Teardown.
func TestRootInterfaceAndRules(t *testing.T) {
	needRoot(t, "nft", "conntrack")
	ns := newTestNS(t)
	up := newAuthServer(t)
	cfg := rootConfig(t, ns, up)
	srv := "169.254.20.10:53"

	deps, _ := testDeps(t)
	stop := runInNS(t, cfg, deps, ns)

	for _, network := range []string{"udp", "tcp"} {
		if r, err := ns.query(t, network, srv, "a.example."); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s query: %v %v", network, err, r)
		}
	}
	rules := ns.mustRun(t, "nft", "list", "table", "inet", cfg.Firewall.Table)
	for _, want := range []string{"notrack", "accept", "169.254.20.10", "priority raw", "udp dport 53", "tcp sport 53"} {
		if !strings.Contains(rules, want) {
			t.Fatalf("rules lack %q:\n%s", want, rules)
		}
	}

	t.Run("no conntrack entries for the cache's address", func(t *testing.T) {
		// Conntrack only tracks in a namespace once a rule uses it.
		ns.mustRun(t, "nft", "add table ip ctprobe; add chain ip ctprobe in { type filter hook input priority 0; }; add rule ip ctprobe in ct state new,established accept")
		// A control server on a second address without NOTRACK.
		ns.mustRun(t, "ip", "addr", "add", "169.254.20.11/32", "dev", cfg.InterfaceName)
		defer ns.serveUDP(t, "169.254.20.11:53", up)()
		for i := range 5 {
			for _, network := range []string{"udp", "tcp"} {
				if _, err := ns.query(t, network, srv, fmt.Sprintf("ct%d.example.", i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := ns.query(t, "udp", "169.254.20.11:53", "control.example."); err != nil {
			t.Fatal(err)
		}
		out := ns.mustRun(t, "conntrack", "-L")
		if !strings.Contains(out, "169.254.20.11") {
			t.Fatalf("control flow not tracked, so the check proves nothing:\n%s", out)
		}
		// Only DNS flows count: the kernel's own IGMP reports from the
		// address (a bridge joins multicast groups) are tracked too.
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "169.254.20.10") && strings.Contains(line, "port=53 ") {
				t.Fatalf("conntrack has DNS entries for the cache's address:\n%s", out)
			}
		}
		ns.mustRun(t, "ip", "addr", "del", "169.254.20.11/32", "dev", cfg.InterfaceName)
	})

	t.Run("interface deleted by hand is re-created", func(t *testing.T) {
		ns.mustRun(t, "ip", "link", "del", cfg.InterfaceName)
		eventually(t, 5*time.Second, "interface back", func() bool {
			out, err := ns.run(t, "ip", "-br", "addr", "show", "dev", cfg.InterfaceName)
			return err == nil && strings.Contains(out, "169.254.20.10")
		})
		// The sockets bound before still serve the address.
		if r, err := ns.query(t, "udp", srv, "after-link.example."); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("query after re-creation: %v", err)
		}
	})
	t.Run("address deleted by hand is re-added", func(t *testing.T) {
		ns.mustRun(t, "ip", "addr", "del", "169.254.20.10/32", "dev", cfg.InterfaceName)
		eventually(t, 5*time.Second, "address back", func() bool {
			out, err := ns.run(t, "ip", "-br", "addr", "show", "dev", cfg.InterfaceName)
			return err == nil && strings.Contains(out, "169.254.20.10")
		})
	})
	t.Run("rules deleted by hand are re-created", func(t *testing.T) {
		ns.mustRun(t, "nft", "delete", "table", "inet", cfg.Firewall.Table)
		eventually(t, 5*time.Second, "table back", func() bool {
			out, err := ns.run(t, "nft", "list", "table", "inet", cfg.Firewall.Table)
			return err == nil && strings.Count(out, "notrack") == 6
		})
		// A rule removed from a chain is noticed too.
		out := ns.mustRun(t, "nft", "-a", "list", "chain", "inet", cfg.Firewall.Table, "filter-input")
		var handle string
		for _, l := range strings.Split(out, "\n") {
			if i := strings.Index(l, "# handle "); i >= 0 && strings.Contains(l, "accept") {
				handle = strings.TrimSpace(l[i+len("# handle "):])
			}
		}
		ns.mustRun(t, "nft", "delete", "rule", "inet", cfg.Firewall.Table, "filter-input", "handle", handle)
		eventually(t, 5*time.Second, "rule back", func() bool {
			out, err := ns.run(t, "nft", "list", "chain", "inet", cfg.Firewall.Table, "filter-input")
			return err == nil && strings.Count(out, "accept") == 2
		})
	})

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := ns.run(t, "nft", "list", "table", "inet", cfg.Firewall.Table); err != nil {
		t.Fatal("stopping Run removed the rules")
	}
	if out, err := ns.run(t, "ip", "-br", "addr", "show", "dev", cfg.InterfaceName); err != nil || !strings.Contains(out, "169.254.20.10") {
		t.Fatal("stopping Run removed the interface")
	}
	if err := teardown(context.Background(), cfg, deps, ns.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.run(t, "nft", "list", "table", "inet", cfg.Firewall.Table); err == nil {
		t.Fatal("Teardown left the table")
	}
	if _, err := ns.run(t, "ip", "link", "show", cfg.InterfaceName); err == nil {
		t.Fatal("Teardown left the interface")
	}
	if err := teardown(context.Background(), cfg, deps, ns.handle); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
}

// TestRootIptablesMode: the same rules through iptables, re-created when
// deleted by hand, removed by Teardown.
func TestRootIptablesMode(t *testing.T) {
	needRoot(t, "iptables", "iptables-save")
	ns := newTestNS(t)
	up := newAuthServer(t)
	cfg := rootConfig(t, ns, up)
	cfg.Firewall.Mode = FirewallIptables
	deps, _ := testDeps(t)
	deps.Exec = nsExec{ns.name}
	stop := runInNS(t, cfg, deps, ns)
	count := func() int {
		out, _ := ns.run(t, "iptables-save")
		return strings.Count(out, cfg.Firewall.Table)
	}
	if n := count(); n != 10 {
		t.Fatalf("%d tagged rules, want 10", n)
	}
	if r, err := ns.query(t, "udp", "169.254.20.10:53", "ipt.example."); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("query: %v", err)
	}
	ns.mustRun(t, "iptables", "-t", "raw", "-D", "PREROUTING", "-p", "udp", "-d", "169.254.20.10", "--dport", "53",
		"-m", "comment", "--comment", cfg.Firewall.Table, "-j", "NOTRACK")
	eventually(t, 5*time.Second, "rule back", func() bool { return count() == 10 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 10 {
		t.Fatalf("stopping Run left %d rules, want 10", n)
	}
	if err := teardown(context.Background(), cfg, deps, ns.handle); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("Teardown left %d rules", n)
	}
}

// TestRootRestartKeepsAnswering: a second process-like instance starts on the
// same address (SO_REUSEPORT), the first one stops under load, and no query
// goes unanswered.
func TestRootRestartKeepsAnswering(t *testing.T) {
	needRoot(t)
	ns := newTestNS(t)
	up := newAuthServer(t)
	cfg := rootConfig(t, ns, up)
	cfg.Firewall.Mode = FirewallNone
	srv := "169.254.20.10:53"

	start := func() func() error {
		deps, _ := testDeps(t)
		stop := runInNS(t, cfg, deps, ns)
		return stop
	}
	stopOld := start()

	// Load: 8 clients, each with its own socket (source port), one query
	// in flight at a time, 1s timeout.
	load := startUDPLoad(8, func() net.Conn { return ns.dial(t, "udp", srv) },
		func(c, i int) string { return fmt.Sprintf("r%d.example.", (c*7+i)%50) }, time.Second, time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	stopNew := start()
	time.Sleep(200 * time.Millisecond)
	if err := stopOld(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	load.stop()
	if err := stopNew(); err != nil {
		t.Fatal(err)
	}
	sent, lost := load.sent.Load(), load.lost.Load()
	t.Logf("restart under load: %d queries, %d lost", sent, lost)
	if sent < 1000 {
		t.Fatalf("only %d queries sent", sent)
	}
	if lost > 0 {
		t.Fatalf("%d of %d queries lost across the restart", lost, sent)
	}
}

// TestRootIPv6: an IPv6 address served beside the link-local IPv4 one, in
// both firewall modes: the address is added without DAD (so it serves at
// once), answers over UDP and TCP, gets its NOTRACK and accept rules, its
// queries stay out of conntrack while a control address's are tracked, and
// Teardown removes the rules.
func TestRootIPv6(t *testing.T) {
	const v6, ctrl6 = "fd00:53::10", "fd00:53::11"
	for _, mode := range []string{FirewallNftables, FirewallIptables} {
		t.Run(mode, func(t *testing.T) {
			bins := []string{"nft", "conntrack"}
			if mode == FirewallIptables {
				bins = []string{"nft", "conntrack", "ip6tables", "ip6tables-save"}
			}
			needRoot(t, bins...)
			ns := newTestNS(t)
			up := newAuthServer(t)
			cfg := rootConfig(t, ns, up)
			cfg.Addresses = []string{"169.254.20.10", v6}
			cfg.Firewall.Mode = mode
			deps, _ := testDeps(t)
			deps.Exec = nsExec{ns.name}
			stop := runInNS(t, cfg, deps, ns)

			srv := "[" + v6 + "]:53"
			ns.waitLocalRoute(t, v6)
			for _, network := range []string{"udp", "tcp"} {
				if r, err := ns.query(t, network, srv, "v6-"+network+".example."); err != nil || r.Rcode != dns.RcodeSuccess {
					t.Fatalf("%s query to %s: %v %v", network, srv, err, r)
				}
			}
			rules := func() string {
				if mode == FirewallIptables {
					return ns.mustRun(t, "ip6tables-save")
				}
				return ns.mustRun(t, "nft", "list", "table", "inet", cfg.Firewall.Table)
			}
			got := rules()
			if mode == FirewallIptables {
				if n := strings.Count(got, cfg.Firewall.Table); n != 10 || !strings.Contains(got, v6+"/128") || !strings.Contains(got, "NOTRACK") {
					t.Fatalf("ip6tables: %d tagged rules for %s, want 10 with NOTRACK:\n%s", n, v6, got)
				}
			} else if strings.Count(got, v6) != 10 || !strings.Contains(got, "notrack") {
				t.Fatalf("nftables: want 10 rules naming %s, NOTRACK among them:\n%s", v6, got)
			}

			// Conntrack: a control server on a second IPv6 address without rules.
			ns.mustRun(t, "nft", "add table ip6 ctprobe; add chain ip6 ctprobe in { type filter hook input priority 0; }; add rule ip6 ctprobe in ct state new,established accept")
			ns.mustRun(t, "ip", "addr", "add", ctrl6+"/128", "dev", cfg.InterfaceName, "nodad")
			ns.waitLocalRoute(t, ctrl6)
			defer ns.serveUDP(t, "["+ctrl6+"]:53", up)()
			for i := range 3 {
				for _, network := range []string{"udp", "tcp"} {
					if _, err := ns.query(t, network, srv, fmt.Sprintf("ct6-%d.example.", i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The control server is the harness's, not the cache under test.
			// Its first reply was lost 3 times in a few hundred subtests on 1
			// December, only with the other root tests in the same run: the
			// address was on the interface, the socket's queue was empty,
			// conntrack held the flow unreplied, and the next query was
			// answered. The mechanism is not found: none was lost in 2,064
			// subtests under load on 2 December (534 beside the other root
			// tests), nor in 136 on the code of 1 December. A second try keeps
			// the check, which needs one tracked flow; a lost first answer
			// logs what tells where it went (shown with go test -v): whether
			// the server read the query and what its write returned, the
			// events meanwhile, and the kernel's drop counters.
			events := ns.monitor(t)
			t.Logf("control query at %s", time.Now().Format(time.StampMicro))
			_, err := ns.query(t, "udp", "["+ctrl6+"]:53", "control6.example.")
			if ev := events(); err != nil {
				t.Logf("control query: %v; asking once more. Events meanwhile:\n%s", err, ev)
				ns.evidence(t)
				if _, err := ns.query(t, "udp", "["+ctrl6+"]:53", "control6-again.example."); err != nil {
					t.Fatal(err)
				}
			}
			out := ns.mustRun(t, "conntrack", "-L", "-f", "ipv6")
			if !strings.Contains(out, ctrl6) {
				t.Fatalf("control flow not tracked, so the check proves nothing:\n%s", out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, v6+" ") && strings.Contains(line, "port=53 ") {
					t.Fatalf("conntrack has DNS entries for %s:\n%s", v6, out)
				}
			}

			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if err := teardown(context.Background(), cfg, deps, ns.handle); err != nil {
				t.Fatal(err)
			}
			if mode == FirewallIptables {
				if got := rules(); strings.Contains(got, v6) {
					t.Fatalf("Teardown left rules for %s:\n%s", v6, got)
				}
			} else if _, err := ns.run(t, "nft", "list", "table", "inet", cfg.Firewall.Table); err == nil {
				t.Fatal("Teardown left the table")
			}
		})
	}
}

// TestRootForeignInterfaceLeftAlone: an interface the agent did not create
// (node-local-dns's own nodelocaldns, same name, same address) is never
// removed. Next to node-local-dns, the agent's default config (dnscache
// disabled) leaves it serving; migrating from node-local-dns, the cache
// serves on the interface left behind, and disabling it later removes the
// agent's rules but not that interface. An interface the agent created is
// marked (its alias) and removed.
func TestRootForeignInterfaceLeftAlone(t *testing.T) {
	needRoot(t, "nft")
	ns := newTestNS(t)
	up := newAuthServer(t)
	cfg := rootConfig(t, ns, up)
	deps, _ := testDeps(t)
	// node-local-dns's set-up: its interface and address, and its server.
	ns.mustRun(t, "ip", "link", "add", cfg.InterfaceName, "type", cfg.InterfaceType)
	ns.mustRun(t, "ip", "addr", "add", "169.254.20.10/32", "dev", cfg.InterfaceName)
	ns.mustRun(t, "ip", "link", "set", cfg.InterfaceName, "up")
	stopNLD := ns.serveUDP(t, "169.254.20.10:53", up)
	foreignUp := func() bool {
		out, err := ns.run(t, "ip", "-br", "addr", "show", "dev", cfg.InterfaceName)
		return err == nil && strings.Contains(out, "169.254.20.10")
	}

	t.Run("next to node-local-dns, disabled", func(t *testing.T) {
		off := DefaultConfig()
		off.InterfaceType = cfg.InterfaceType
		if err := teardown(context.Background(), off, deps, ns.handle); err != nil {
			t.Fatal(err)
		}
		if !foreignUp() {
			t.Fatal("disabling dnscache removed node-local-dns's interface")
		}
		if r, err := ns.query(t, "udp", "169.254.20.10:53", "nld.example."); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("node-local-dns stopped answering: %v", err)
		}
	})

	t.Run("migrating from node-local-dns", func(t *testing.T) {
		stopNLD() // node-local-dns removed, with -skipteardown: its interface stays
		stop := runInNS(t, cfg, deps, ns)
		if r, err := ns.query(t, "udp", "169.254.20.10:53", "migrated.example."); err != nil || r.Rcode != dns.RcodeSuccess {
			t.Fatalf("the cache does not serve on the interface left behind: %v", err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if err := teardown(context.Background(), cfg, deps, ns.handle); err != nil {
			t.Fatal(err)
		}
		if !foreignUp() {
			t.Fatal("teardown removed an interface the agent did not create")
		}
		if _, err := ns.run(t, "nft", "list", "table", "inet", cfg.Firewall.Table); err == nil {
			t.Fatal("teardown left the agent's own table")
		}
	})

	t.Run("created by the agent", func(t *testing.T) {
		ns.mustRun(t, "ip", "link", "del", cfg.InterfaceName)
		deps, _ := testDeps(t)
		stop := runInNS(t, cfg, deps, ns)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if out := ns.mustRun(t, "ip", "-d", "link", "show", cfg.InterfaceName); !strings.Contains(out, interfaceAlias) {
			t.Fatalf("the interface the agent created carries no mark:\n%s", out)
		}
		if err := teardown(context.Background(), cfg, deps, ns.handle); err != nil {
			t.Fatal(err)
		}
		if _, err := ns.run(t, "ip", "link", "show", cfg.InterfaceName); err == nil {
			t.Fatal("teardown left the interface the agent created")
		}
	})
}
