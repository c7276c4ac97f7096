package conntrack

// counterDef is one per-CPU counter of the kernel, exported summed over CPUs
// as nodeagent_conntrack_<name>_total.
type counterDef struct {
	name string // metric name part and the kernel's own (ctnetlink) name
	help string
}

// counterDefs are the kernel's conntrack counters, in the order of the
// ctnetlink CTA_STATS_* attributes (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
// The index in this slice is the attribute type minus one for the CPU
// counters; expect counters follow.
var counterDefs = []counterDef{
	{"searched", "Lookups in the table (older kernels; always 0 on current ones)."},
	{"found", "Lookups that found an existing entry."},
	{"new", "Entries added that were not expected (older kernels; always 0 on current ones)."},
	{"invalid", "Packets conntrack could not track (malformed, or not matching a known state); usually dropped by a ctstate INVALID rule."},
	{"ignore", "Packets already tracked or not to be tracked (older kernels; always 0 on current ones)."},
	{"delete", "Entries deleted (older kernels; always 0 on current ones)."},
	{"delete_list", "Entries put on the dying list (older kernels; always 0 on current ones)."},
	{"insert", "Entries inserted into the table."},
	{"insert_failed", "Entries that could not be inserted: a race on the same tuple that clash resolution could not fix (the classic lost UDP DNS query with DNAT)."},
	{"drop", "Packets dropped because the table was full and no entry could be evicted: new flows, DNS first, fail."},
	{"early_drop", "Entries evicted early to make room when the table was full."},
	{"error", "ICMP(v6) packets conntrack could not track."},
	{"search_restart", "Lookups restarted because a hash resize or a race moved an entry."},
	{"clash_resolve", "Races on the same tuple resolved by reusing the first entry (parallel UDP DNS queries, A and AAAA over one socket, with DNAT)."},
	{"chaintoolong", "Inserts refused because a hash chain grew too long (a table too small for its entries, or a hash attack); the packet is dropped."},
	{"expect_new", "Expectations (related flows of helpers such as FTP) that matched."},
	{"expect_create", "Expectations created."},
	{"expect_delete", "Expectations deleted."},
}

const (
	firstExpect = 15 // index of expect_new in counterDefs
	nCounters   = 18
)

// counterIndex maps a kernel name (ctnetlink or a /proc column) to its
// index in counterDefs.
var counterIndex = func() map[string]int {
	m := make(map[string]int, len(counterDefs)+4)
	for i, d := range counterDefs {
		m[d.name] = i
	}
	// /proc/net/stat/nf_conntrack column names that differ.
	m["icmp_error"] = m["error"]
	m["clashres"] = m["clash_resolve"]
	m["chainlength"] = m["chaintoolong"]
	return m
}()

// stats is one reading of the table's statistics.
type stats struct {
	source  string
	entries uint64
	limit   uint64 // 0 when unknown
	// counters holds the sums over CPUs; has says which the source reported.
	counters [nCounters]uint64
	has      [nCounters]bool
	// other holds counters this build has no name for, by the kernel's name
	// (a /proc column, or "attr_N" for a netlink attribute type N).
	other map[string]uint64
}

func (s *stats) add(i int, v uint64) {
	s.counters[i] += v
	s.has[i] = true
}

func (s *stats) addOther(name string, v uint64) {
	if s.other == nil {
		s.other = map[string]uint64{}
	}
	s.other[name] += v
}
