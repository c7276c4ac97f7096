package main

func agentRow() row {
	return row{Feature: "agent", Title: "Agent health", Panels: []panel{
		number("Agents up", "short", "Agents Prometheus scrapes successfully, of all it scrapes.",
			q(`sum(up`+sel()+`)`, "up"), q(`count(up`+sel()+`)`, "scraped")),
		number("Nodes not ready", "short", "Nodes where a gating feature is not ready (nodeagent_node_ready 0).",
			q(`count(nodeagent_node_ready`+sel()+` == 0) or vector(0)`, "not ready")),
		number("Configs rejected", "short", "Agents running their last good config because the file on disk was rejected; of them, those that started from the copy kept on the host.",
			q(`count(nodeagent_config_last_reload_successful`+sel()+` == 0) or vector(0)`, "rejected"),
			q(`count(nodeagent_config_last_good_in_use`+sel()+` == 1) or vector(0)`, "started from last good")),
		number("Configs in use", "short", "Distinct config hashes in force; more than 1 for long means some nodes did not take a change.",
			q(`count(count by (hash) (nodeagent_config_info`+sel()+`))`, "configs")),
		number("Versions", "short", "Distinct agent versions running.",
			q(`count(count by (version) (nodeagent_build_info`+sel()+`))`, "versions")),
		number("Features down", "short", "Feature instances failing or waiting to restart.",
			q(`count(nodeagent_feature_up`+sel()+` == 0) or vector(0)`, "down")),
		ts("Features running and ready", "short", "Nodes where each feature runs, and where it reports ready.",
			q(`sum by (feature) (nodeagent_feature_up`+sel()+`)`, "{{feature}} up"),
			q(`sum by (feature) (nodeagent_feature_ready`+sel()+`)`, "{{feature}} ready")),
		ts("Feature restarts", "short", "Restarts of failed features, by node and feature.",
			q(`sum by (node, feature) (increase(nodeagent_feature_restarts_total`+sel()+`[$__rate_interval]))`, "{{node}} {{feature}}")),
		ts("Config reloads", "short", "Config changes applied and rejected, by node.",
			q(`sum by (node) (increase(nodeagent_config_reloads_total`+sel()+`[$__rate_interval]))`, "{{node}} applied"),
			q(`sum by (node) (increase(nodeagent_config_reload_failures_total`+sel()+`[$__rate_interval]))`, "{{node}} rejected")),
		ts("Agent memory", "bytes", "Resident memory of each agent process.",
			q(`process_resident_memory_bytes`+sel(), "{{node}} {{pod}}")),
		ts("Agent CPU", "percentunit", "CPU of each agent process, in cores.",
			q(`rate(process_cpu_seconds_total`+sel()+`[$__rate_interval])`, "{{node}} {{pod}}")),
		ts("Goroutines", "short", "Goroutines of each agent process; a steady climb is a leak.",
			q(`go_goroutines`+sel(), "{{node}} {{pod}}")),
	}}
}
