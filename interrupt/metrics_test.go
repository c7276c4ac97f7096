package interrupt

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var registered []string
	for _, f := range families {
		registered = append(registered, f.GetName())
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, match := range regexp.MustCompile("(?m)^\\| `(nodeagent_interrupt_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		listed = append(listed, match[1])
	}
	slices.Sort(registered)
	slices.Sort(listed)
	if !slices.Equal(registered, listed) {
		t.Errorf("README.md metrics table is out of date:\nregistered: %s\nlisted:     %s", strings.Join(registered, " "), strings.Join(listed, " "))
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
