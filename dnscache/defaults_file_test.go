package dnscache

import (
	"os"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/nodeagent/nodeagent/agent/config"
)

// TestShippedDefaults: the dnscache section of the chart's default config
// decodes to DefaultConfig() (the agent's own test checks every section; this
// one runs without the agent).
func TestShippedDefaults(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../deploy/helm/nodeagent/files/config.yaml")
	if err != nil {
		t.Skipf("chart not in this checkout: %v", err)
	}
	var doc struct {
		DNSCache yaml.Node `yaml:"dnscache"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	got := DefaultConfig()
	got.Cache.MaxEntries = -1 // must be overwritten by the file
	if err := config.Decode(&doc.DNSCache, got, "dnscache"); err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("the chart's dnscache section differs from DefaultConfig():\nfile: %+v\nGo:   %+v", got, want)
	}
}
