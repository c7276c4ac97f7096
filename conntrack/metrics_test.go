package conntrack

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netns"
)

// fixedENA serves the ENA fixture as an ENA interface eth0.
type fixedENA struct{ s []enaStats }

func (f fixedENA) read(time.Time) ([]enaStats, error) { return f.s, nil }
func (fixedENA) close()                               {}

// TestMetricsREADME keeps the metric list in README.md true, and lints every
// metric as exposition text with promlint (the statistics from the fixture
// /proc of a 6.18 kernel, the ENA counters from an ENA fixture).
func TestMetricsREADME(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Source = SourceProcfs
	deps, reg := testDeps(t, "/")
	c, err := newIn(cfg, deps, netns.None(), "testdata/root/proc")
	if err != nil {
		t.Fatal(err)
	}
	ena, _ := enaAllowances("eth0", readEthtoolFixture(t, "ethtool-ena.txt"))
	c.col.ena = fixedENA{[]enaStats{ena}}
	c.col.dns = &dnsResult{udp: dnsCount{flows: 10, unreplied: 2}, at: time.Now()}
	c.col.m.readErrors.WithLabelValues(SourceNetlink, reasonPermission).Inc()
	c.col.m.dnsPasses.WithLabelValues(resultOK).Inc()

	got := scrape(t, reg)
	for k, want := range map[string]float64{
		"nodeagent_conntrack_entries":                                                  50000,
		"nodeagent_conntrack_entries_limit":                                            262144,
		"nodeagent_conntrack_utilization_ratio":                                        50000.0 / 262144,
		"nodeagent_conntrack_clash_resolve_total":                                      12,
		"nodeagent_conntrack_chaintoolong_total":                                       4,
		"nodeagent_conntrack_drop_total":                                               154,
		`nodeagent_conntrack_stats_source{source="procfs"}`:                            1,
		`nodeagent_conntrack_stats_source{source="netlink"}`:                           0,
		`nodeagent_conntrack_ena_linklocal_allowance_exceeded_total{interface="eth0"}`: 4096,
		`nodeagent_conntrack_ena_conntrack_allowance_available{interface="eth0"}`:      131072,
		`nodeagent_conntrack_dns_flows{proto="udp"}`:                                   10,
		`nodeagent_conntrack_dns_flows_unreplied{proto="udp"}`:                         2,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}

	// Every metric the feature can export: the collector's descriptions and
	// the registered vectors.
	var registered []string
	ch := make(chan *prometheus.Desc, 100)
	c.col.Describe(ch)
	close(ch)
	for d := range ch {
		registered = append(registered, regexp.MustCompile(`fqName: "([a-z_]+)"`).FindStringSubmatch(d.String())[1])
	}
	registered = append(registered, "nodeagent_conntrack_read_errors_total", "nodeagent_conntrack_dns_count_passes_total")
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(nodeagent_conntrack_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
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

// TestNoStats: with neither source readable the scrape says so (source
// none, read errors by reason) instead of failing.
func TestNoStats(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Source = SourceProcfs
	cfg.ENA.Enabled = false
	deps, reg := testDeps(t, "/")
	if _, err := newIn(cfg, deps, netns.None(), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	scrape(t, reg)
	// The second scrape shows the first one's read errors (the error
	// counter may be gathered before the collector counts).
	got := scrape(t, reg)
	if got[`nodeagent_conntrack_stats_source{source="none"}`] != 1 {
		t.Errorf("stats_source none = %v, want 1", got[`nodeagent_conntrack_stats_source{source="none"}`])
	}
	if got[`nodeagent_conntrack_read_errors_total{reason="unsupported",source="procfs"}`] < 1 {
		t.Errorf("read errors: %v", got)
	}
	if _, ok := got["nodeagent_conntrack_entries"]; ok {
		t.Error("entries exported without a table")
	}
}
