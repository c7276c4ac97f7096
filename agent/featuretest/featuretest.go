// Package featuretest holds the checks every feature package runs on
// itself: its README's metrics table against what it registers (plus
// promlint), and its section of the chart's default config against its Go
// defaults.
package featuretest

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	"github.com/nodeagent/nodeagent/agent/config"
)

// MetricsREADME fails t unless the table rows of readme ("| `name` |")
// starting with prefix list exactly the metric families gathered from reg,
// and promlint finds nothing. Give every vector a child first.
func MetricsREADME(t *testing.T, reg *prometheus.Registry, readme, prefix string) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var registered []string
	for _, f := range families {
		registered = append(registered, f.GetName())
	}
	text, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `("+regexp.QuoteMeta(prefix)+"[a-z0-9_]+)`").FindAllStringSubmatch(string(text), -1) {
		listed = append(listed, m[1])
	}
	slices.Sort(registered)
	slices.Sort(listed)
	if !slices.Equal(registered, listed) {
		t.Errorf("%s metrics table is out of date:\nregistered: %s\nlisted:     %s", readme, strings.Join(registered, " "), strings.Join(listed, " "))
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// ShippedDefaults fails t unless section of the chart's default config
// (file) decodes over scrambled to want. scrambled is a fresh default config
// with one field changed, which the file must set back.
func ShippedDefaults[C any](t *testing.T, file, section string, scrambled, want *C) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Skipf("chart not in this checkout: %v", err)
	}
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	node, ok := doc[section]
	if !ok {
		t.Fatalf("%s has no %s section", file, section)
	}
	if err := config.Decode(&node, scrambled, section); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(scrambled, want) {
		t.Fatalf("the chart's %s section differs from the Go defaults:\nfile: %+v\nGo:   %+v", section, scrambled, want)
	}
}
