package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestGeneratedFilesUpToDate: the committed dashboard.json and queries.json
// are what the code generates.
func TestGeneratedFilesUpToDate(t *testing.T) {
	files, err := generated()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range files {
		got, err := os.ReadFile(filepath.FromSlash(path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is out of date: run `cd e2e/tools/dashboard && go run .` and commit the result", path)
		}
	}
}

// readmeMetrics reads the metrics tables of agent/README.md and every
// feature README (each feature's test keeps its table equal to what it
// registers): metric name -> the feature whose README lists it. Histograms
// and summaries add their _bucket/_sum/_count series.
func readmeMetrics(t *testing.T) map[string]string {
	t.Helper()
	readmes, err := filepath.Glob(filepath.Join(repoRoot, "*", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(nodeagent_[a-z0-9_]+)` \\| (\\w+) \\|")
	m := map[string]string{}
	for _, f := range readmes {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		feature := filepath.Base(filepath.Dir(f))
		for _, r := range row.FindAllStringSubmatch(string(b), -1) {
			m[r[1]] = feature
			switch strings.ToLower(r[2]) {
			case "histogram":
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					m[r[1]+s] = feature
				}
			case "summary":
				for _, s := range []string{"_sum", "_count"} {
					m[r[1]+s] = feature
				}
			}
		}
	}
	if len(m) == 0 {
		t.Fatalf("no metrics tables found in %s/*/README.md", repoRoot)
	}
	return m
}

// external says where a metric the queries use comes from when it is not
// the agent's own: "" when it is the agent's.
func external(name string) string {
	switch {
	case name == "up":
		return "Prometheus"
	case strings.HasPrefix(name, "kube_"):
		return "kube-state-metrics"
	case strings.HasPrefix(name, "process_"), strings.HasPrefix(name, "go_"):
		return "client_golang's process and Go collectors (the agent registers both)"
	}
	return ""
}

// TestQueriesUseRegisteredMetrics: every metric an alert or a panel selects
// is one the agent registers (listed in a README), or comes from a named
// other exporter; and a query in a feature's row or alert group uses that
// feature's metrics.
func TestQueriesUseRegisteredMetrics(t *testing.T) {
	registered := readmeMetrics(t)
	qs, err := allQueries(rows())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		for _, s := range q.Selectors {
			name := s[:strings.IndexByte(s, '{')]
			if name == "" {
				t.Errorf("%s: selector %s has no metric name", q.Source, s)
				continue
			}
			feature, ok := registered[name]
			switch {
			case !ok && external(name) == "":
				t.Errorf("%s: %s is not a metric the agent registers (no README metrics table lists it)", q.Source, name)
			case ok && feature != "agent" && feature != q.Feature:
				t.Errorf("%s (feature %s) uses %s, a metric of %s", q.Source, q.Feature, name, feature)
			}
		}
	}
}

// TestEveryMetricShown lists the metrics of the agent and of each feature
// that no panel or alert shows (none, when the dashboard is complete).
func TestEveryMetricShown(t *testing.T) {
	registered := readmeMetrics(t)
	qs, err := allQueries(rows())
	if err != nil {
		t.Fatal(err)
	}
	used := metricNames(qs)
	var features []string
	for _, r := range rows() {
		features = append(features, r.Feature)
	}
	var missing, noRow []string
	for name, feature := range registered {
		histogramPart := strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") || strings.HasSuffix(name, "_bucket")
		if _, base := registered[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count"), "_bucket")]; histogramPart && base {
			continue // the histogram counts as shown when any of its series is
		}
		shown := slices.ContainsFunc(used, func(u string) bool { return u == name || strings.HasPrefix(u, name+"_") && registered[u] == feature })
		switch {
		case shown:
		case slices.Contains(features, feature):
			missing = append(missing, name)
		default:
			noRow = append(noRow, feature+": "+name)
		}
	}
	// Logged, not failed: a feature that adds a metric lands through
	// land.sh, which does not run this module's tests, and must not turn CI
	// red for everyone; the list says what the next dashboard change adds.
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Logf("registered but shown in no panel or alert (add them to their feature's row):\n  %s", strings.Join(missing, "\n  "))
	}
	if len(noRow) > 0 {
		sort.Strings(noRow)
		t.Logf("features without a dashboard row yet (add one in row_<feature>.go):\n  %s", strings.Join(noRow, "\n  "))
	}
}

// TestPanelsDescribed: every panel says what it shows and in which unit,
// and every row is a feature with a README (or the agent).
func TestPanelsDescribed(t *testing.T) {
	for _, r := range rows() {
		if _, err := os.Stat(filepath.Join(repoRoot, r.Feature, "README.md")); err != nil {
			t.Errorf("row %q: feature %q has no README: %v", r.Title, r.Feature, err)
		}
		for _, p := range r.Panels {
			if p.Description == "" || p.Unit == "" || len(p.Queries) == 0 {
				t.Errorf("panel %s / %s needs a description, a unit and a query", r.Title, p.Title)
			}
		}
	}
}
