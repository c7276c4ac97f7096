package main

func raidRow() row {
	const r = "nodeagent_raid_"
	return row{Feature: "raid", Title: "RAID scratch", Panels: []panel{
		ts("Scratch free", "percentunit", "Free share of each node's scratch filesystem (alert NodeagentScratchNearlyFull under 10%).",
			q(`max by (node) (`+r+`free_bytes`+sel()+` / `+r+`capacity_bytes`+sel()+`)`, "{{node}}")),
		ts("Scratch capacity and free", "bytes", "Size of the mounted filesystem and bytes available, by node.",
			q(`max by (node) (`+r+`capacity_bytes`+sel()+`)`, "{{node}} capacity"),
			q(`max by (node) (`+r+`free_bytes`+sel()+`)`, "{{node}} free")),
		ts("Disks and members", "short", "Selected disks by state (member, unused, excluded), and disks in the mounted array (0 when not ready).",
			q(`sum by (node, state) (`+r+`disks`+sel()+`)`, "{{node}} {{state}}"),
			q(`max by (node) (`+r+`array_members`+sel()+`)`, "{{node}} array members")),
		ts("Array state", "short", "1 for md's array_state of the mounted array, by node (alert NodeagentRAIDDegraded on inactive, readonly, other).",
			q(`max by (node, state) (`+r+`array_state`+sel()+`) == 1`, "{{node}} {{state}}")),
		ts("Last decision", "short", "1 for the action raid took last, by node (alert NodeagentRAIDBlocked on blocked, no_disks).",
			q(`max by (node, action) (`+r+`decision`+sel()+`) == 1`, "{{node}} {{action}}")),
		ts("Operations", "short", "Steps run (assemble, create, mkfs, mount, ...) by result (alert NodeagentRAIDOperationsFailing on errors).",
			q(`sum by (node, op, result) (increase(`+r+`operations_total`+sel()+`[$__rate_interval]))`, "{{node}} {{op}} {{result}}")),
		ts("Setup time", "s", "Seconds from the feature's start to its first ready mount, by node (new nodes: how long the startup taint stays for RAID).",
			q(`max by (node) (`+r+`setup_duration_seconds`+sel()+`)`, "{{node}}")),
	}}
}
