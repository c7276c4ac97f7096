package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics, /healthz and /readyz.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/readyz", a.readyz)
	return mux
}

func (a *Agent) serve(ctx context.Context) error {
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
	a.log.Info("serving metrics and health", "addr", a.listener.Addr().String())
	if err := srv.Serve(a.listener); !errors.Is(err, http.ErrServerClosed) {
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
