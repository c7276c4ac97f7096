package conntrack

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nodeagent/nodeagent/agent/config"
	"github.com/nodeagent/nodeagent/agent/featuretest"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string // key paths with a problem
	}{
		{"defaults", func(*Config) {}, nil},
		{"source", func(c *Config) { c.Source = "kernel" }, []string{"source"}},
		{"durations", func(c *Config) { c.DNSFlows.Interval = 0; c.DNSFlows.Timeout = time.Millisecond },
			[]string{"dnsFlows.interval", "dnsFlows.timeout"}},
		{"timeout over interval", func(c *Config) { c.DNSFlows.Timeout = time.Minute }, []string{"dnsFlows.timeout"}},
		{"port", func(c *Config) { c.DNSFlows.Port = 70000 }, []string{"dnsFlows.port"}},
		{"budget", func(c *Config) { c.DNSFlows.MaxTableEntries = -1 }, []string{"dnsFlows.maxTableEntries"}},
		{"families", func(c *Config) { c.DNSFlows.Families = []string{"ipv4", "ip6", "ipv4"} },
			[]string{"dnsFlows.families[1]", "dnsFlows.families[2]"}},
		{"protocols", func(c *Config) { c.DNSFlows.Protocols = []string{"sctp"} }, []string{"dnsFlows.protocols[0]"}},
		{"no families", func(c *Config) { c.DNSFlows.Families = nil }, []string{"dnsFlows.families"}},
		{"explicit families", func(c *Config) { c.DNSFlows.Families = []string{"ipv6", "ipv4"} }, nil},
		{"auto with others", func(c *Config) { c.DNSFlows.Families = []string{"ipv4", "auto"} }, []string{"dnsFlows.families[1]"}},
		{"parallel walks", func(c *Config) { c.DNSFlows.ParallelWalks = 5 }, []string{"dnsFlows.parallelWalks"}},
		{"no walks", func(c *Config) { c.DNSFlows.ParallelWalks = 0 }, []string{"dnsFlows.parallelWalks"}},
		{"drivers", func(c *Config) { c.ENA.Drivers = nil }, []string{"ena.drivers"}},
		{"empty driver", func(c *Config) { c.ENA.Drivers = []string{"ena", ""} }, []string{"ena.drivers[1]"}},
		{"interfaces", func(c *Config) { c.ENA.Interfaces = "eth(" }, []string{"ena.interfaces"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(c)
			var got []string
			if err := c.Validate(); err != nil {
				for _, fe := range err.(config.Errors) {
					got = append(got, fe.Path)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems at %v, want %v (%v)", got, tc.want, c.Validate())
			}
		})
	}
}

func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("enabled: true\ndnsFlows:\n  intervall: 10s\n  timeout: 5\n"), &n); err != nil {
		t.Fatal(err)
	}
	err := config.Decode(&n, DefaultConfig(), "conntrack")
	if err == nil || !strings.Contains(err.Error(), "conntrack.dnsFlows.intervall") || !strings.Contains(err.Error(), "conntrack.dnsFlows.timeout") {
		t.Errorf("got %v, want the unknown key and the unitless duration named", err)
	}
}

// TestShippedDefaults: the conntrack section of the chart's default config
// decodes to DefaultConfig().
func TestShippedDefaults(t *testing.T) {
	t.Parallel()
	got := DefaultConfig()
	got.DNSFlows.Port = -1 // must be overwritten by the file
	featuretest.ShippedDefaults(t, "../deploy/helm/nodeagent/files/config.yaml", "conntrack", got, DefaultConfig())
}
