package conntrack

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/nodeagent/nodeagent/agent/config"
)

// Stats sources.
const (
	SourceAuto    = "auto"    // ctnetlink, else /proc/net/stat/nf_conntrack
	SourceNetlink = "netlink" // ctnetlink only
	SourceProcfs  = "procfs"  // /proc/net/stat/nf_conntrack only
)

// Config is the conntrack section of the agent config.
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Source of the table statistics: auto (ctnetlink, falling back to
	// /proc/net/stat/nf_conntrack), netlink or procfs.
	Source   string         `yaml:"source"`
	DNSFlows DNSFlowsConfig `yaml:"dnsFlows"`
	ENA      ENAConfig      `yaml:"ena"`
}

// DNSFlowsConfig shapes the periodic count of DNS entries in the table.
type DNSFlowsConfig struct {
	Enabled bool `yaml:"enabled"`
	// Interval between two counting passes.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one pass; a pass that takes longer is abandoned.
	Timeout time.Duration `yaml:"timeout"`
	// Port is the destination port counted (UDP and TCP).
	Port int `yaml:"port"`
	// MaxTableEntries skips a pass when the table holds more entries: the
	// kernel walks the whole table for each filtered dump.
	MaxTableEntries int `yaml:"maxTableEntries"`
	// Families are the address families counted (ipv4, ipv6), or [auto]:
	// ipv4, and ipv6 when the node has a global IPv6 address. Each family
	// costs one walk of the whole table per protocol.
	Families []string `yaml:"families"`
	// Protocols are the transports counted (udp, tcp): one walk each per
	// family. UDP is what a full table drops first; add tcp to count DNS
	// over TCP (truncated answers, forwarders with force_tcp) too.
	Protocols []string `yaml:"protocols"`
	// ParallelWalks is how many of those walks run at once, each on its own
	// socket and CPU. Each walk keeps its CPU from running anything else
	// for most of its duration, so 1 (the default) is the gentle choice.
	ParallelWalks int `yaml:"parallelWalks"`
}

// Transports counted.
const (
	ProtoUDP = "udp"
	ProtoTCP = "tcp"
)

// Address families.
const (
	FamilyIPv4 = "ipv4"
	FamilyIPv6 = "ipv6"
	FamilyAuto = "auto" // ipv4, and ipv6 when the node has a global IPv6 address
)

// ENAConfig selects the interfaces whose allowance counters are read.
type ENAConfig struct {
	Enabled bool `yaml:"enabled"`
	// Drivers whose interfaces are read (ethtool driver name); other
	// interfaces cost one ioctl per scrape and are skipped.
	Drivers []string `yaml:"drivers"`
	// Interfaces, when set, is a regular expression an interface name must
	// match as well (e.g. "^(eth|ens)").
	Interfaces string `yaml:"interfaces"`
}

// DefaultConfig returns the conntrack defaults.
func DefaultConfig() *Config {
	return &Config{
		Enabled: false,
		Source:  SourceAuto,
		DNSFlows: DNSFlowsConfig{
			Enabled:         true,
			Interval:        30 * time.Second,
			Timeout:         2 * time.Second,
			Port:            53,
			MaxTableEntries: 1_000_000,
			Families:        []string{FamilyAuto},
			Protocols:       []string{ProtoUDP},
			ParallelWalks:   1,
		},
		ENA: ENAConfig{
			Enabled: true,
			Drivers: []string{"ena"},
		},
	}
}

// IsEnabled reports the section's enabled key.
func (c *Config) IsEnabled() bool { return c.Enabled }

// Validate reports every problem with its key path.
func (c *Config) Validate() error {
	var errs config.Errors
	switch c.Source {
	case SourceAuto, SourceNetlink, SourceProcfs:
	default:
		errs.Addf("source", "must be auto, netlink or procfs, got %q", c.Source)
	}
	d := c.DNSFlows
	if d.Interval < time.Second {
		errs.Addf("dnsFlows.interval", "must be >= 1s, got %s", d.Interval)
	}
	if d.Timeout < 10*time.Millisecond {
		errs.Addf("dnsFlows.timeout", "must be >= 10ms, got %s", d.Timeout)
	} else if d.Timeout > d.Interval && d.Interval >= time.Second {
		errs.Addf("dnsFlows.timeout", "must be <= dnsFlows.interval (%s), got %s", d.Interval, d.Timeout)
	}
	if d.Port < 1 || d.Port > 65535 {
		errs.Addf("dnsFlows.port", "must be 1-65535, got %d", d.Port)
	}
	if d.MaxTableEntries < 0 {
		errs.Addf("dnsFlows.maxTableEntries", "must be >= 0 (0: no limit), got %d", d.MaxTableEntries)
	}
	switch i := slices.Index(d.Families, FamilyAuto); {
	case i >= 0 && len(d.Families) > 1:
		errs.Addf(fmt.Sprintf("dnsFlows.families[%d]", i), "auto must be the only entry (ipv4, and ipv6 when the node has a global IPv6 address), got %v", d.Families)
	case i < 0:
		validateSet(&errs, "dnsFlows.families", d.Families, FamilyIPv4, FamilyIPv6)
	}
	validateSet(&errs, "dnsFlows.protocols", d.Protocols, ProtoUDP, ProtoTCP)
	if d.ParallelWalks < 1 || d.ParallelWalks > 4 {
		errs.Addf("dnsFlows.parallelWalks", "must be 1 to 4 (one per family and protocol), got %d", d.ParallelWalks)
	}
	if c.ENA.Enabled && len(c.ENA.Drivers) == 0 {
		errs.Addf("ena.drivers", "must list at least one driver (ENA's is \"ena\") when ena.enabled")
	}
	for i, drv := range c.ENA.Drivers {
		if drv == "" {
			errs.Addf(fmt.Sprintf("ena.drivers[%d]", i), "must not be empty")
		}
	}
	if c.ENA.Interfaces != "" {
		if _, err := regexp.Compile(c.ENA.Interfaces); err != nil {
			errs.Addf("ena.interfaces", "must be a regular expression: %v", err)
		}
	}
	return errs.Err()
}

// validateSet checks that list holds one or both of a and b, each once.
func validateSet(errs *config.Errors, key string, list []string, a, b string) {
	if len(list) == 0 {
		errs.Addf(key, "must list %s, %s or both", a, b)
	}
	for i, v := range list {
		if v != a && v != b {
			errs.Addf(fmt.Sprintf("%s[%d]", key, i), "must be %s or %s, got %q", a, b, v)
		} else if slices.Index(list, v) != i {
			errs.Addf(fmt.Sprintf("%s[%d]", key, i), "%s is listed twice", v)
		}
	}
}
