package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Handler serves /metrics, /healthz and /readyz.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/readyz", a.readyz)
	return mux
}

func (a *Agent) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		case <-done:
		}
	}()
	a.log.Info("serving metrics and health", "addr", ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// healthz is the liveness probe: the agent's main loop has ticked recently.
func (a *Agent) healthz(w http.ResponseWriter, _ *http.Request) {
	limit := 3*a.cfg.Load().Agent.ReloadInterval + 10*time.Second
	if age := time.Since(time.Unix(0, a.heartbeat.Load())); age > limit {
		http.Error(w, "main loop stuck for "+age.Round(time.Second).String(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// ReadyReport is the JSON body of /readyz.
type ReadyReport struct {
	Ready      bool     `json:"ready"`
	ConfigHash string   `json:"configHash"`
	Blocking   []string `json:"blocking,omitempty"`
	Features   []Status `json:"features"`
}

// readyz is the readiness probe: 200 when every gating feature is ready,
// 503 otherwise; the body says which feature blocks and why.
func (a *Agent) readyz(w http.ResponseWriter, _ *http.Request) {
	ready, statuses, blocking := a.readiness()
	rep := ReadyReport{Ready: ready, ConfigHash: a.cfg.Load().Hash, Blocking: blocking, Features: statuses}
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

// Binding the metrics port: exactly one process answers it at any moment.
// With SO_REUSEPORT, two agents on a node during a surge rollout both
// answered and the kernel spread scrapes between them, so counters jumped
// back and forth. The port is bound plainly instead: while the previous
// agent holds it, the new one serves its probe socket (the pod's readiness
// probe asks that, not the port), keeps retrying with jittered backoff, and
// takes the port over once the old agent has let go of it, within about
// metricsRetryCap. (Go sets SO_REUSEADDR on listeners, so connections in
// TIME_WAIT do not hold the port.)
var metricsRetry = wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: metricsRetryCap}

const metricsRetryCap = time.Second

// listenMetrics binds addr, waiting while another process holds it, until
// ctx is done (then it returns nil, nil). Any other error is returned.
func (a *Agent) listenMetrics(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	b := metricsRetry
	var waitingSince time.Time
	lastLog := time.Time{}
	for {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err == nil {
			if !waitingSince.IsZero() {
				a.log.Info("metrics port free: bound", "addr", addr, "waited", time.Since(waitingSince).Round(time.Millisecond))
			}
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
		if waitingSince.IsZero() {
			waitingSince = time.Now()
		}
		if time.Since(lastLog) >= time.Minute {
			lastLog = time.Now()
			a.log.Warn("metrics port held by another process (the previous agent during a rollout?); waiting for it, probes keep answering on the probe socket",
				"addr", addr, "waiting", time.Since(waitingSince).Round(time.Second))
		}
		t := time.NewTimer(b.Step())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
	}
}

// listenUnix listens on a unix socket at path, replacing a stale one left by
// an agent that was killed.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		_ = l.Close()
	}
}

// Probe asks the agent behind the unix socket at path for endpoint
// ("/healthz" or "/readyz"). It returns nil on 200, and an error carrying the
// body otherwise: `nodeagent probe` is the pod's exec probe.
func Probe(ctx context.Context, path, endpoint string) error {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+endpoint, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s\n%s", endpoint, resp.Status, body)
	}
	return nil
}
