package conntrack

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// parseProcStat parses /proc/net/stat/nf_conntrack: a header naming the
// columns, then one line of hexadecimal values per CPU. Columns are found
// by name, never by position: kernels add, rename and reuse them
// ("searched" became "clashres", "delete_list" became "chainlength").
// The entries column is the table's count (the same on every line).
func parseProcStat(data string) (stats, error) {
	s := stats{source: SourceProcfs}
	lines := strings.Split(strings.TrimSpace(data), "\n")
	if len(lines) < 2 {
		return s, fmt.Errorf("nf_conntrack stat: want a header and a line per CPU, got %d lines", len(lines))
	}
	cols := strings.Fields(lines[0])
	if len(cols) == 0 || cols[0] != "entries" {
		return s, fmt.Errorf("nf_conntrack stat: header does not start with entries: %q", lines[0])
	}
	for n, line := range lines[1:] {
		vals := strings.Fields(line)
		if len(vals) != len(cols) {
			return s, fmt.Errorf("nf_conntrack stat: line %d has %d values for %d columns", n+2, len(vals), len(cols))
		}
		for i, col := range cols {
			v, err := strconv.ParseUint(vals[i], 16, 64)
			if err != nil {
				return s, fmt.Errorf("nf_conntrack stat: line %d column %s: %v", n+2, col, err)
			}
			switch idx, known := counterIndex[col]; {
			case col == "entries":
				s.entries = v
			case known:
				s.add(idx, v)
			default:
				s.addOther(col, v)
			}
		}
	}
	return s, nil
}

// readProcStat reads the statistics from procDir (the host's /proc): the
// per-CPU file, and the table's limit from the nf_conntrack_max sysctl. In
// namespace ns (tests) it reads on a thread inside it: /proc/net follows the
// process's namespace, /proc/thread-self/net and /proc/sys/net the thread's.
func readProcStat(procDir string, ns netns.NsHandle) (s stats, err error) {
	err = netnsrun.Run(ns, func() error {
		s, err = readProcStatHere(procDir, ns.IsOpen())
		return err
	})
	return s, err
}

func readProcStatHere(procDir string, threadSelf bool) (stats, error) {
	net := procDir + "/net"
	if threadSelf {
		net = procDir + "/thread-self/net"
	}
	data, err := os.ReadFile(net + "/stat/nf_conntrack")
	if err != nil {
		return stats{source: SourceProcfs}, err
	}
	s, err := parseProcStat(string(data))
	if err != nil {
		return s, err
	}
	if v, err := readUint(procDir + "/sys/net/netfilter/nf_conntrack_max"); err == nil {
		s.limit = v
	}
	// entries is the same as nf_conntrack_count; prefer the sysctl, which is
	// read at once rather than per line.
	if v, err := readUint(procDir + "/sys/net/netfilter/nf_conntrack_count"); err == nil {
		s.entries = v
	}
	return s, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// readCount reads the table's entry count from the nf_conntrack_count sysctl.
func readCount(procDir string, ns netns.NsHandle) (n uint64, err error) {
	err = netnsrun.Run(ns, func() error {
		n, err = readUint(procDir + "/sys/net/netfilter/nf_conntrack_count")
		return err
	})
	return n, err
}
