package interrupt

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeIMDS is an IMDSv2 endpoint whose answers a test changes while it runs:
// the faults the real mock cannot make.
type fakeIMDS struct {
	*httptest.Server
	mu     sync.Mutex
	paths  map[string]func(w http.ResponseWriter) // below /latest/meta-data/
	tokens map[string]bool
	issued atomic.Int64
	reqs   map[string]int
}

func newFakeIMDS(t *testing.T) *fakeIMDS {
	f := &fakeIMDS{paths: map[string]func(http.ResponseWriter){}, tokens: map[string]bool{}, reqs: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeIMDS) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" && r.Method == http.MethodPut {
		tok := fmt.Sprintf("token-%d", f.issued.Add(1))
		f.mu.Lock()
		f.tokens[tok] = true
		f.mu.Unlock()
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		fmt.Fprint(w, tok)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")
	f.mu.Lock()
	ok := f.tokens[r.Header.Get("X-Aws-Ec2-Metadata-Token")]
	h := f.paths[path]
	f.reqs[path]++
	f.mu.Unlock()
	if !ok {
		http.Error(w, "401 - Unauthorized", http.StatusUnauthorized)
		return
	}
	if h == nil {
		http.NotFound(w, r)
		return
	}
	h(w)
}

func (f *fakeIMDS) set(path string, h func(w http.ResponseWriter)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h == nil {
		delete(f.paths, path)
	} else {
		f.paths[path] = h
	}
}

// expireTokens makes every token issued so far invalid, as IMDS does when
// a token's TTL passes.
func (f *fakeIMDS) expireTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = map[string]bool{}
}

func (f *fakeIMDS) requests(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqs[path]
}

func body(s string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) { fmt.Fprint(w, s) }
}

func spotBody(at time.Time) func(http.ResponseWriter) {
	return body(fmt.Sprintf(`{"action": "terminate", "time": %q}`, at.UTC().Format(time.RFC3339)))
}

// TestBadInputNeverDecommissions: each fault is counted, and no executor
// is signalled, until a good notice comes.
func TestBadInputNeverDecommissions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		fault  func(http.ResponseWriter)
		metric func(f *Interrupt) float64
	}{
		{"timeout", func(w http.ResponseWriter) {
			time.Sleep(700 * time.Millisecond)
			spotBody(time.Now().Add(2 * time.Minute))(w)
		},
			func(f *Interrupt) float64 { return counter(f.m.requests.WithLabelValues(pathSpot, "timeout")) }},
		{"5xx", func(w http.ResponseWriter) { http.Error(w, "oops", http.StatusInternalServerError) },
			func(f *Interrupt) float64 { return counter(f.m.requests.WithLabelValues(pathSpot, "500")) }},
		{"garbage JSON", body(`{"action": "terminate", "time": `),
			func(f *Interrupt) float64 { return counter(f.m.bad.WithLabelValues(pathSpot, badJSON)) }},
		{"HTML", body(`<html><body>hello</body></html>`),
			func(f *Interrupt) float64 { return counter(f.m.bad.WithLabelValues(pathSpot, badJSON)) }},
		{"unknown action", body(`{"action": "explode", "time": "2099-01-01T00:00:00Z"}`),
			func(f *Interrupt) float64 { return counter(f.m.bad.WithLabelValues(pathSpot, badAction)) }},
		{"bad time", body(`{"action": "terminate", "time": "tomorrow"}`),
			func(f *Interrupt) float64 { return counter(f.m.bad.WithLabelValues(pathSpot, badTime)) }},
		{"past time", spotBody(time.Now().Add(-time.Hour)),
			func(f *Interrupt) float64 { return counter(f.m.bad.WithLabelValues(pathSpot, badPastTime)) }},
		{"maintenance garbage", nil,
			func(f *Interrupt) float64 { return counter(f.m.bad.WithLabelValues(pathMaintenance, badJSON)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeIMDS(t)
			if tc.fault != nil {
				srv.set(pathSpot, tc.fault)
			} else {
				srv.set(pathMaintenance, body(`[{"State": "active", "NotBefore": 7}]`))
			}
			c := newFakeCluster(executorPod("exec-1", "c1"))
			tk := newFakeTasks()
			f, _ := testFeature(t, testConfig(srv.URL), c, nil, tk)
			runFeature(t, f)
			eventually(t, 10*time.Second, "the fault counted three times", func() bool { return tc.metric(f) >= 3 })
			if got := tk.got("c1"); len(got) != 0 || len(c.taints()) != 0 {
				t.Fatalf("bad input decommissioned: signals %v, taints %v", got, c.taints())
			}
			// A good notice afterwards still works.
			srv.set(pathMaintenance, nil)
			srv.set(pathSpot, spotBody(time.Now().Add(2*time.Minute)))
			eventually(t, 10*time.Second, "the good notice", func() bool { return len(tk.got("c1")) == 1 })
		})
	}
}

// TestTokenExpiry: a 401 after the token expired makes the client drop it
// and get a new one; the notice still arrives.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	srv := newFakeIMDS(t)
	c := newFakeCluster(executorPod("exec-1", "c1"))
	tk := newFakeTasks()
	f, _ := testFeature(t, testConfig(srv.URL), c, nil, tk)
	runFeature(t, f)
	eventually(t, 10*time.Second, "polling with a token", func() bool { return counter(f.m.requests.WithLabelValues(pathSpot, "404")) >= 2 })
	srv.expireTokens()
	srv.set(pathSpot, spotBody(time.Now().Add(2*time.Minute)))
	eventually(t, 10*time.Second, "the notice after a new token", func() bool { return len(tk.got("c1")) == 1 })
	// The four paths are polled at once with one token: the 401 lands on
	// whichever request the IMDS serves first after the expiry (a slow one
	// straddling it, under load), and the SDK's new token then serves the
	// others. Counted on some path, not necessarily the spot one.
	n := 0.0
	for _, p := range noticePaths {
		n += counter(f.m.requests.WithLabelValues(p, "401"))
	}
	if n < 1 {
		t.Errorf("imds_requests_total{401} = %v over the notice paths, want the refused request counted", n)
	}
	if n := srv.issued.Load(); n < 2 {
		t.Errorf("%d tokens issued, want a new one after the 401", n)
	}
}

// TestDisappearingNotice: a maintenance notice that goes away before its
// decommission is due cancels it; a spot notice that flickers is counted
// as withdrawn, and a reappearance is the same notice (signalled once).
func TestDisappearingNotice(t *testing.T) {
	t.Parallel()
	srv := newFakeIMDS(t)
	nb := time.Now().Add(30 * time.Minute).UTC().Format("2 Jan 2006 15:04:05 GMT")
	srv.set(pathMaintenance, body(`[{"Code": "system-reboot", "State": "active", "EventId": "instance-event-1", "NotBefore": "`+nb+`"}]`))
	c := newFakeCluster(executorPod("exec-1", "c1"))
	tk := newFakeTasks()
	f, _ := testFeature(t, testConfig(srv.URL), c, nil, tk)
	runFeature(t, f)
	eventually(t, 10*time.Second, "the maintenance notice", func() bool {
		return counter(f.m.notices.WithLabelValues(KindMaintenance, SourceIMDS)) == 1
	})
	srv.set(pathMaintenance, nil)
	eventually(t, 10*time.Second, "withdrawn", func() bool {
		return counter(f.m.withdrawn.WithLabelValues(KindMaintenance, SourceIMDS)) == 1
	})
	if ev := c.eventsWith("InterruptionWithdrawn"); len(ev) != 1 {
		t.Errorf("events = %v, want the cancellation on the Node", ev)
	}

	srv.set(pathSpot, spotBody(time.Now().Add(2*time.Minute)))
	eventually(t, 10*time.Second, "signalled", func() bool { return len(tk.got("c1")) == 1 })
	srv.set(pathSpot, nil)
	eventually(t, 10*time.Second, "spot withdrawn", func() bool {
		return counter(f.m.withdrawn.WithLabelValues(KindSpot, SourceIMDS)) == 1
	})
	srv.set(pathSpot, spotBody(time.Now().Add(2*time.Minute)))
	polls := srv.requests(pathSpot)
	eventually(t, 10*time.Second, "a few more polls", func() bool { return srv.requests(pathSpot) >= polls+3 })
	if got := tk.got("c1"); len(got) != 1 {
		t.Errorf("signals = %v, want exactly one", got)
	}
}

// TestEndpointDown: nothing listening is counted as errors, not fatal.
func TestEndpointDown(t *testing.T) {
	t.Parallel()
	srv := newFakeIMDS(t)
	url := srv.URL
	srv.Close()
	f, _ := testFeature(t, testConfig(url), newFakeCluster(), nil, newFakeTasks())
	runFeature(t, f)
	eventually(t, 10*time.Second, "errors counted", func() bool {
		return counter(f.m.requests.WithLabelValues("api/token", "error")) >= 3
	})
}
