// Package conntrack exports the node's connection-tracking and ENA allowance
// counters: the numbers that say, per node, that DNS packets are being dropped
// and why.
//
// A prometheus.Collector reads, on every scrape and cheaply (a few netlink
// round trips, no table dump, no exec): the table's entries and limit, and
// every per-CPU counter of the kernel summed (insert_failed, drop, early_drop,
// clash_resolve, chaintoolong, ...). It asks ctnetlink (IPCTNL_MSG_CT_GET_STATS
// and IPCTNL_MSG_CT_GET_STATS_CPU) and falls back to /proc/net/stat/nf_conntrack,
// parsed by its header, when netlink is not allowed (no CAP_NET_ADMIN) or not
// there. ENA allowance counters (bw_in/out, pps, conntrack, linklocal) come
// from the driver's ethtool statistics of each ENA interface.
//
// Separately, on its own interval and never inside a scrape, Run counts the
// UDP and TCP entries to port 53 with kernel-side filtered dumps (CTA_FILTER),
// bounded in time and memory, and skips the pass (with a metric) when the
// table is larger than the configured budget.
package conntrack
