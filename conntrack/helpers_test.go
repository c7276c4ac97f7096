package conntrack

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/hostpath"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testDeps(t testing.TB, root string) (agent.Deps, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	level := slog.LevelWarn
	if os.Getenv("CONNTRACK_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return agent.Deps{
		Log:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test", t.Name()),
		Metrics: reg,
		Host:    hostpath.New(root),
	}, reg
}

// scrape gathers reg once and returns every sample by name and labels
// ("name" or `name{k="v",...}` in label order).
func scrape(t testing.TB, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			out[sampleKey(f.GetName(), m)] = sampleValue(m)
		}
	}
	return out
}

func sampleKey(name string, m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return name
	}
	k := name + "{"
	for i, l := range m.GetLabel() {
		if i > 0 {
			k += ","
		}
		k += l.GetName() + "=\"" + l.GetValue() + "\""
	}
	return k + "}"
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
