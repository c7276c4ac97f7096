package main

func conntrackRow() row {
	const ct = "nodeagent_conntrack_"
	byNode := func(metric string) string { return `sum by (node) (` + rate(ct+metric) + `)` }
	ena := func(allowance string) query {
		return q(`sum by (node, interface) (`+rate(ct+"ena_"+allowance+"_allowance_exceeded_total")+`)`, "{{node}} {{interface}} "+allowance)
	}
	return row{Feature: "conntrack", Title: "Conntrack and ENA allowances", Panels: []panel{
		ts("Table utilization", "percentunit", "Entries / nf_conntrack_max by node (alert NodeagentConntrackTableFilling at 75%).",
			q(`max by (node) (`+ct+`utilization_ratio`+sel()+`)`, "{{node}}")),
		ts("Table entries and limit", "short", "Entries in the kernel's table and its limit, by node.",
			q(`max by (node) (`+ct+`entries`+sel()+`)`, "{{node}} entries"),
			q(`max by (node) (`+ct+`entries_limit`+sel()+`)`, "{{node}} limit")),
		ts("Drops and insert failures", "pps", "Packets dropped (table full), entries evicted early, inserts refused (chain too long), insert races lost (alerts NodeagentConntrackDropping, NodeagentConntrackInsertFailing).",
			q(byNode("drop_total"), "{{node}} drop"),
			q(byNode("early_drop_total"), "{{node}} early_drop"),
			q(byNode("chaintoolong_total"), "{{node}} chaintoolong"),
			q(byNode("insert_failed_total"), "{{node}} insert_failed"),
			q(byNode("clash_resolve_total"), "{{node}} clash_resolve")),
		ts("Lookups and inserts", "ops", "Entries inserted (new flows), lookups found, restarted, untrackable packets and ICMP errors, per second.",
			q(byNode("insert_total"), "{{node}} insert"),
			q(byNode("found_total"), "{{node}} found"),
			q(byNode("search_restart_total"), "{{node}} search_restart"),
			q(byNode("invalid_total"), "{{node}} invalid"),
			q(byNode("error_total"), "{{node}} error")),
		ts("Expectations and old-kernel counters", "ops", "Helper expectations, the counters only old kernels report, and counters this build has no name for (by stat).",
			q(byNode("expect_new_total"), "{{node}} expect_new"),
			q(byNode("expect_create_total"), "{{node}} expect_create"),
			q(byNode("expect_delete_total"), "{{node}} expect_delete"),
			q(byNode("searched_total"), "{{node}} searched"),
			q(byNode("new_total"), "{{node}} new"),
			q(byNode("ignore_total"), "{{node}} ignore"),
			q(byNode("delete_total"), "{{node}} delete"),
			q(byNode("delete_list_total"), "{{node}} delete_list"),
			q(`sum by (node, stat) (`+rate(ct+"other_stat_total")+`)`, "{{node}} {{stat}}")),
		ts("DNS flows in the table", "short", "Entries to port 53 by protocol, and those without an answer yet (a high share: upstream DNS dropping).",
			q(`sum by (node, proto) (`+ct+`dns_flows`+sel()+`)`, "{{node}} {{proto}}"),
			q(`sum by (node, proto) (`+ct+`dns_flows_unreplied`+sel()+`)`, "{{node}} {{proto}} unreplied")),
		ts("ENA allowances exceeded", "pps", "Packets queued or dropped over the instance's bandwidth, packets-per-second and connection-tracking allowances (alert NodeagentENAAllowanceExceeded).",
			ena("bw_in"), ena("bw_out"), ena("pps"), ena("conntrack")),
		ts("Link-local allowance exceeded (DNS throttling)", "pps", "Packets to the VPC resolver, IMDS and time sync dropped over 1024/s per interface (alert NodeagentDNSThrottledByVPCResolver).",
			ena("linklocal")),
		ts("ENA connections available", "short", "Connections the instance can still track before its conntrack allowance (ENA 2.8+).",
			q(`min by (node, interface) (`+ct+`ena_conntrack_allowance_available`+sel()+`)`, "{{node}} {{interface}}")),
		ts("Read health", "short", "Where the statistics came from (source none = no figures), read errors by source and reason, DNS flow passes by result.",
			q(`max by (node, source) (`+ct+`stats_source`+sel()+`)`, "{{node}} source {{source}}"),
			q(`sum by (node, source, reason) (increase(`+ct+`read_errors_total`+sel()+`[$__rate_interval]))`, "{{node}} {{source}} {{reason}}"),
			q(`sum by (node, result) (increase(`+ct+`dns_count_passes_total`+sel()+`[$__rate_interval]))`, "{{node}} pass {{result}}")),
		ts("Read durations", "s", "Time a scrape spent reading the statistics and ENA counters, and the last DNS flow pass.",
			q(`max by (node) (`+ct+`stats_read_duration_seconds`+sel()+`)`, "{{node}} scrape read"),
			q(`max by (node) (`+ct+`dns_count_duration_seconds`+sel()+`)`, "{{node}} DNS flow pass")),
		ts("DNS flow count age", "s", "Seconds since the DNS flows were last counted; it grows while passes fail or are skipped.",
			q(`time() - max by (node) (`+ct+`dns_count_last_success_timestamp_seconds`+sel()+`)`, "{{node}}")),
	}}
}
