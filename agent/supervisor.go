package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"time"
)

// State is where a feature is in its life.
type State string

const (
	StateRunning  State = "running"
	StateBackoff  State = "backoff"  // failed; waiting to run again
	StateFailed   State = "failed"   // could not be built; waits for a new config
	StateStopped  State = "stopped"  // cancelled
	StateDisabled State = "disabled" // enabled: false
)

// Status is a feature's state as /readyz and the readiness gate see it.
type Status struct {
	Feature string `json:"feature"`
	State   State  `json:"state"`
	Ready   bool   `json:"ready"`
	Gating  bool   `json:"gating"`
	Reason  string `json:"reason,omitempty"` // why it is not ready
	// Degraded is what a running feature reports impaired (see
	// DegradedReporter); it does not make the feature not ready.
	Degraded  []string  `json:"degraded,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	Restarts  int       `json:"restarts"`
	Since     time.Time `json:"since"`
}

// supervisor runs features concurrently and restarts a failed one with
// exponential backoff; one feature failing never stops the others.
type supervisor struct {
	log     *slog.Logger
	metrics *coreMetrics
	backoff func() RestartConfig

	mu    sync.Mutex
	units map[string]*unit
}

type unit struct {
	feature Feature
	cancel  context.CancelFunc
	done    chan struct{}
	onStop  func() // runs after the feature's Run has returned for good

	// guarded by supervisor.mu
	state     State
	lastError string
	restarts  int
	since     time.Time
}

func newSupervisor(log *slog.Logger, m *coreMetrics, backoff func() RestartConfig) *supervisor {
	return &supervisor{log: log, metrics: m, backoff: backoff, units: map[string]*unit{}}
}

// start runs f under name until stop. onStop runs once f has returned for
// good (e.g. to unregister its metrics). A unit already running under name
// keeps running until stopUnit (a handover).
func (s *supervisor) start(ctx context.Context, name string, f Feature, onStop func()) *unit {
	ctx, cancel := context.WithCancel(ctx)
	u := &unit{feature: f, cancel: cancel, done: make(chan struct{}), onStop: onStop, state: StateRunning, since: time.Now()}
	s.mu.Lock()
	s.units[name] = u
	s.mu.Unlock()
	s.metrics.featureUp.WithLabelValues(name).Set(1)
	go s.loop(ctx, name, u)
	return u
}

// running returns the unit running under name, nil if there is none.
func (s *supervisor) running(name string) *unit {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.units[name]; ok && u.feature != nil && u.state == StateRunning {
		return u
	}
	return nil
}

// mark records a feature that is not running: disabled, or failed to build.
func (s *supervisor) mark(name string, st State, err error) {
	u := &unit{state: st, since: time.Now(), done: closedChan()}
	if err != nil {
		u.lastError = err.Error()
	}
	s.mu.Lock()
	s.units[name] = u
	s.mu.Unlock()
	if st == StateDisabled {
		s.metrics.featureUp.DeleteLabelValues(name)
		s.metrics.featureReady.DeleteLabelValues(name)
	} else {
		s.metrics.featureUp.WithLabelValues(name).Set(0)
	}
}

// fail marks the feature's current unit failed, keeping it: an instance
// that would not stop is still running, and stopAll must wait for it.
func (s *supervisor) fail(name string, err error) {
	s.mu.Lock()
	u, ok := s.units[name]
	s.mu.Unlock()
	if ok {
		s.setState(name, u, StateFailed, err)
		s.metrics.featureUp.WithLabelValues(name).Set(0)
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func (s *supervisor) loop(ctx context.Context, name string, u *unit) {
	defer func() {
		if u.onStop != nil {
			u.onStop()
		}
		close(u.done)
	}()
	attempt := 0
	for {
		began := time.Now()
		err := runGuarded(ctx, u.feature)
		if ctx.Err() != nil {
			s.setState(name, u, StateStopped, nil)
			return
		}
		if err == nil {
			err = errors.New("Run returned before shutdown")
		}
		b := s.backoff()
		if time.Since(began) >= b.ResetAfter {
			attempt = 0
		}
		delay := backoffDelay(b, attempt)
		attempt++
		s.setState(name, u, StateBackoff, err)
		s.mu.Lock()
		u.restarts++
		s.mu.Unlock()
		s.metrics.featureRestarts.WithLabelValues(name).Inc()
		s.log.Error("feature failed; restarting after backoff", "feature", name, "err", err, "backoff", delay, "attempt", attempt)

		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			s.setState(name, u, StateStopped, nil)
			return
		case <-t.C:
		}
		s.setState(name, u, StateRunning, nil)
	}
}

// runGuarded turns a panic in Run's own goroutine into an error. (A panic in
// a goroutine the feature started still ends the process: that is a bug to fix.)
func runGuarded(ctx context.Context, f Feature) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return f.Run(ctx)
}

func backoffDelay(b RestartConfig, attempt int) time.Duration {
	d := b.InitialBackoff
	for range attempt {
		d *= 2
		if d >= b.MaxBackoff {
			return b.MaxBackoff
		}
	}
	return min(d, b.MaxBackoff)
}

func (s *supervisor) setState(name string, u *unit, st State, err error) {
	s.mu.Lock()
	u.state = st
	u.since = time.Now()
	if err != nil {
		u.lastError = err.Error()
	}
	s.mu.Unlock()
	if st == StateRunning {
		s.metrics.featureUp.WithLabelValues(name).Set(1)
	} else if st == StateBackoff {
		s.metrics.featureUp.WithLabelValues(name).Set(0)
	}
}

// stop cancels a feature and waits until its Run has returned, or until ctx
// is done. It reports whether the feature stopped in time.
func (s *supervisor) stop(ctx context.Context, name string) bool {
	s.mu.Lock()
	u, ok := s.units[name]
	s.mu.Unlock()
	if !ok {
		return true
	}
	return s.stopUnit(ctx, name, u)
}

// stopUnit cancels one unit and waits for it like stop.
func (s *supervisor) stopUnit(ctx context.Context, name string, u *unit) bool {
	if u.cancel != nil {
		u.cancel()
	}
	select {
	case <-u.done:
		return true
	case <-ctx.Done():
		s.log.Error("feature did not stop in time", "feature", name)
		return false
	}
}

// stopAll stops every feature concurrently, bounded by ctx.
func (s *supervisor) stopAll(ctx context.Context) bool {
	s.mu.Lock()
	names := make([]string, 0, len(s.units))
	for n := range s.units {
		names = append(names, n)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	ok := make([]bool, len(names))
	for i, n := range names {
		wg.Go(func() { ok[i] = s.stop(ctx, n) })
	}
	wg.Wait()
	for _, v := range ok {
		if !v {
			return false
		}
	}
	return true
}

// statuses reports every feature, sorted by name. gating names the features
// that gate readiness. Ready is asked of running features only.
func (s *supervisor) statuses(gating []string) []Status {
	s.mu.Lock()
	out := make([]Status, 0, len(s.units))
	features := make([]Feature, 0, len(s.units))
	for name, u := range s.units {
		out = append(out, Status{Feature: name, State: u.state, LastError: u.lastError, Restarts: u.restarts, Since: u.since})
		features = append(features, u.feature)
	}
	s.mu.Unlock()
	for i := range out {
		st := &out[i]
		for _, g := range gating {
			st.Gating = st.Gating || g == st.Feature
		}
		switch st.State {
		case StateRunning:
			st.Ready = true
			if rc, ok := features[i].(ReadyChecker); ok {
				if err := rc.Ready(); err != nil {
					st.Ready, st.Reason = false, err.Error()
				}
			}
			if dr, ok := features[i].(DegradedReporter); ok {
				st.Degraded = dr.Degraded()
			}
		case StateDisabled:
			st.Ready, st.Reason = true, "disabled"
		default:
			st.Reason = string(st.State)
			if st.LastError != "" {
				st.Reason += ": " + st.LastError
			}
		}
		if st.State != StateDisabled {
			v := 0.0
			if st.Ready {
				v = 1
			}
			s.metrics.featureReady.WithLabelValues(st.Feature).Set(v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Feature < out[j].Feature })
	return out
}
