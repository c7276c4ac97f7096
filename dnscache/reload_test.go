package dnscache

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeagent/nodeagent/agent"
)

// reloadConfig is an agent config file running dnscache on 127.0.0.1.
func reloadConfig(port int, up string, timeout time.Duration) string {
	return fmt.Sprintf(`agent:
  reloadInterval: 1s
  readiness: {gatingFeatures: [dnscache]}
dnscache:
  enabled: true
  manageInterface: false
  addresses: ["127.0.0.1"]
  port: %d
  firewall: {mode: none}
  clusterDNS: {addresses: ["%s"]}
  node: {addresses: ["%s"]}
  upstream: {timeout: %s}
`, port, up, up, timeout)
}

// TestReloadKeepsAnswering: a changed dnscache section, applied by the agent
// under load, loses no query (the new instance serves before the old one
// stops) and keeps the cache (no cached name is asked upstream again). The
// warm-up makes sure each name is cached with a good answer: on a loaded
// machine an upstream query may time out, and the SERVFAIL cached for it
// expires during the load (a name asked again that was never kept). A
// query waits up to 10 s: a gap shows as refused queries at once, while
// with 2 s a starved machine lost 4 of 586 to the client's timeout.
func TestReloadKeepsAnswering(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t)
	port := freePort(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(reloadConfig(port, up.addr, 2*time.Second)), 0o644); err != nil {
		t.Fatal(err)
	}
	deps, _ := testDeps(t)
	reg := prometheus.NewRegistry()
	a, err := agent.New(agent.Options{ConfigPath: path, Specs: []agent.Spec{Spec()}, Registry: reg, Log: deps.Log, Host: deps.Host, Exec: deps.Exec})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	srv := fmt.Sprintf("127.0.0.1:%d", port)
	eventually(t, 10*time.Second, "the cache to serve", func() bool {
		r, _, err := (&dns.Client{Timeout: 200 * time.Millisecond}).Exchange(new(dns.Msg).SetQuestion("up.example.", dns.TypeA), srv)
		return err == nil && r.Rcode == dns.RcodeSuccess
	})
	const names = 50
	warmAsked := func() (n int) {
		for i := range names {
			n += up.count(fmt.Sprintf("warm%d.example.", i))
		}
		return n
	}
	for i := range names {
		name := fmt.Sprintf("warm%d.example.", i)
		eventually(t, 10*time.Second, name+" cached", func() bool { return ask(t, srv, name, dns.TypeA).Rcode == dns.RcodeSuccess })
	}
	warm := warmAsked()
	misses := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "nodeagent_dnscache_cache_misses_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return -1
	}
	if m := misses(); m < names {
		t.Fatalf("cache_misses_total %v after %d misses", m, names)
	}

	load := startUDPLoad(8, func() net.Conn {
		c, err := net.Dial("udp", srv)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}, func(c, i int) string { return fmt.Sprintf("warm%d.example.", (c*7+i)%names) }, 10*time.Second, 0)
	eventually(t, 5*time.Second, "load", func() bool { return load.sent.Load() > 200 })
	hash := a.Config().Hash
	// Replaced whole, as a ConfigMap volume does: a poll never reads half a file.
	if err := os.WriteFile(path+".new", []byte(reloadConfig(port, up.addr, 3*time.Second)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the reload", func() bool { return a.Config().Hash != hash })
	// The new instance's counters start at zero and are registered once
	// the old instance has stopped: then the misses read below the warm-up's.
	eventually(t, 20*time.Second, "the old instance to stop", func() bool { m := misses(); return m >= 0 && m < names })
	at := load.sent.Load()
	eventually(t, 5*time.Second, "load on the new instance alone", func() bool { return load.sent.Load() > at+200 })
	load.stop()
	t.Logf("reload under load: %d queries, %d lost, %d cached names asked upstream again", load.sent.Load(), load.lost.Load(), warmAsked()-warm)
	if load.lost.Load() != 0 {
		t.Errorf("%d of %d queries lost across the reload (%d refused)", load.lost.Load(), load.sent.Load(), load.refused.Load())
	}
	if n := warmAsked() - warm; n != 0 {
		t.Errorf("%d cached names asked upstream again: the cache was not kept", n)
	}
}
