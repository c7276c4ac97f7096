package dnscache

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/nodeagent/nodeagent/agent/config"
)

// Firewall modes.
const (
	FirewallNftables = "nftables"
	FirewallIptables = "iptables"
	FirewallNone     = "none"
)

// Upstream protocols.
const (
	ProtoUDP = "udp" // UDP, retried over TCP when truncated
	ProtoTCP = "tcp" // TCP with connection reuse
)

// Config is the dnscache section of the agent config.
type Config struct {
	// Enabled runs the cache. Setting it to false makes the agent call
	// Teardown, which removes the interface and the firewall rules.
	Enabled bool `yaml:"enabled"`
	// InterfaceName is the dummy interface holding Addresses.
	InterfaceName string `yaml:"interfaceName"`
	// InterfaceType is the link kind: dummy (as node-local-dns), or bridge
	// (a bridge without ports holds addresses the same way) for kernels
	// built without the dummy driver.
	InterfaceType string `yaml:"interfaceType"`
	// ManageInterface creates the interface and its addresses. Turn it off
	// when the addresses already exist on the node (or in tests on loopback).
	ManageInterface bool `yaml:"manageInterface"`
	// Addresses are the IPs the cache serves on: the link-local address and,
	// for iptables-mode kube-proxy, the kube-dns ClusterIP.
	Addresses []string `yaml:"addresses"`
	// Port is the DNS port served on every address.
	Port int `yaml:"port"`
	// ReconcileInterval is how often the interface and rules are re-ensured
	// (also on every link change).
	ReconcileInterval time.Duration `yaml:"reconcileInterval"`
	// ShutdownGrace bounds how long a stopping server keeps answering the
	// queries it already received.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// MaxQuerySize is the largest query accepted (bytes); bigger ones get FORMERR.
	MaxQuerySize int `yaml:"maxQuerySize"`
	// UDPBufferSize is the EDNS0 buffer size advertised to clients and upstreams.
	UDPBufferSize int `yaml:"udpBufferSize"`
	// MaxTCPConnections bounds the client TCP connections open at once: a
	// new one closes the one idle longest (or is refused when every one is
	// busy). Each idles out after 10s without a query.
	MaxTCPConnections int `yaml:"maxTCPConnections"`

	Firewall   FirewallConfig   `yaml:"firewall"`
	Cache      CacheConfig      `yaml:"cache"`
	ClusterDNS ClusterDNSConfig `yaml:"clusterDNS"`
	Node       NodeDNSConfig    `yaml:"node"`
	Upstream   UpstreamConfig   `yaml:"upstream"`
	// Zones are extra forwarding zones, matched before the cluster and node zones.
	Zones []ZoneConfig `yaml:"zones"`
	// LocalNXDOMAIN answers names that cannot exist on the node (localnx.go).
	LocalNXDOMAIN LocalNXConfig `yaml:"localNXDOMAIN"`
}

// FirewallConfig selects how the conntrack-bypass and accept rules are made.
type FirewallConfig struct {
	// Mode is nftables (a table of our own), iptables, or none.
	Mode string `yaml:"mode"`
	// Table is the nftables table name (family inet) or the iptables rule comment.
	Table string `yaml:"table"`
}

// CacheConfig bounds and shapes the cache.
type CacheConfig struct {
	MaxEntries int `yaml:"maxEntries"`
	MaxBytes   int `yaml:"maxBytes"`
	// SuccessTTL caps the TTL of positive answers.
	SuccessTTL time.Duration `yaml:"successTTL"`
	// DenialTTL caps the TTL of NXDOMAIN/NODATA answers (RFC 2308, from the SOA).
	DenialTTL time.Duration `yaml:"denialTTL"`
	// MinTTL is the shortest time any cacheable answer is kept.
	MinTTL time.Duration `yaml:"minTTL"`
	// ServfailTTL is how long a SERVFAIL is cached; 0 never caches it. A
	// SERVFAIL never replaces a good entry.
	ServfailTTL time.Duration `yaml:"servfailTTL"`
	// StaleTTL is how long past expiry an entry may still be served when
	// every upstream fails (RFC 8767); 0 disables serve-stale.
	StaleTTL time.Duration `yaml:"staleTTL"`
	// StaleAnswerTTL is the TTL put on stale answers (RFC 8767 recommends 30s).
	StaleAnswerTTL time.Duration `yaml:"staleAnswerTTL"`
	// StaleWait is how long a client waits for the upstreams when an expired
	// entry could answer it (RFC 8767's client response timer, 1.8s): then
	// it gets the stale answer while the upstream query goes on. 0 waits for
	// the upstreams to answer or fail.
	StaleWait time.Duration  `yaml:"staleWait"`
	Prefetch  PrefetchConfig `yaml:"prefetch"`
}

// PrefetchConfig refreshes popular entries before they expire.
type PrefetchConfig struct {
	Enabled bool `yaml:"enabled"`
	// MinHits is how many hits an entry needs during its life to be prefetched.
	MinHits int `yaml:"minHits"`
	// Percent: prefetch once less than this share of the TTL remains.
	Percent int `yaml:"percent"`
}

// ClusterDNSConfig is where the cluster domain and reverse zones go.
type ClusterDNSConfig struct {
	// Domain is the cluster domain.
	Domain string `yaml:"domain"`
	// ReverseZones also go to the cluster DNS.
	ReverseZones []string `yaml:"reverseZones"`
	// Addresses ("IP" or "IP:port") of the cluster DNS. When empty, the
	// ClusterIP of Service is used.
	Addresses []string `yaml:"addresses"`
	// Service is "namespace/name" of a Service in front of the cluster DNS
	// pods that is not the kube-dns ClusterIP the cache may be serving.
	Service string `yaml:"service"`
	// Protocol to the cluster DNS: tcp (default, connections reused) or udp.
	Protocol string `yaml:"protocol"`
}

// NodeDNSConfig is where every other name goes: the node's resolvers.
type NodeDNSConfig struct {
	// ResolvConf is the node's resolv.conf below the host root; a file naming
	// only the systemd-resolved stub (127.0.0.53) is replaced by
	// /run/systemd/resolve/resolv.conf.
	ResolvConf string `yaml:"resolvConf"`
	// Addresses override ResolvConf when set.
	Addresses []string `yaml:"addresses"`
	Protocol  string   `yaml:"protocol"`
}

// UpstreamConfig tunes how upstreams are queried.
type UpstreamConfig struct {
	// Timeout bounds one query to one upstream.
	Timeout time.Duration `yaml:"timeout"`
	// MaxFails consecutive failures mark an upstream down until a health check passes.
	MaxFails int `yaml:"maxFails"`
	// HealthCheckInterval is how often down upstreams are probed.
	HealthCheckInterval time.Duration `yaml:"healthCheckInterval"`
	// MaxConns bounds the pipelined TCP connections per upstream (a new one is
	// opened when every connection carries 64 queries in flight).
	MaxConns int `yaml:"maxConns"`
	// MaxConcurrent bounds in-flight upstream queries in total.
	MaxConcurrent int `yaml:"maxConcurrent"`
}

// ZoneConfig forwards one zone.
type ZoneConfig struct {
	Name      string   `yaml:"name"`
	Addresses []string `yaml:"addresses"`
	Protocol  string   `yaml:"protocol"`
}

// DefaultConfig is the cache as node-local-dns would run it, disabled.
func DefaultConfig() *Config {
	return &Config{
		Enabled:           false,
		InterfaceName:     "nodelocaldns",
		InterfaceType:     "dummy",
		ManageInterface:   true,
		Addresses:         []string{"169.254.20.10"},
		Port:              53,
		ReconcileInterval: 60 * time.Second,
		ShutdownGrace:     2 * time.Second,
		MaxQuerySize:      512,
		UDPBufferSize:     1232,
		MaxTCPConnections: 1000,
		Firewall:          FirewallConfig{Mode: FirewallNftables, Table: "nodeagent-dnscache"},
		Cache: CacheConfig{
			MaxEntries:     9984,
			MaxBytes:       16 << 20,
			SuccessTTL:     30 * time.Second,
			DenialTTL:      5 * time.Second,
			MinTTL:         0,
			ServfailTTL:    time.Second,
			StaleTTL:       time.Hour,
			StaleAnswerTTL: 30 * time.Second,
			StaleWait:      1800 * time.Millisecond,
			Prefetch:       PrefetchConfig{Enabled: true, MinHits: 2, Percent: 10},
		},
		ClusterDNS: ClusterDNSConfig{
			Domain:       "cluster.local",
			ReverseZones: []string{"in-addr.arpa", "ip6.arpa"},
			Addresses:    []string{},
			Service:      "kube-system/kube-dns-upstream",
			Protocol:     ProtoTCP,
		},
		Node: NodeDNSConfig{ResolvConf: "/etc/resolv.conf", Addresses: []string{}, Protocol: ProtoUDP},
		Upstream: UpstreamConfig{
			Timeout:             2 * time.Second,
			MaxFails:            2,
			HealthCheckInterval: 5 * time.Second,
			MaxConns:            4,
			MaxConcurrent:       1000,
		},
		Zones:         []ZoneConfig{},
		LocalNXDOMAIN: LocalNXConfig{Schema: true, Domains: []string{}, Exempt: []string{}, RFC8020: true},
	}
}

// IsEnabled reports whether the cache should run.
func (c *Config) IsEnabled() bool { return c.Enabled }

// Validate reports every problem with its key path.
func (c *Config) Validate() error {
	var errs config.Errors
	if c.InterfaceName == "" || len(c.InterfaceName) > 15 || strings.ContainsAny(c.InterfaceName, "/ \t\n:") {
		errs.Addf("interfaceName", "must be a Linux interface name (1-15 characters, no '/', ':' or spaces), got %q", c.InterfaceName)
	}
	if c.InterfaceType != "dummy" && c.InterfaceType != "bridge" {
		errs.Addf("interfaceType", "must be dummy or bridge, got %q", c.InterfaceType)
	}
	served := map[netip.AddrPort]bool{}
	if len(c.Addresses) == 0 {
		errs.Addf("addresses", "must list at least one address")
	}
	if c.Port < 1 || c.Port > 65535 {
		errs.Addf("port", "must be 1-65535, got %d", c.Port)
	}
	for i, a := range c.Addresses {
		ip, err := netip.ParseAddr(a)
		if err != nil || ip.Zone() != "" {
			errs.Addf(fmt.Sprintf("addresses[%d]", i), "must be an IP address, got %q", a)
			continue
		}
		served[netip.AddrPortFrom(ip.Unmap(), uint16(c.Port))] = true
	}
	if c.ReconcileInterval < time.Second {
		errs.Addf("reconcileInterval", "must be >= 1s, got %s", c.ReconcileInterval)
	}
	if c.ShutdownGrace < 0 {
		errs.Addf("shutdownGrace", "must be >= 0s, got %s", c.ShutdownGrace)
	}
	if c.MaxQuerySize < 512 || c.MaxQuerySize > 65535 {
		errs.Addf("maxQuerySize", "must be 512-65535, got %d", c.MaxQuerySize)
	}
	if c.UDPBufferSize < 512 || c.UDPBufferSize > 65535 {
		errs.Addf("udpBufferSize", "must be 512-65535, got %d", c.UDPBufferSize)
	}
	if c.MaxTCPConnections < 1 {
		errs.Addf("maxTCPConnections", "must be >= 1, got %d", c.MaxTCPConnections)
	}
	switch c.Firewall.Mode {
	case FirewallNftables, FirewallIptables, FirewallNone:
	default:
		errs.Addf("firewall.mode", "must be nftables, iptables or none, got %q", c.Firewall.Mode)
	}
	if c.Firewall.Mode != FirewallNone && (c.Firewall.Table == "" || len(c.Firewall.Table) > 64 || strings.ContainsAny(c.Firewall.Table, " \t\n\"'")) {
		errs.Addf("firewall.table", "must be 1-64 characters without spaces or quotes, got %q", c.Firewall.Table)
	}

	cc := c.Cache
	if cc.MaxEntries < 1 {
		errs.Addf("cache.maxEntries", "must be >= 1, got %d", cc.MaxEntries)
	}
	if cc.MaxBytes < 64<<10 {
		errs.Addf("cache.maxBytes", "must be >= 65536, got %d", cc.MaxBytes)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
		min time.Duration
	}{
		{"cache.successTTL", cc.SuccessTTL, time.Second},
		{"cache.denialTTL", cc.DenialTTL, time.Second},
		{"cache.minTTL", cc.MinTTL, 0},
		{"cache.servfailTTL", cc.ServfailTTL, 0},
		{"cache.staleTTL", cc.StaleTTL, 0},
		{"cache.staleAnswerTTL", cc.StaleAnswerTTL, time.Second},
	} {
		if d.v < d.min {
			errs.Addf(d.key, "must be >= %s, got %s", d.min, d.v)
		} else if d.v%time.Second != 0 {
			errs.Addf(d.key, "must be whole seconds (DNS TTLs are), got %s", d.v)
		}
	}
	if cc.StaleWait < 0 {
		errs.Addf("cache.staleWait", "must be >= 0s, got %s", cc.StaleWait)
	}
	if cc.MinTTL > cc.SuccessTTL {
		errs.Addf("cache.minTTL", "must be <= cache.successTTL (%s), got %s", cc.SuccessTTL, cc.MinTTL)
	}
	if cc.ServfailTTL > 5*time.Minute {
		errs.Addf("cache.servfailTTL", "must be <= 5m (RFC 2308), got %s", cc.ServfailTTL)
	}
	if cc.Prefetch.Enabled {
		if cc.Prefetch.MinHits < 1 {
			errs.Addf("cache.prefetch.minHits", "must be >= 1, got %d", cc.Prefetch.MinHits)
		}
		if cc.Prefetch.Percent < 1 || cc.Prefetch.Percent > 90 {
			errs.Addf("cache.prefetch.percent", "must be 1-90, got %d", cc.Prefetch.Percent)
		}
	}

	cd := c.ClusterDNS
	if _, ok := dns.IsDomainName(cd.Domain); !ok || cd.Domain == "" || cd.Domain == "." {
		errs.Addf("clusterDNS.domain", "must be a domain name, got %q", cd.Domain)
	}
	for i, z := range cd.ReverseZones {
		if _, ok := dns.IsDomainName(z); !ok || z == "" {
			errs.Addf(fmt.Sprintf("clusterDNS.reverseZones[%d]", i), "must be a domain name, got %q", z)
		}
	}
	if len(cd.Addresses) == 0 && cd.Service == "" {
		errs.Addf("clusterDNS", "needs addresses or service")
	}
	if cd.Service != "" {
		if ns, name, ok := strings.Cut(cd.Service, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			errs.Addf("clusterDNS.service", "must be \"namespace/name\", got %q", cd.Service)
		}
	}
	validateUpstreams(&errs, "clusterDNS.addresses", cd.Addresses, served)
	validateProto(&errs, "clusterDNS.protocol", cd.Protocol)

	if c.Node.ResolvConf == "" && len(c.Node.Addresses) == 0 {
		errs.Addf("node", "needs resolvConf or addresses")
	}
	validateUpstreams(&errs, "node.addresses", c.Node.Addresses, served)
	validateProto(&errs, "node.protocol", c.Node.Protocol)

	u := c.Upstream
	if u.Timeout < 10*time.Millisecond {
		errs.Addf("upstream.timeout", "must be >= 10ms, got %s", u.Timeout)
	}
	if u.MaxFails < 1 {
		errs.Addf("upstream.maxFails", "must be >= 1, got %d", u.MaxFails)
	}
	if u.HealthCheckInterval < 100*time.Millisecond {
		errs.Addf("upstream.healthCheckInterval", "must be >= 100ms, got %s", u.HealthCheckInterval)
	}
	if u.MaxConns < 1 {
		errs.Addf("upstream.maxConns", "must be >= 1, got %d", u.MaxConns)
	}
	if u.MaxConcurrent < 1 {
		errs.Addf("upstream.maxConcurrent", "must be >= 1, got %d", u.MaxConcurrent)
	}

	seen := map[string]bool{}
	for i, z := range c.Zones {
		p := fmt.Sprintf("zones[%d]", i)
		if _, ok := dns.IsDomainName(z.Name); !ok || z.Name == "" {
			errs.Addf(p+".name", "must be a domain name, got %q", z.Name)
		} else if n := dns.CanonicalName(z.Name); seen[n] {
			errs.Addf(p+".name", "zone %q is listed twice", z.Name)
		} else {
			seen[n] = true
		}
		if len(z.Addresses) == 0 {
			errs.Addf(p+".addresses", "must list at least one upstream")
		}
		validateUpstreams(&errs, p+".addresses", z.Addresses, served)
		validateProto(&errs, p+".protocol", z.Protocol)
	}
	c.LocalNXDOMAIN.validate(&errs)
	return errs.Err()
}

func validateProto(errs *config.Errors, key, p string) {
	if p != ProtoUDP && p != ProtoTCP {
		errs.Addf(key, "must be udp or tcp, got %q", p)
	}
}

func validateUpstreams(errs *config.Errors, key string, addrs []string, served map[netip.AddrPort]bool) {
	for i, a := range addrs {
		ap, err := parseUpstream(a)
		if err != nil {
			errs.Addf(fmt.Sprintf("%s[%d]", key, i), "%v", err)
			continue
		}
		if served[ap] || (ap.Addr().IsUnspecified()) {
			errs.Addf(fmt.Sprintf("%s[%d]", key, i), "%s is an address the cache serves itself (a forwarding loop)", ap)
		}
	}
}

// parseUpstream parses "IP" (port 53) or "IP:port" / "[IPv6]:port".
func parseUpstream(s string) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("must be IP or IP:port, got %q", s)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("must be IP or IP:port, got %q", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return netip.AddrPort{}, fmt.Errorf("port must be 1-65535, got %q", s)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

// servedAddrs returns the parsed Addresses (Validate has passed).
func (c *Config) servedAddrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(c.Addresses))
	for _, a := range c.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
