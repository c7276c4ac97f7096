package dnscache

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/config"
	"github.com/nodeagent/nodeagent/agent/hostpath"
	"github.com/nodeagent/nodeagent/agent/kube"
	"github.com/nodeagent/nodeagent/agent/kube/kubetest"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // key paths, all reported at once
	}{
		{"loop through cluster DNS", func(c *Config) { c.ClusterDNS.Addresses = []string{"169.254.20.10"} }, []string{"clusterDNS.addresses[0]"}},
		{"loop through node resolver with port", func(c *Config) { c.Node.Addresses = []string{"169.254.20.10:53"} }, []string{"node.addresses[0]"}},
		{"other port is no loop", func(c *Config) { c.Node.Addresses = []string{"169.254.20.10:5353"} }, nil},
		{"every problem reported", func(c *Config) {
			c.Cache.DenialTTL = 0
			c.Cache.SuccessTTL = 1500 * time.Millisecond
			c.Addresses = []string{"nope"}
			c.Firewall.Mode = "ebtables"
			c.Zones = []ZoneConfig{{Name: "a.example", Protocol: "quic"}}
			c.Port = 0
		}, []string{"cache.denialTTL", "cache.successTTL", "addresses[0]", "firewall.mode", "zones[0].addresses", "zones[0].protocol", "port"}},
		{"no cluster DNS", func(c *Config) { c.ClusterDNS.Service = ""; c.ClusterDNS.Addresses = nil }, []string{"clusterDNS"}},
		{"bad service", func(c *Config) { c.ClusterDNS.Service = "kube-dns" }, []string{"clusterDNS.service"}},
		{"interface name too long", func(c *Config) { c.InterfaceName = "nodelocaldns-too-long" }, []string{"interfaceName"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(c)
			err := c.Validate()
			var errs config.Errors
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if !errors.As(err, &errs) {
				t.Fatalf("want config.Errors, got %v", err)
			}
			got := map[string]bool{}
			for _, fe := range errs {
				got[fe.Path] = true
			}
			for _, w := range tc.want {
				if !got[w] {
					t.Errorf("no problem reported at %s; got:\n%v", w, err)
				}
			}
		})
	}
}

func TestResolvConf(t *testing.T) {
	t.Parallel()
	served := DefaultConfig().servedAddrs()
	tests := []struct {
		name    string
		files   map[string]string
		want    string
		wantErr bool
	}{
		{"plain", map[string]string{"etc/resolv.conf": "search x\nnameserver 10.0.0.2\n# nameserver 9.9.9.9\nnameserver fd00::2\noptions ndots:5\n"}, "10.0.0.2:53 [fd00::2]:53", false},
		{"systemd-resolved stub", map[string]string{
			"etc/resolv.conf":                 "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
			"run/systemd/resolve/resolv.conf": "nameserver 172.31.0.2\n",
		}, "172.31.0.2:53", false},
		{"stub without resolved's file", map[string]string{"etc/resolv.conf": "nameserver 127.0.0.53\n"}, "", true},
		{"own address skipped", map[string]string{"etc/resolv.conf": "nameserver 169.254.20.10\nnameserver 10.0.0.2\n"}, "10.0.0.2:53", false},
		{"only own address", map[string]string{"etc/resolv.conf": "nameserver 169.254.20.10\n"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, data := range tc.files {
				os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
				os.WriteFile(filepath.Join(root, p), []byte(data), 0o644)
			}
			got, err := nodeResolvers(hostpath.New(root), "/etc/resolv.conf", served)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			if strings.Join(s, " ") != tc.want {
				t.Fatalf("got %q, want %q", strings.Join(s, " "), tc.want)
			}
		})
	}
}

func answerFor(name string, ttl uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Response = true
	rr, _ := dns.NewRR(name + " " + fmtUint(ttl) + " IN A 192.0.2.7")
	m.Answer = []dns.RR{rr}
	return m
}

func fmtUint(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func keyFor(t *testing.T, name string) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	b, _ := m.Pack()
	var q query
	if qe := parseQuery(b, &q); qe != qeOK {
		t.Fatalf("parse: %v", qe)
	}
	return q.key
}

func TestStoreBounds(t *testing.T) {
	t.Parallel()
	now := time.Now().UnixNano()
	t.Run("entries", func(t *testing.T) {
		st := newStore(nShards*4, 1<<30)
		for i := range 1000 {
			name := "n" + fmtUint(uint32(i)) + ".example."
			e, err := newEntry(keyFor(t, name), answerFor(name, 60), time.Minute, true, time.Hour, now)
			if err != nil {
				t.Fatal(err)
			}
			st.put(e, now)
		}
		if n := st.entries.Load(); n > nShards*4 {
			t.Fatalf("%d entries, bound %d", n, nShards*4)
		}
		if st.evictions.Load() == 0 {
			t.Fatal("no evictions counted")
		}
	})
	t.Run("bytes", func(t *testing.T) {
		st := newStore(1<<20, 64<<10)
		for i := range 5000 {
			name := strings.Repeat("x", 50) + fmtUint(uint32(i)) + ".example."
			e, _ := newEntry(keyFor(t, name), answerFor(name, 60), time.Minute, true, time.Hour, now)
			st.put(e, now)
		}
		if b := st.bytes.Load(); b > 64<<10 {
			t.Fatalf("%d bytes, bound %d", b, 64<<10)
		}
	})
	t.Run("least recently used goes first", func(t *testing.T) {
		st := newStore(nShards*2, 1<<30)
		keep := keyFor(t, "keep.example.")
		e, _ := newEntry(keep, answerFor("keep.example.", 60), time.Minute, true, time.Hour, now)
		st.put(e, now)
		for i := range 500 {
			st.get(keep, now)
			name := "f" + fmtUint(uint32(i)) + ".example."
			e, _ := newEntry(keyFor(t, name), answerFor(name, 60), time.Minute, true, time.Hour, now)
			st.put(e, now)
		}
		if st.get(keep, now) == nil {
			t.Fatal("a hot entry was evicted")
		}
	})
	t.Run("a flood of names asked once leaves the entries asked again", func(t *testing.T) {
		st := newStore(nShards*64, 1<<30)
		put := func(name string) {
			e, _ := newEntry(keyFor(t, name), answerFor(name, 60), time.Minute, true, time.Hour, now)
			st.put(e, now)
		}
		for i := range 64 {
			put("hot" + fmtUint(uint32(i)) + ".example.")
			st.get(keyFor(t, "hot"+fmtUint(uint32(i))+".example."), now)
		}
		for i := range 50000 {
			put("once" + fmtUint(uint32(i)) + ".example.")
		}
		for i := range 64 {
			if st.get(keyFor(t, "hot"+fmtUint(uint32(i))+".example."), now) == nil {
				t.Fatalf("hot%d was evicted by names asked once", i)
			}
		}
		// A refreshed entry (prefetch, stale extension) stays protected.
		e, _ := newEntry(keyFor(t, "hot0.example."), answerFor("hot0.example.", 60), time.Minute, true, time.Hour, now)
		st.put(e, now)
		for i := range 50000 {
			put("again" + fmtUint(uint32(i)) + ".example.")
		}
		if st.get(keyFor(t, "hot0.example."), now) != e {
			t.Fatal("a refreshed hot entry lost its protection")
		}
		checkSegments(t, st)
	})
	t.Run("failure never replaces a good entry", func(t *testing.T) {
		st := newStore(100, 1<<20)
		k := keyFor(t, "g.example.")
		good, _ := newEntry(k, answerFor("g.example.", 1), time.Second, true, time.Hour, now)
		st.put(good, now)
		sf := answerFor("g.example.", 1)
		sf.Answer, sf.Rcode = nil, dns.RcodeServerFailure
		bad, _ := newEntry(k, sf, time.Second, false, 0, now)
		later := now + int64(5*time.Second) // good one is stale by then
		if st.put(bad, later) {
			t.Fatal("SERVFAIL replaced a good (stale) entry")
		}
		if e := st.get(k, later); e != good {
			t.Fatal("good entry lost")
		}
	})
	t.Run("past the stale window entries go away", func(t *testing.T) {
		st := newStore(100, 1<<20)
		k := keyFor(t, "old.example.")
		e, _ := newEntry(k, answerFor("old.example.", 1), time.Second, true, time.Second, now)
		st.put(e, now)
		if st.get(k, now+int64(1500*time.Millisecond)) == nil {
			t.Fatal("entry gone inside its stale window")
		}
		if st.get(k, now+int64(3*time.Second)) != nil || st.entries.Load() != 0 {
			t.Fatal("entry kept past its stale window")
		}
	})
}

// checkSegments walks every shard's lists and checks them against the
// counts and the map.
func checkSegments(t *testing.T, st *store) {
	t.Helper()
	var total int64
	for i := range st.shards {
		sh := &st.shards[i]
		walk := func(head *entry, protected bool) (n int) {
			for e := head.next; e != head; e = e.next {
				if e.protected != protected || sh.m[e.key] != e || e.next.prev != e {
					t.Fatalf("shard %d: entry %q in the wrong list or badly linked", i, e.key)
				}
				n++
			}
			return n
		}
		prob, prot := walk(&sh.prob, false), walk(&sh.prot, true)
		if prot != sh.protN || prob+prot != sh.n || sh.n != len(sh.m) || sh.n > st.maxN || sh.protN > st.maxProt {
			t.Fatalf("shard %d: lists %d+%d, counts n=%d protN=%d map=%d, bounds %d/%d", i, prob, prot, sh.n, sh.protN, len(sh.m), st.maxN, st.maxProt)
		}
		total += int64(sh.n)
	}
	if total != st.entries.Load() {
		t.Fatalf("entries gauge %d, lists hold %d", st.entries.Load(), total)
	}
}

func TestTTLPolicy(t *testing.T) {
	t.Parallel()
	p := ttlPolicy{}.fromConfig(DefaultConfig().Cache)
	soa := func(ttl, minttl uint32) dns.RR {
		return &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl}, Ns: "a.", Mbox: "b.", Minttl: minttl}
	}
	tests := []struct {
		name string
		msg  func(m *dns.Msg)
		ttl  time.Duration
		good bool
	}{
		{"positive capped", func(m *dns.Msg) {}, 30 * time.Second, true},
		{"positive short", func(m *dns.Msg) { m.Answer[0].Header().Ttl = 7 }, 7 * time.Second, true},
		{"NXDOMAIN from SOA minimum", func(m *dns.Msg) { m.Rcode, m.Answer, m.Ns = dns.RcodeNameError, nil, []dns.RR{soa(60, 2)} }, 2 * time.Second, true},
		{"NXDOMAIN from SOA TTL", func(m *dns.Msg) { m.Rcode, m.Answer, m.Ns = dns.RcodeNameError, nil, []dns.RR{soa(1, 60)} }, time.Second, true},
		{"NXDOMAIN capped by denialTTL", func(m *dns.Msg) { m.Rcode, m.Answer, m.Ns = dns.RcodeNameError, nil, []dns.RR{soa(3600, 3600)} }, 5 * time.Second, true},
		{"NODATA without SOA not cached", func(m *dns.Msg) { m.Answer = nil }, 0, true},
		{"truncated not cached", func(m *dns.Msg) { m.Truncated = true }, 0, false},
		{"SERVFAIL briefly", func(m *dns.Msg) { m.Rcode, m.Answer = dns.RcodeServerFailure, nil }, time.Second, false},
		{"REFUSED not cached", func(m *dns.Msg) { m.Rcode, m.Answer = dns.RcodeRefused, nil }, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := answerFor("p.example.", 300)
			tc.msg(m)
			ttl, good := p.lifetime(m)
			if ttl != tc.ttl || good != tc.good {
				t.Fatalf("got %s good=%v, want %s good=%v", ttl, good, tc.ttl, tc.good)
			}
		})
	}
}

// serviceAPI is a Kubernetes API stand-in serving the cluster DNS Service
// (ClusterIP 127.0.0.1, up's port) once api.Down(false); until then every
// request fails.
func serviceAPI(t *testing.T, up *authServer) (_ *kube.Client, api *kubetest.Server) {
	t.Helper()
	upPort, err := strconv.Atoi(up.addr[strings.LastIndex(up.addr, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-upstream"},
		Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1", Ports: []corev1.ServicePort{
			{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: int32(upPort)},
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: int32(upPort)},
		}},
	}
	api = kubetest.New(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node"}}, svc)
	api.Down(true)
	kc, err := kube.New(api.Config, "node", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return kc, api
}

// TestRunServesWithoutUpstreams: when the cluster DNS Service cannot be read
// at start, the cache still serves (the other zones answer, the cluster zone
// SERVFAILs) but is not Ready, saying why; it counts the failure and picks
// the Service up on a reconcile.
func TestRunServesWithoutUpstreams(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t)
	kc, api := serviceAPI(t, up)
	cfg := testConfig(t, up.addr)
	cfg.ClusterDNS.Addresses = nil
	cfg.ReconcileInterval = time.Second
	c, _ := startCache(t, cfg, func(c *Cache) { c.deps.Kube = kc })
	srv := addr(cfg)

	if r := ask(t, srv, "www.example.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("node zone: got %s, want NOERROR", dns.RcodeToString[r.Rcode])
	}
	if r := ask(t, srv, "a.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("cluster zone without upstreams: got %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "zone cluster.local. has no upstream") || !strings.Contains(err.Error(), "kube-dns-upstream") {
		t.Errorf("Ready() = %v, want the cluster zone without upstream and the Service's error", err)
	}
	if v := testutil.ToFloat64(c.m.setupErrors.WithLabelValues(reasonService)); v < 1 {
		t.Fatalf("setup errors (service) = %v, want >= 1", v)
	}
	api.Down(false)
	i := 0
	eventually(t, 40*time.Second, "the cluster zone to get its upstream", func() bool {
		i++
		return ask(t, srv, "b"+strconv.Itoa(i)+".svc.cluster.local.", dns.TypeA).Rcode == dns.RcodeSuccess
	})
	if err := c.Ready(); err != nil {
		t.Errorf("Ready() = %v once every zone has upstreams", err)
	}
}

// TestServiceIsWatched: the cluster DNS Service is read once and watched,
// not fetched on each reconcile, and a change to it (here its DNS port,
// moving to another upstream) reaches the upstream list at once.
func TestServiceIsWatched(t *testing.T) {
	t.Parallel()
	up, up2 := newAuthServer(t), newAuthServer(t)
	kc, api := serviceAPI(t, up)
	api.Down(false)
	cfg := testConfig(t, up.addr)
	cfg.ClusterDNS.Addresses = nil
	cfg.ReconcileInterval = time.Second
	c, _ := startCache(t, cfg, func(c *Cache) { c.deps.Kube = kc })
	srv := addr(cfg)
	eventually(t, 40*time.Second, "the cluster zone to get its upstream", func() bool { return c.Ready() == nil })
	if r := ask(t, srv, "a.svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeSuccess || up.count("a.svc.cluster.local.") != 1 {
		t.Fatalf("cluster name: %s, asked upstream %d times", dns.RcodeToString[r.Rcode], up.count("a.svc.cluster.local."))
	}
	before := api.Requests()
	reconciles := testutil.ToFloat64(c.m.reconciles)
	eventually(t, 40*time.Second, "three reconciles", func() bool { return testutil.ToFloat64(c.m.reconciles) >= reconciles+3 })
	if after := api.Requests(); after["GET services"] != 0 || after["LIST services"] != before["LIST services"] || after["WATCH services"] != before["WATCH services"] {
		t.Errorf("API requests after three reconciles: %v, before: %v; want none more", after, before)
	}

	port2, _ := strconv.Atoi(up2.addr[strings.LastIndex(up2.addr, ":")+1:])
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1", Ports: []corev1.ServicePort{
		{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: int32(port2)},
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: int32(port2)},
	}}}
	api.SetService("kube-system", "kube-dns-upstream", svc)
	i := 0
	eventually(t, 20*time.Second, "the Service's new port to be used", func() bool {
		i++
		name := "m" + strconv.Itoa(i) + ".svc.cluster.local."
		return ask(t, srv, name, dns.TypeA).Rcode == dns.RcodeSuccess && up2.count(name) == 1
	})
}

// TestJoinWaitsForUpstreams: a process starting while another one serves
// its address (a rolling update) does not take a share of the queries
// before its cluster zone has upstreams, so no cluster name SERVFAILs; it
// joins once the Service is read, or once the other process stops.
func TestJoinWaitsForUpstreams(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"service found", "old process gone"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			up := newAuthServer(t)
			kc, api := serviceAPI(t, up)
			oldCfg := testConfig(t, up.addr)
			// The old process answers every query itself: on a loaded machine
			// 300 ms is not enough for its upstream (a SERVFAIL at query 1826
			// in 1 of 5 runs under a build loop).
			oldCfg.Upstream.Timeout = 2 * time.Second
			oldDeps := depsNoLog(t)
			old, err := New(oldCfg, oldDeps)
			if err != nil {
				t.Fatal(err)
			}
			oldCtx, stopOld := context.WithCancel(context.Background())
			oldDone := make(chan error, 1)
			go func() { oldDone <- old.Run(oldCtx) }()
			defer func() { stopOld(); <-oldDone }()
			eventually(t, 10*time.Second, "the old process to serve", func() bool { return old.Ready() == nil })

			cfg := testConfig(t, up.addr)
			cfg.Port = oldCfg.Port
			cfg.ClusterDNS.Addresses = nil
			c, _ := New(cfg, depsNoLog(t))
			c.deps.Kube = kc
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() { cancel(); <-done }()

			srv := addr(cfg)
			deadline := time.Now().Add(2 * joinRetry)
			for i := 0; time.Now().Before(deadline); i++ {
				if r := ask(t, srv, "w"+strconv.Itoa(i)+".svc.cluster.local.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
					t.Fatalf("query %d while the new process waits: %s, want every one answered by the old process (new process serving: %v; old process's upstream answers: %s)",
						i, dns.RcodeToString[r.Rcode], c.servingErr(), upstreamOutcomes(t, oldDeps.Metrics.(*prometheus.Registry)))
				}
			}
			if err := c.servingErr(); err == nil {
				t.Fatal("the new process serves without a cluster upstream while the old one serves")
			}
			if how == "service found" {
				api.Down(false)
				// The Service watch retries with client-go's jittered backoff
				// (0.8 s doubling), so the join comes within seconds, not at once.
				eventually(t, 40*time.Second, "the new process to join", func() bool { return c.Ready() == nil })
			} else {
				stopOld()
				eventually(t, 5*time.Second, "the new process to serve alone", func() bool { return c.servingErr() == nil })
				if r := ask(t, srv, "www.example.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
					t.Fatalf("node zone after the old process stopped: %s", dns.RcodeToString[r.Rcode])
				}
				if c.Ready() == nil {
					t.Fatal("Ready() = nil with no cluster upstream")
				}
			}
		})
	}
}

// upstreamOutcomes sums reg's upstream requests by outcome, e.g.
// "NOERROR=287 timeout=1", for a failure message.
func upstreamOutcomes(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != namespace+"_"+subsystem+"_upstream_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rcode" {
					out = append(out, l.GetValue()+"="+strconv.FormatUint(m.GetHistogram().GetSampleCount(), 10))
				}
			}
		}
	}
	return strings.Join(out, " ")
}

func depsNoLog(t *testing.T) agent.Deps {
	d, _ := testDeps(t)
	d.Log = slog.New(slog.DiscardHandler)
	d.Metrics = prometheus.NewRegistry()
	return d
}

// TestRunQuickCancel: a Run cancelled right away or soon after it starts
// returns (the TCP servers are shut down even when cancel comes before they
// serve), leaving no goroutine behind (TestMain checks).
func TestRunQuickCancel(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t)
	deadline := time.After(30 * time.Second)
	for i := range 50 {
		cfg := testConfig(t, up.addr)
		c, err := New(cfg, depsNoLog(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if i%2 == 0 {
			cancel()
		} else {
			go func() { time.Sleep(time.Duration(i%5) * time.Millisecond); cancel() }()
		}
		errc := make(chan error, 1)
		go func() { errc <- c.Run(ctx) }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("iteration %d: Run: %v", i, err)
			}
		case <-deadline:
			cancel()
			t.Fatalf("iteration %d: Run did not return after cancel", i)
		}
		cancel()
	}
}

// TestRemovedUpstreamNotRedialled: a query still in flight to an upstream
// that setUpstreams removed opens no new connection, whose reader would
// outlive Run.
func TestRemovedUpstreamNotRedialled(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t)
	cfg := testConfig(t, up.addr)
	m, err := newMetrics(prometheus.NewRegistry(), storeOf(newStore(100, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	u := newUpstream(netip.MustParseAddrPort(up.addr), ProtoTCP, cfg.Upstream, m, slog.New(slog.DiscardHandler))
	defer u.closeConns()
	q := new(dns.Msg)
	q.SetQuestion("before.example.", dns.TypeA)
	if _, err := u.exchange(context.Background(), q); err != nil {
		t.Fatalf("before removal: %v", err)
	}
	u.close()
	q.SetQuestion("after.example.", dns.TypeA)
	if _, err := u.exchange(context.Background(), q); !errors.Is(err, errUpstreamClosed) {
		t.Fatalf("after removal: got %v, want %v", err, errUpstreamClosed)
	}
	if n := up.count("after.example."); n != 0 || up.tcpConn.Load() != 1 {
		t.Fatalf("after removal: upstream asked %d times over %d connections, want 0 and 1", n, up.tcpConn.Load())
	}
}
