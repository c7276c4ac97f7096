package interrupt

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeagent/nodeagent/agent/featuretest"
)

// TestMetricsREADME keeps the metric list in README.md true, and lints the
// metrics with promlint.
func TestMetricsREADME(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.notices.WithLabelValues(KindSpot, SourceIMDS).Inc()
	m.withdrawn.WithLabelValues(KindSpot, SourceIMDS).Inc()
	m.bad.WithLabelValues(pathSpot, badJSON).Inc()
	m.timeLeft.WithLabelValues(KindSpot).Observe(120)
	m.reaction.WithLabelValues(StrategySignal).Observe(0.1)
	m.executors.WithLabelValues(StrategySignal, resultSignalled).Inc()
	m.requests.WithLabelValues(pathSpot, "200").Inc()
	m.fail(reasonTaint)
	m.nodeInfo.WithLabelValues("m5.xlarge", "spot", "us-east-1a", "use1-az4", "ami-1").Set(1)
	featuretest.MetricsREADME(t, reg, "README.md", "nodeagent_interrupt_")
}
