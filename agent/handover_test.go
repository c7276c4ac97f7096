package agent

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// relay is a feature that hands its state to its successor and reports
// what it saw of its predecessor: the shape of a cache that must keep
// answering across a reload.
type relay struct {
	cfg   *testConfig
	state *atomic.Int64 // handed from instance to instance
	m     prometheus.Counter
	log   *relayLog

	ready   atomic.Bool
	running atomic.Bool
	prev    *relay
}

// relayLog is what the instances of one test recorded.
type relayLog struct {
	mu sync.Mutex
	// prevStoppedBeforeReady counts successors whose predecessor had
	// stopped before they were ready: a gap.
	prevStoppedBeforeReady int
	runs                   int
}

func (r *relay) Name() string { return "gamma" }

func (r *relay) Run(ctx context.Context) error {
	r.running.Store(true)
	defer r.running.Store(false)
	r.log.mu.Lock()
	r.log.runs++
	r.log.mu.Unlock()
	time.Sleep(30 * time.Millisecond) // binding, loading
	if r.prev != nil && !r.prev.running.Load() {
		r.log.mu.Lock()
		r.log.prevStoppedBeforeReady++
		r.log.mu.Unlock()
	}
	r.ready.Store(true)
	r.m.Inc()
	<-ctx.Done()
	r.ready.Store(false)
	return nil
}

func (r *relay) Ready() error {
	if !r.ready.Load() {
		return errNotYet
	}
	return nil
}

func (r *relay) Degraded() []string {
	if r.cfg.NotReady {
		return []string{"zone example.: every upstream down"}
	}
	return nil
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet = notYet{}

func relaySpec(log *relayLog) Spec {
	s := Define("gamma", defaultTestConfig, func(cfg *testConfig, d Deps) (Feature, error) {
		m := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "nodeagent", Subsystem: "gamma", Name: "runs_total", Help: "Runs."})
		d.Metrics.MustRegister(m) // the predecessor still holds it: the agent must defer this
		return &relay{cfg: cfg, state: new(atomic.Int64), m: m, log: log}, nil
	})
	return Handover(s, func(next, prev *relay) {
		next.state = prev.state
		next.prev = prev
	})
}

// TestHandoverReloadHasNoGap: a changed section of a feature defined with
// Handover starts its new instance before the old one stops, hands it the
// old one's state, and registers its metrics once the old ones are gone;
// Degraded is reported on /readyz without gating.
func TestHandoverReloadHasNoGap(t *testing.T) {
	fast := strings.Replace(fast, "alpha", "gamma", 1)
	cm := newConfigMapDir(t, fast)
	log := &relayLog{}
	reg := prometheus.NewRegistry()
	a, err := New(Options{ConfigPath: cm.path(), Specs: []Spec{relaySpec(log)}, Registry: reg, Log: testLog(t)})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	current := func() *relay {
		u := a.sup.running("gamma")
		if u == nil {
			return nil
		}
		return u.feature.(*relay)
	}
	eventually(t, "first instance ready", func() bool { r := current(); return r != nil && r.Ready() == nil })
	first := current()
	first.state.Store(42)

	for i, body := range []string{"gamma:\n  cache: {maxEntries: 7}\n", "gamma:\n  cache: {maxEntries: 8}\n  notReady: true\n"} {
		cm.write(fast + body)
		eventually(t, "the new instance to replace the old", func() bool {
			r := current()
			return r != nil && r != first && r.Ready() == nil && !first.running.Load()
		})
		next := current()
		if next.state.Load() != 42 {
			t.Fatalf("reload %d: state %d, want 42 handed over", i, next.state.Load())
		}
		eventually(t, "the new instance's metric registered", func() bool {
			n, err := testutil.GatherAndCount(reg, "nodeagent_gamma_runs_total")
			return err == nil && n == 1
		})
		first = next
	}
	log.mu.Lock()
	gaps, runs := log.prevStoppedBeforeReady, log.runs
	log.mu.Unlock()
	if runs != 3 || gaps != 0 {
		t.Fatalf("%d runs, %d with the old instance stopped before the new one was ready; want 3 and 0", runs, gaps)
	}

	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	var rep ReadyReport
	must(t, json.Unmarshal(rec.Body.Bytes(), &rep))
	if rec.Code != 200 || len(rep.Features) != 1 || len(rep.Features[0].Degraded) != 1 {
		t.Fatalf("/readyz %d: want 200 with gamma degraded:\n%s", rec.Code, rec.Body)
	}
}
