package raid

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeagent/nodeagent/agent"
	"github.com/nodeagent/nodeagent/agent/featuretest"
)

// TestMetricsREADME keeps the metric list in README.md true, and lints the
// metrics with promlint.
func TestMetricsREADME(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(DefaultConfig(), agent.Deps{Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	featuretest.MetricsREADME(t, reg, "README.md", "nodeagent_raid_")
}
