package main

func dnscacheRow() row {
	const (
		req  = "nodeagent_dnscache_requests_total"
		hit  = "nodeagent_dnscache_cache_hits_total"
		miss = "nodeagent_dnscache_cache_misses_total"
		dur  = "nodeagent_dnscache_upstream_request_duration_seconds"
	)
	return row{Feature: "dnscache", Title: "DNS cache", Panels: []panel{
		ts("Requests by rcode", "reqps", "DNS answers per second, by response code.",
			q(`sum by (rcode) (`+rate(req)+`)`, "{{rcode}}")),
		ts("Requests by zone and protocol", "reqps", "DNS answers per second: the cluster zone, the rest, and UDP vs TCP.",
			q(`sum by (zone, proto) (`+rate(req)+`)`, "{{zone}} {{proto}}")),
		ts("SERVFAIL ratio", "percentunit", "Share of answers that were SERVFAIL, by node (alert NodeagentDNSServfailRatio at 5%).",
			q(`sum by (node) (`+rate(req, `rcode="SERVFAIL"`)+`) / sum by (node) (`+rate(req)+`)`, "{{node}}")),
		ts("Cache hit ratio", "percentunit", "Answers from a fresh entry, of all lookups, by node.",
			q(`sum by (node) (`+rate(hit)+`) / (sum by (node) (`+rate(hit)+`) + sum by (node) (`+rate(miss)+`))`, "{{node}}")),
		ts("Misses, stale answers, prefetches", "reqps", "Cache misses sent upstream, expired entries served (RFC 8767), entries refreshed early, misses coalesced into one in-flight query.",
			q(`sum(`+rate(miss)+`)`, "misses"),
			q(`sum(`+rate("nodeagent_dnscache_cache_stale_answers_total")+`)`, "stale answers"),
			q(`sum(`+rate("nodeagent_dnscache_cache_prefetches_total")+`)`, "prefetches"),
			q(`sum(`+rate("nodeagent_dnscache_cache_coalesced_total")+`)`, "coalesced")),
		ts("Answered on the node (local NXDOMAIN)", "reqps", "NXDOMAIN answered without an upstream query: schema (names the Kubernetes DNS schema rules out, such as ndots:5 search-path expansions) and rfc8020 (below a cached NXDOMAIN). Each is a query that did not leave the node.",
			q(`sum by (rule) (`+rate("nodeagent_dnscache_local_nxdomain_total")+`)`, "{{rule}}")),
		ts("Cache entries", "short", "Entries in each node's cache, and evictions per second (cache too small for the working set).",
			q(`nodeagent_dnscache_cache_entries`+sel(), "{{node}} entries"),
			q(rate("nodeagent_dnscache_cache_evictions_total"), "{{node}} evictions/s")),
		ts("Cache memory", "bytes", "Approximate memory held by each node's cache entries.",
			q(`nodeagent_dnscache_cache_size_bytes`+sel(), "{{node}}")),
		ts("Upstream latency p99", "s", "99th percentile upstream query duration, by upstream.",
			q(`histogram_quantile(0.99, sum by (upstream, le) (`+rate(dur+"_bucket")+`))`, "{{upstream}}")),
		ts("Upstream answers", "reqps", "Upstream queries per second by upstream and rcode (timeout and error are failures).",
			q(`sum by (upstream, rcode) (`+rate(dur+"_count")+`)`, "{{upstream}} {{rcode}}")),
		ts("Upstreams healthy", "short", "1 while an upstream is healthy, 0 after upstream.maxFails failures (alert NodeagentDNSUpstreamUnhealthy).",
			q(`min by (upstream) (nodeagent_dnscache_upstream_healthy`+sel()+`)`, "{{upstream}}")),
		ts("Client TCP connections", "short", "Client TCP connections open, by node (bounded by maxTCPConnections).",
			q(`nodeagent_dnscache_tcp_connections`+sel(), "{{node}}")),
		ts("Dropped queries", "reqps", "Packets not answered: malformed, or overload (too many in flight).",
			q(`sum by (node, reason) (`+rate("nodeagent_dnscache_dropped_requests_total")+`)`, "{{node}} {{reason}}")),
		ts("Setup errors and reconciles", "short", "Failures to ensure the interface, rules, listeners or upstream Service, by reason; and reconciles.",
			q(`sum by (node, reason) (increase(nodeagent_dnscache_setup_errors_total`+sel()+`[$__rate_interval]))`, "{{node}} {{reason}}"),
			q(`sum by (node) (increase(nodeagent_dnscache_setup_reconciles_total`+sel()+`[$__rate_interval]))`, "{{node}} reconciles")),
	}}
}
