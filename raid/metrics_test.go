package raid

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nodeagent/nodeagent/agent"
)

// TestMetricsREADME keeps the metric list in README.md true, and lints the
// metrics with promlint.
func TestMetricsREADME(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(DefaultConfig(), agent.Deps{Metrics: reg}); err != nil {
		t.Fatal(err)
	}
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
	for _, m := range regexp.MustCompile("(?m)^\\| `(nodeagent_raid_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		listed = append(listed, m[1])
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
