package conntrack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// Root tests run in a throwaway network namespace each, against the real
// kernel: ctnetlink, /proc, iptables rules, veth ethtool statistics. They do
// not run in parallel: TestRootTableFullDrops lowers the global
// nf_conntrack_max for a moment.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, ctnetlink, iptables); run conntrack/hack/prereqs.sh and the tests as root")
	}
	for _, b := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s in PATH (conntrack/hack/prereqs.sh installs it)", b)
		}
	}
	if _, err := os.Stat("/proc/sys/net/netfilter/nf_conntrack_max"); err != nil {
		t.Skip("needs nf_conntrack in the kernel (modprobe nf_conntrack)")
	}
}

// testNS is a named namespace (so that `ip netns exec` reaches it) with lo up.
type testNS struct {
	name   string
	handle netns.NsHandle
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	name := fmt.Sprintf("ctt-%d-%d", os.Getpid(), rand.IntN(1<<20))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open netns %s: %v", name, err)
	}
	n := &testNS{name: name, handle: h}
	t.Cleanup(func() {
		h.Close()
		exec.Command("ip", "netns", "del", name).Run()
	})
	n.mustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *testNS) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// track makes the namespace's conntrack count: it only does once a rule uses it.
func (n *testNS) track(t testing.TB) {
	t.Helper()
	n.mustRun(t, "iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED,RELATED", "-j", "ACCEPT")
}

// udpFlows sends one datagram from each of n new sockets to addr, all from
// inside the namespace; it returns the first send error.
func (n *testNS) udpFlows(t *testing.T, count int, addr string) error {
	t.Helper()
	return netnsrun.Run(n.handle, func() error {
		for range count {
			c, err := net.Dial("udp", addr)
			if err != nil {
				return err
			}
			_, err = c.Write([]byte("q"))
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// echoUDP answers every datagram on addr inside the namespace until the test ends.
func (n *testNS) echoUDP(t *testing.T, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := netnsrun.Run(n.handle, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from)
		}
	})
	t.Cleanup(func() { pc.Close(); wg.Wait() })
}

// startIn builds the feature for the namespace with cfg and returns it and
// its registry.
func startIn(t *testing.T, ns *testNS, cfg *Config) (*Conntrack, *prometheus.Registry) {
	t.Helper()
	deps, reg := testDeps(t, "/")
	c, err := newIn(cfg, deps, ns.handle, "/proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.col.nl.close()
		if c.col.ena != nil {
			c.col.ena.close()
		}
	})
	return c, reg
}

func TestRootEntriesAndDNSFlows(t *testing.T) {
	needRoot(t)
	ns := newTestNS(t)
	ns.track(t)
	ns.echoUDP(t, "127.0.0.1:53")
	var tcp net.Listener
	if err := netnsrun.Run(ns.handle, func() (err error) { tcp, err = net.Listen("tcp", "127.0.0.1:53"); return err }); err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()

	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	cfg.DNSFlows.Protocols = []string{ProtoUDP, ProtoTCP}
	c, reg := startIn(t, ns, cfg)

	// 10 answered UDP queries, 4 to an address where nobody answers, 5 UDP
	// flows to another port, 3 TCP connections to port 53.
	if err := ns.udpFlows(t, 10, "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	if err := ns.udpFlows(t, 4, "127.0.0.2:53"); err != nil {
		t.Fatal(err)
	}
	if err := ns.udpFlows(t, 5, "127.0.0.1:5353"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		var conn net.Conn
		if err := netnsrun.Run(ns.handle, func() (err error) { conn, err = net.Dial("tcp", "127.0.0.1:53"); return err }); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	// Wait until the answers have come back (the echo goroutine).
	eventually(t, 5*time.Second, "10 replied UDP DNS flows", func() bool {
		c.countDNS()
		r := c.col.dns
		return r != nil && r.udp.flows-r.udp.unreplied == 10
	})

	got := scrape(t, reg)
	if got[`nodeagent_conntrack_stats_source{source="netlink"}`] != 1 {
		t.Fatalf("not reading over netlink: %v", got)
	}
	for k, want := range map[string]float64{
		`nodeagent_conntrack_dns_flows{proto="udp"}`:           14,
		`nodeagent_conntrack_dns_flows_unreplied{proto="udp"}`: 4,
		`nodeagent_conntrack_dns_flows{proto="tcp"}`:           3,
		`nodeagent_conntrack_dns_flows_unreplied{proto="tcp"}`: 0,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if e := got["nodeagent_conntrack_entries"]; e < 22 {
		t.Errorf("entries = %v, want >= 22 (14 + 5 UDP, 3 TCP)", e)
	}
	limit, _ := readUint("/proc/sys/net/netfilter/nf_conntrack_max")
	if got["nodeagent_conntrack_entries_limit"] != float64(limit) {
		t.Errorf("entries_limit = %v, want nf_conntrack_max %d", got["nodeagent_conntrack_entries_limit"], limit)
	}
	for _, name := range []string{"clash_resolve", "chaintoolong", "insert_failed", "drop", "early_drop", "search_restart"} {
		if _, ok := got["nodeagent_conntrack_"+name+"_total"]; !ok {
			t.Errorf("%s_total not exported over netlink", name)
		}
	}

	// The same figures from /proc/net/stat/nf_conntrack.
	pc := DefaultConfig()
	pc.Source = SourceProcfs
	pc.ENA.Enabled = false
	_, preg := startIn(t, ns, pc)
	pgot := scrape(t, preg)
	if pgot[`nodeagent_conntrack_stats_source{source="procfs"}`] != 1 {
		t.Fatalf("not reading /proc: %v", pgot)
	}
	for _, k := range []string{"nodeagent_conntrack_entries", "nodeagent_conntrack_entries_limit", "nodeagent_conntrack_clash_resolve_total", "nodeagent_conntrack_chaintoolong_total", "nodeagent_conntrack_drop_total"} {
		if pgot[k] != got[k] && k != "nodeagent_conntrack_entries" {
			t.Errorf("%s: procfs %v, netlink %v", k, pgot[k], got[k])
		}
	}
	if pgot["nodeagent_conntrack_entries"] < 22 {
		t.Errorf("procfs entries = %v", pgot["nodeagent_conntrack_entries"])
	}
}

// TestRootNotrack: flows a NOTRACK rule exempts are not in the table.
func TestRootNotrack(t *testing.T) {
	needRoot(t)
	ns := newTestNS(t)
	ns.track(t)
	ns.mustRun(t, "iptables", "-t", "raw", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "NOTRACK")
	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	c, reg := startIn(t, ns, cfg)
	if err := ns.udpFlows(t, 10, "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	if err := ns.udpFlows(t, 3, "127.0.0.1:5353"); err != nil {
		t.Fatal(err)
	}
	c.countDNS()
	got := scrape(t, reg)
	if got[`nodeagent_conntrack_dns_flows{proto="udp"}`] != 0 {
		t.Errorf("dns_flows udp = %v, want 0 under NOTRACK", got[`nodeagent_conntrack_dns_flows{proto="udp"}`])
	}
	if got[`nodeagent_conntrack_dns_count_passes_total{result="ok"}`] != 1 {
		t.Errorf("passes: %v", got)
	}
	if e := got["nodeagent_conntrack_entries"]; e != 3 {
		t.Errorf("entries = %v, want 3 (only the flows to 5353)", e)
	}
}

// TestRootTableFullDrops lowers nf_conntrack_max (global, compared with each
// namespace's own count) to this namespace's count for as short as it can,
// restores it, and checks that the new flows were dropped and counted. Other
// tests on the machine run in namespaces of their own at the same time: this
// one first fills its table with 20,000 entries (over ctnetlink, in a few
// milliseconds) so that the lowered limit stays above what theirs hold. The
// entries are assured: a full table evicts an entry that is not (early_drop)
// instead of dropping, which made the new flows succeed about half the time
// with 20,000 unassured entries in the hash.
func TestRootTableFullDrops(t *testing.T) {
	needRoot(t)
	ns := newTestNS(t)
	ns.track(t)
	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	_, reg := startIn(t, ns, cfg)
	const fill = 20_000
	if err := inject(ns, fill, 100, true); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, reg)
	entries := before["nodeagent_conntrack_entries"]
	if entries < fill {
		t.Fatalf("entries = %v, want >= %d", entries, fill)
	}
	if limit := before["nodeagent_conntrack_entries_limit"]; limit <= entries {
		t.Skipf("nf_conntrack_max %v is not above this namespace's %v entries", limit, entries)
	}

	const maxPath = "/proc/sys/net/netfilter/nf_conntrack_max"
	orig, err := os.ReadFile(maxPath)
	if err != nil {
		t.Fatal(err)
	}
	restore := sync.OnceFunc(func() {
		if err := os.WriteFile(maxPath, orig, 0o644); err != nil {
			t.Errorf("restore nf_conntrack_max: %v", err)
		}
	})
	t.Cleanup(restore)
	if err := os.WriteFile(maxPath, []byte(strconv.Itoa(int(entries))), 0o644); err != nil {
		t.Fatal(err)
	}
	sendErr := ns.udpFlows(t, 5, "127.0.0.1:53")
	restore()

	if sendErr == nil {
		t.Error("new flows were sent with the table full; want EPERM")
	}
	after := scrape(t, reg)
	if d := after["nodeagent_conntrack_drop_total"] - before["nodeagent_conntrack_drop_total"]; d < 1 {
		t.Errorf("drop_total rose by %v, want >= 1", d)
	}
	if after["nodeagent_conntrack_entries"] > entries {
		t.Errorf("entries grew from %v to %v past the limit", entries, after["nodeagent_conntrack_entries"])
	}
}

// TestRootBudgetSkips: a table larger than dnsFlows.maxTableEntries is not
// dumped; the pass is counted as skipped and the flow gauges go away.
func TestRootBudgetSkips(t *testing.T) {
	needRoot(t)
	ns := newTestNS(t)
	ns.track(t)
	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	cfg.DNSFlows.MaxTableEntries = 5
	c, reg := startIn(t, ns, cfg)
	if err := ns.udpFlows(t, 3, "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	c.countDNS()
	if got := scrape(t, reg); got[`nodeagent_conntrack_dns_flows{proto="udp"}`] != 3 {
		t.Fatalf("dns_flows udp = %v, want 3", got[`nodeagent_conntrack_dns_flows{proto="udp"}`])
	}
	if err := ns.udpFlows(t, 5, "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	c.countDNS()
	got := scrape(t, reg)
	if got[`nodeagent_conntrack_dns_count_passes_total{result="table_too_large"}`] != 1 {
		t.Errorf("passes: %v", got)
	}
	if _, ok := got[`nodeagent_conntrack_dns_flows{proto="udp"}`]; ok {
		t.Error("dns_flows still exported after a skipped pass")
	}
	if _, ok := got["nodeagent_conntrack_dns_count_last_success_timestamp_seconds"]; !ok {
		t.Error("last success timestamp gone")
	}
}

// TestRootENAVeth reads a veth pair's ethtool statistics for real: they have
// no allowance counters, so the interfaces are skipped without error.
func TestRootENAVeth(t *testing.T) {
	needRoot(t)
	ns := newTestNS(t)
	h, err := netlink.NewHandleAt(ns.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ct0"}, PeerName: "ct1"}); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ENA.Drivers = []string{"veth"}
	c, reg := startIn(t, ns, cfg)
	got := scrape(t, reg)
	for k := range got {
		if strings.Contains(k, "_ena_") {
			t.Errorf("ENA metric for a veth: %s", k)
		}
		if strings.HasPrefix(k, "nodeagent_conntrack_read_errors_total") {
			t.Errorf("read error: %s = %v", k, got[k])
		}
	}
	r := c.col.ena.(*enaReader)
	if len(r.targets) != 2 {
		t.Fatalf("veth interfaces found: %v, want ct0 and ct1", r.targets)
	}
	st, err := r.et.Stats("ct0")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st["peer_ifindex"]; !ok {
		t.Errorf("veth statistics without peer_ifindex: %v", st)
	}
	if _, ok := enaAllowances("ct0", st); ok {
		t.Error("veth statistics taken for ENA ones")
	}
}

// TestRootRun runs the feature as the agent does: the first pass counts at
// once, and cancelling Run returns nil after its work stopped.
func TestRootRun(t *testing.T) {
	needRoot(t)
	ns := newTestNS(t)
	ns.track(t)
	if err := ns.udpFlows(t, 4, "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	c, reg := startIn(t, ns, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	eventually(t, 10*time.Second, "a DNS pass", func() bool {
		return scrape(t, reg)[`nodeagent_conntrack_dns_count_passes_total{result="ok"}`] >= 1
	})
	if got := scrape(t, reg)[`nodeagent_conntrack_dns_flows{proto="udp"}`]; got != 4 {
		t.Errorf("dns_flows udp = %v, want 4", got)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run returned %v, want nil", err)
	}
}

// TestRootIPv6DNSFlows: the IPv6 dumps count IPv6 entries, and only those
// with dnsFlows.families [ipv6]; [auto] walks IPv6 once the namespace has a
// global address; walks in parallel count the same.
func TestRootIPv6DNSFlows(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("ip6tables"); err != nil {
		t.Skip("needs ip6tables (conntrack/hack/prereqs.sh installs iptables)")
	}
	ns := newTestNS(t)
	ns.track(t)
	ns.mustRun(t, "ip6tables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED,RELATED", "-j", "ACCEPT")
	if err := ns.udpFlows(t, 5, "[::1]:53"); err != nil {
		t.Fatal(err)
	}
	if err := ns.udpFlows(t, 2, "127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	check := func(families []string, parallel int, want float64) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.ENA.Enabled = false
		cfg.DNSFlows.Families = families
		cfg.DNSFlows.ParallelWalks = parallel
		c, reg := startIn(t, ns, cfg)
		c.countDNS()
		if got := scrape(t, reg)[`nodeagent_conntrack_dns_flows{proto="udp"}`]; got != want {
			t.Errorf("families %v, parallelWalks %d: dns_flows udp = %v, want %v", families, parallel, got, want)
		}
	}
	for _, parallel := range []int{1, 4} {
		check([]string{FamilyIPv4, FamilyIPv6}, parallel, 7)
		check([]string{FamilyIPv6}, parallel, 5)
		check([]string{FamilyIPv4}, parallel, 2)
	}
	// auto: only ::1 and link-local addresses here, so IPv6 is not walked;
	// with a unique local address it is.
	check([]string{FamilyAuto}, 1, 2)
	ns.mustRun(t, "ip", "-6", "addr", "add", "fd00:77::1/64", "dev", "lo", "nodad")
	check([]string{FamilyAuto}, 1, 7)
	check([]string{FamilyAuto}, 4, 7)
}
