// Package dnscache is the agent's node-local DNS cache, a drop-in for
// NodeLocal DNSCache (kubernetes/dns node-cache) that survives its own
// upgrades.
//
// It keeps a dummy interface (default "nodelocaldns") holding the link-local
// address pods use as their resolver, conntrack-bypass and accept rules for
// port 53 on it (a native nftables table of its own, or iptables), and serves
// DNS on it over UDP and TCP from a cache bounded by entries and bytes: TTL
// caps, RFC 2308 negative caching, serve-stale (RFC 8767), prefetch of popular
// names and coalescing of identical misses. Misses go to per-zone upstreams
// (the cluster domain and reverse zones to the cluster DNS over reused TCP,
// the rest to the node's real resolvers) with health checks and failover.
//
// Cancelling Run leaves the interface and rules in place, so the next agent
// process (which binds with SO_REUSEPORT while the old one still serves)
// takes over without a gap; only Teardown, called when the feature is
// disabled, removes them.
package dnscache
