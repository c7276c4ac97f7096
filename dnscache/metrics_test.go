package dnscache

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
// metrics (names, units, help) with promlint.
func TestMetricsREADME(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	st := newStore(10, 1<<20)
	m, err := newMetrics(reg, storeOf(st))
	if err != nil {
		t.Fatal(err)
	}
	// Give every vector a child so that it is gathered.
	m.request(nil, protoUDP, 1, 0)
	m.upstreamDuration.WithLabelValues("10.0.0.10:53", "NOERROR").Observe(0.001)
	m.upstreamHealthy.WithLabelValues("10.0.0.10:53").Set(1)

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
	for _, match := range regexp.MustCompile("(?m)^\\| `(nodeagent_dnscache_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
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
