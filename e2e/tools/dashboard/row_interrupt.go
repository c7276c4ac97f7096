package main

func interruptRow() row {
	const i = "nodeagent_interrupt_"
	inc := func(metric, by string) string {
		return `sum by (` + by + `) (increase(` + i + metric + sel() + `[$__rate_interval]))`
	}
	return row{Feature: "interrupt", Title: "Interruptions and decommission", Panels: []panel{
		ts("Notices", "short", "Interruption notices seen and withdrawn, by node, kind and source (imds, taint).",
			q(inc("notices_total", "node, kind, source"), "{{node}} {{kind}} ({{source}})"),
			q(inc("notices_withdrawn_total", "node, kind, source"), "{{node}} {{kind}} withdrawn")),
		ts("Executors told", "short", "Executors by outcome after a notice (alert NodeagentExecutorsNotDecommissioned on running_at_deadline, failed).",
			q(inc("executors_total", "node, strategy, result"), "{{node}} {{strategy}} {{result}}")),
		ts("Reaction time", "s", "Notice first seen to last executor told, average per node over the rate interval.",
			q(`sum by (node) (increase(`+i+`reaction_seconds_sum`+sel()+`[$__rate_interval])) / sum by (node) (increase(`+i+`reaction_seconds_count`+sel()+`[$__rate_interval]))`, "{{node}}")),
		ts("Time left at notice", "s", "Median time left until the notice takes effect when the agent first saw it, by kind.",
			q(`histogram_quantile(0.5, sum by (kind, le) (increase(`+i+`notice_time_left_seconds_bucket`+sel()+`[$__rate_interval])))`, "{{kind}}")),
		ts("IMDS requests", "reqps", "Requests to the instance metadata service by status (HTTP code, error, timeout; alert NodeagentIMDSFailing).",
			q(`sum by (node, status) (`+rate(i+"imds_requests_total")+`)`, "{{node}} {{status}}")),
		ts("Errors and bad notices", "short", "Feature errors by reason, and IMDS bodies rejected by path and reason.",
			q(inc("errors_total", "node, reason"), "{{node}} {{reason}}"),
			q(inc("bad_notices_total", "node, path, reason"), "{{node}} {{path}} {{reason}}")),
		number("Nodes by lifecycle", "short", "Nodes by EC2 lifecycle (spot, on-demand), from the instance's metadata.",
			q(`count by (lifecycle) (`+i+`node_info`+sel()+`)`, "{{lifecycle}}")),
		number("Instance types", "short", "Distinct instance types among the nodes.",
			q(`count(count by (instance_type) (`+i+`node_info`+sel()+`))`, "types")),
	}}
}
