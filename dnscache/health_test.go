package dnscache

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), `msg="`+msg)
}

// grep returns the lines holding s.
func (s *syncBuffer) grep(sub string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestUpstreamDownIsReported: an upstream that stops answering is logged
// down once (however many queries fail after), its zone is reported
// degraded (/readyz shows it) while Ready stays nil, and its return is
// logged once.
func TestUpstreamDownIsReported(t *testing.T) {
	t.Parallel()
	up := newAuthServer(t)
	cfg := testConfig(t, up.addr)
	cfg.Cache.ServfailTTL = 0
	var logs syncBuffer
	c, _ := startCache(t, cfg, func(c *Cache) {
		c.log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	srv := addr(cfg)
	if got := c.Degraded(); len(got) != 0 {
		t.Fatalf("Degraded() = %v with every upstream answering", got)
	}
	up.set(func(a *authServer) { a.silent = true })
	for i := range 5 {
		if r := ask(t, srv, fmt.Sprintf("dead%d.example.", i), dns.TypeA); r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("query %d to a silent upstream: %s, want SERVFAIL", i, dns.RcodeToString[r.Rcode])
		}
	}
	if n := logs.count("upstream down"); n != 1 {
		t.Fatalf("%d 'upstream down' lines after 5 failures, want 1:\n%s", n, logs.b.String())
	}
	got := c.Degraded()
	if len(got) != 1 || !strings.Contains(got[0], "zone .: every upstream down ("+up.addr+")") {
		t.Fatalf("Degraded() = %q, want the root zone with its upstream", got)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready() = %v: a dead upstream after start-up must not gate", err)
	}
	up.set(func(a *authServer) { a.silent = false })
	// The upstream is marked up before its line is logged: wait for both.
	eventually(t, 10*time.Second, "the health check to bring the upstream back", func() bool {
		return len(c.Degraded()) == 0 && logs.count("upstream up again") > 0
	})
	if n := logs.count("upstream up again"); n != 1 {
		t.Fatalf("%d 'upstream up again' lines, want 1", n)
	}
}
