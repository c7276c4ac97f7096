package main

func imagewarmRow() row {
	const w = "nodeagent_imagewarm_"
	return row{Feature: "imagewarm", Title: "Image pre-pull", Panels: []panel{
		ts("Images by state", "short", "Required images by state across the selected nodes (alert NodeagentRequiredImageMissing when not present for 15m).",
			q(`sum by (state) (`+w+`image_state`+sel()+`)`, "{{state}}")),
		ts("Images not present", "short", "Each image that is pending, pulling or failed, by node.",
			q(`max by (node, image, state) (`+w+`image_state`+sel(`state!="present"`)+`) == 1`, "{{node}} {{image}} {{state}}")),
		ts("Pull progress", "bytes", "Bytes fetched by each image's current or last pull, against its compressed size.",
			q(`max by (node, image) (`+w+`image_fetched_bytes`+sel()+`)`, "{{node}} {{image}} fetched"),
			q(`max by (image) (`+w+`image_size_bytes`+sel()+`)`, "{{image}} size")),
		ts("Registry throughput", "Bps", "Bytes fetched from registries per second, by node.",
			q(`sum by (node) (`+rate(w+"fetched_bytes_total")+`)`, "{{node}}")),
		ts("Pull duration", "s", "p50 and p99 of successful pulls, and the last pull of each image.",
			q(`histogram_quantile(0.5, sum by (le) (rate(`+w+`pull_duration_seconds_bucket`+sel()+`[$__rate_interval])))`, "p50"),
			q(`histogram_quantile(0.99, sum by (le) (rate(`+w+`pull_duration_seconds_bucket`+sel()+`[$__rate_interval])))`, "p99"),
			q(`max by (image) (`+w+`image_pull_duration_seconds`+sel()+`)`, "{{image}} last")),
		ts("Pulls, re-pulls and failures", "short", "Successful pulls, pulls of images that went missing (image GC), failed attempts by reason.",
			q(`sum by (node, image) (increase(`+w+`pulls_total`+sel()+`[$__rate_interval]))`, "{{node}} {{image}} pulled"),
			q(`sum by (node, image) (increase(`+w+`repulls_total`+sel()+`[$__rate_interval]))`, "{{node}} {{image}} re-pulled"),
			q(`sum by (node, image, reason) (increase(`+w+`pull_failures_total`+sel()+`[$__rate_interval]))`, "{{node}} {{image}} {{reason}}")),
		ts("S3 mounts up", "short", "1 while the mount's root answers the agent's stat, by node and mount (alert NodeagentS3MountDown after 5m at 0).",
			q(`min by (node, mount) (`+w+`s3_mount_up`+sel()+`)`, "{{node}} {{mount}}")),
		ts("S3 heals and mount failures", "short", "Dead FUSE daemons mounted again, by reason (alert NodeagentS3MountHealing), and failed mount attempts.",
			q(`sum by (node, mount, reason) (increase(`+w+`s3_heals_total`+sel()+`[$__rate_interval]))`, "{{node}} {{mount}} {{reason}}"),
			q(`sum by (node, mount) (increase(`+w+`s3_mount_failures_total`+sel()+`[$__rate_interval]))`, "{{node}} {{mount}} failed")),
		ts("S3 time to heal", "s", "p50 and p99 from finding a mount dead to its root answering again.",
			q(`histogram_quantile(0.5, sum by (le) (rate(`+w+`s3_heal_duration_seconds_bucket`+sel()+`[$__rate_interval])))`, "p50"),
			q(`histogram_quantile(0.99, sum by (le) (rate(`+w+`s3_heal_duration_seconds_bucket`+sel()+`[$__rate_interval])))`, "p99")),
		ts("S3 daemon memory", "bytes", "Resident memory of each FUSE daemon at the last check.",
			q(`max by (node, mount) (`+w+`s3_daemon_resident_memory_bytes`+sel()+`)`, "{{node}} {{mount}}")),
	}}
}
