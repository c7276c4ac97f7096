package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Host-wide names this harness creates. They are fixed (not per run) so a
// later run can recognise what an earlier one left behind.
const (
	dirPrefix  = "nodeagent-e2e-"
	dummyIf    = "nae2e-host"
	bridgeIf   = "nae2e-br0"
	cniNetwork = "nodeagent-e2e"
	guardChain = "NODEAGENT-E2E"
	// What the agent's dnscache feature leaves on the host when it is
	// stopped without being disabled (by design: host state outlives the
	// agent). Teardown removes them.
	agentDNSIf    = "nodelocaldns"
	agentDNSTable = "inet nodeagent-dnscache"
	serviceNAT    = "NODEAGENT-E2E-SVC"
	cgroupV1Dir   = "/sys/fs/cgroup"
)

// The tables in which the kubelet (KUBE-*) and CNI plugins (CNI-*) add chains.
var iptablesTables = []string{"filter", "nat", "mangle", "raw"}

// Host directories that the kubelet, containerd and the CNI plugins write to
// no matter how they are configured; anything that appears in them during a
// run is removed at teardown.
var watchedDirs = []string{
	"/run/containerd",
	"/var/lib/cni",
	"/var/log/containers",
	"/var/log/pods",
	"/opt/containerd",
	"/etc/cni",
	"/var/lib/kubelet",
	"/var/lib/containerd",
	"/run/kubernetes",
	// hostPath volumes of the nodeagent DaemonSet (DirectoryOrCreate).
	"/mnt/nodeagent",
	"/var/lib/nodeagent",
	// imagewarm's S3 mounts: the allowed root and the mount records.
	"/mnt/s3",
	"/run/nodeagent",
}

// Kernel parameters the kubelet sets on start (protectKernelDefaults=false);
// Start records them and teardown puts the old values back.
var kubeletSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

func readSysctls() map[string]string {
	m := map[string]string{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			m[k] = strings.TrimSpace(string(b))
		}
	}
	return m
}

func restoreSysctls(old map[string]string) []error {
	var errs []error
	for k, v := range old {
		p := filepath.Join("/proc/sys", k)
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == v {
			continue
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errs
}

// dirSnapshot is every path that existed at or below the watched
// directories (they are small), so teardown can remove exactly what
// appeared during the run, at any depth (e.g. shim sockets in
// /run/containerd/s, symlinks in /var/log/containers).
type dirSnapshot map[string]bool

func snapshotDirs() dirSnapshot {
	s := dirSnapshot{}
	for _, d := range watchedDirs {
		_ = filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			s[p] = true
			return nil
		})
	}
	return s
}

// restore removes what appeared in the watched directories since the
// snapshot. It never unmounts there: a mount point in these host
// directories belongs to someone else (the cluster's own mounts live under
// its temporary directory), so such an entry is left alone.
func (s dirSnapshot) restore() []error {
	var errs []error
	now := snapshotDirs()
	var added []string
	for p := range now {
		if !s[p] {
			added = append(added, p)
		}
	}
	sort.Strings(added) // parents before children
	removed := map[string]bool{}
	for _, p := range added {
		if removed[filepath.Dir(p)] {
			removed[p] = true
			continue
		}
		if err := removeUnmounted(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed[p] = true
	}
	return errs
}

// removeUnmounted removes path unless something is mounted at or below it.
func removeUnmounted(path string) error {
	if mps, err := mountsBelow(path); err != nil || len(mps) > 0 {
		return err
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// mountsBelow lists mount points at or below prefix, deepest first.
func mountsBelow(prefix string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	prefix = filepath.Clean(prefix)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == prefix || strings.HasPrefix(mp, prefix+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unmountBelow(prefix string) error {
	var errs []error
	// A mount can be stacked several times; retry a few rounds.
	for round := 0; round < 5; round++ {
		mps, err := mountsBelow(prefix)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		errs = errs[:0]
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				// Busy: detach it lazily, it goes once the last user does.
				if err2 := unix.Unmount(mp, unix.MNT_DETACH); err2 != nil && !errors.Is(err2, unix.EINVAL) {
					errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err2))
				}
			}
		}
	}
	if mps, _ := mountsBelow(prefix); len(mps) > 0 {
		errs = append(errs, fmt.Errorf("still mounted: %v", mps))
	}
	return errors.Join(errs...)
}

// cgroupDirs lists the kubelet's pod cgroup hierarchies (cgroupfs driver).
func cgroupDirs() []string {
	var out []string
	ents, err := os.ReadDir(cgroupV1Dir)
	if err != nil {
		return nil
	}
	for _, e := range ents {
		p := filepath.Join(cgroupV1Dir, e.Name(), "kubepods")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// killCgroupProcs SIGKILLs every process in the cgroup trees.
func killCgroupProcs(dirs []string) {
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(path string, de os.DirEntry, err error) error {
			if err != nil || de.IsDir() || de.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// removeCgroups removes cgroup trees bottom-up, retrying while the killed
// processes are still exiting.
func removeCgroups(dirs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, d := range dirs {
			var all []string
			_ = filepath.WalkDir(d, func(path string, de os.DirEntry, err error) error {
				if err == nil && de.IsDir() {
					all = append(all, path)
				}
				return nil
			})
			sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
			for _, p := range all {
				if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
					left = append(left, p)
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroups not removable (processes left?): %v", left)
		}
		killCgroupProcs(dirs)
		time.Sleep(200 * time.Millisecond)
	}
}

// procsMatching returns the PIDs whose command line contains needle.
func procsMatching(needle string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), needle) {
			out = append(out, pid)
		}
	}
	return out
}

// procsNamed returns "pid name" for running processes whose executable
// name is one of names.
func procsNamed(names ...string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		for _, n := range names {
			// comm is truncated to 15 characters.
			if comm == n || (len(n) > 15 && comm == n[:15]) {
				out = append(out, e.Name()+" "+n)
			}
		}
	}
	return out
}

// iptablesChains lists user chains in a table whose names start with one of
// the prefixes.
func iptablesChains(ctx context.Context, bin, table string, prefixes ...string) ([]string, error) {
	out, err := run(ctx, 30*time.Second, bin, "-w", "-t", table, "-S")
	if err != nil {
		return nil, err
	}
	var chains []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "-N" {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(f[1], p) {
				chains = append(chains, f[1])
			}
		}
	}
	return chains, nil
}

// removeChains deletes, with bin (iptables or ip6tables), every rule that
// jumps to a chain named with one of the prefixes, then flushes and deletes
// those chains, in every table.
func removeChains(ctx context.Context, bin string, prefixes ...string) error {
	var errs []error
	for _, table := range iptablesTables {
		chains, err := iptablesChains(ctx, bin, table, prefixes...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(chains) == 0 {
			continue
		}
		isOurs := map[string]bool{}
		for _, c := range chains {
			isOurs[c] = true
		}
		out, err := run(ctx, 30*time.Second, bin, "-w", "-t", table, "-S")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Delete jumps into our chains from built-in chains.
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 || f[0] != "-A" || isOurs[f[1]] {
				continue
			}
			for i := 0; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && isOurs[f[i+1]] {
					args := append([]string{"-w", "-t", table, "-D"}, splitRule(l)[1:]...)
					if _, err := run(ctx, 30*time.Second, bin, args...); err != nil {
						errs = append(errs, err)
					}
					break
				}
			}
		}
		for _, c := range chains {
			if _, err := run(ctx, 30*time.Second, bin, "-w", "-t", table, "-F", c); err != nil {
				errs = append(errs, err)
			}
		}
		for _, c := range chains {
			if _, err := run(ctx, 30*time.Second, bin, "-w", "-t", table, "-X", c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an `iptables -S` line into arguments, honouring the
// double quotes iptables puts around comments.
func splitRule(l string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			have = true
		case c == '\\' && inQuote && i+1 < len(l):
			i++
			cur.WriteByte(l[i])
		case c == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

// removeHostNetwork removes what the cluster and the agent's dnscache add to
// the host's network besides chains and conntrack entries: the agent's nft
// table, the interfaces and the Service CIDR blackhole route.
func removeHostNetwork(ctx context.Context, logf func(string, ...any)) []error {
	var errs []error
	if tables, err := nftTables(ctx); err == nil && tables[agentDNSTable] {
		fam, name, _ := strings.Cut(agentDNSTable, " ")
		if _, err := run(ctx, 30*time.Second, "nft", "delete", "table", fam, name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range []string{agentDNSIf, bridgeIf, dummyIf} {
		if linkExists(l) {
			logf("delete link %s", l)
			if _, err := run(ctx, 30*time.Second, "ip", "link", "del", l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if out, _ := run(ctx, 30*time.Second, "ip", "route", "show", "type", "blackhole"); strings.Contains(out, DefaultServiceCIDR) {
		if _, err := run(ctx, 30*time.Second, "ip", "route", "del", "blackhole", DefaultServiceCIDR); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// staleState lists anything an earlier run left behind on this host.
func staleState(ctx context.Context) []string {
	var stale []string
	for _, l := range []string{dummyIf, bridgeIf, agentDNSIf} {
		if linkExists(l) {
			stale = append(stale, "network interface "+l)
		}
	}
	if tables, err := nftTables(ctx); err == nil && tables[agentDNSTable] {
		stale = append(stale, "nftables table "+agentDNSTable)
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range iptablesTables {
			chains, err := iptablesChains(ctx, bin, table, "KUBE-", "CNI-", guardChain)
			if err != nil {
				stale = append(stale, "cannot list "+bin+": "+err.Error())
				break
			}
			for _, c := range chains {
				stale = append(stale, fmt.Sprintf("%s chain %s/%s", bin, table, c))
			}
		}
	}
	for _, d := range cgroupDirs() {
		stale = append(stale, "cgroup "+d)
	}
	for _, p := range procsNamed("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet") {
		stale = append(stale, "process "+p)
	}
	for _, pid := range procsMatching("/" + dirPrefix) {
		stale = append(stale, fmt.Sprintf("process %d using a %s* directory", pid, dirPrefix))
	}
	if mps, err := mountsBelow(os.TempDir()); err == nil {
		for _, mp := range mps {
			if strings.Contains(mp, "/"+dirPrefix) {
				stale = append(stale, "mount "+mp)
			}
		}
	}
	return stale
}

// rootIsShared reports whether / is a shared mount (peer group), as systemd
// makes it on real nodes. The kubelet's Bidirectional and HostToContainer
// volume propagation needs that.
func rootIsShared() (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || f[4] != "/" {
			continue
		}
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				return true, nil
			}
		}
		return false, nil
	}
	return false, errors.New("/ not found in mountinfo")
}

// nftTables lists "family name" of the nftables tables (iptables-nft keeps
// its tables there; the kubelet's chains create them on a fresh host).
func nftTables(ctx context.Context) (map[string]bool, error) {
	out, err := run(ctx, 30*time.Second, "nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "table" {
			m[f[1]+" "+f[2]] = true
		}
	}
	return m, nil
}

// removeNewEmptyTables deletes the nftables tables that did not exist
// before the run and hold no rules now, so the host's netfilter hooks (and
// conntrack's accounting) are as they were.
func removeNewEmptyTables(ctx context.Context, before map[string]bool) error {
	now, err := nftTables(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for t := range now {
		if before[t] {
			continue
		}
		fam, name, _ := strings.Cut(t, " ")
		out, err := run(ctx, 30*time.Second, "nft", "list", "table", fam, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		empty := true
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSpace(l)
			if l == "" || l == "}" || strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "chain ") || strings.HasPrefix(l, "type ") {
				continue
			}
			empty = false
			break
		}
		if !empty {
			continue
		}
		if _, err := run(ctx, 30*time.Second, "nft", "delete", "table", fam, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hostState is what Start found on the host and teardown restores. It is
// also written to the run's directory so that CleanStale can restore it
// after a run that died.
type hostState struct {
	Sysctls        map[string]string `json:"sysctls"`
	MadeRootShared bool              `json:"madeRootShared"`
	NFTBefore      map[string]bool   `json:"nftBefore"`
	Dirs           dirSnapshot       `json:"dirs"`
	// Ports the run's servers listened on, for conntrack cleanup.
	Ports []int `json:"ports"`
	// ServiceIPs are the ClusterIPs RouteService made local, for conntrack cleanup.
	ServiceIPs []string `json:"serviceIPs,omitempty"`
}

const hostStateFile = "host-state.json"

func (h *hostState) save(dir string) error {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, hostStateFile), b, 0o644)
}

func loadHostState(dir string) (*hostState, error) {
	b, err := os.ReadFile(filepath.Join(dir, hostStateFile))
	if err != nil {
		return nil, err
	}
	h := &hostState{}
	return h, json.Unmarshal(b, h)
}

// restore puts sysctls and the propagation of / back and removes the
// nftables tables the run created (once empty).
func (h *hostState) restore(ctx context.Context) []error {
	errs := restoreSysctls(h.Sysctls)
	if h.MadeRootShared {
		if _, err := run(ctx, 30*time.Second, "mount", "--make-rprivate", "/"); err != nil {
			errs = append(errs, err)
		}
	}
	if h.NFTBefore != nil {
		if err := removeNewEmptyTables(ctx, h.NFTBefore); err != nil {
			errs = append(errs, err)
		}
	}
	if h.Dirs != nil {
		errs = append(errs, h.Dirs.restore()...)
	}
	return errs
}

// deleteConntrack removes the conntrack entries of the harness's
// addresses and of the run's loopback ports.
func deleteConntrack(ctx context.Context, podCIDR string, ports []int, serviceIPs []string) []error {
	var errs []error
	filters := [][]string{
		{"-s", podCIDR}, {"-d", podCIDR},
		{"-s", DefaultNodeIP}, {"-d", DefaultNodeIP},
		{"-s", kubernetesSvcIP}, {"-d", kubernetesSvcIP},
	}
	for _, ip := range serviceIPs {
		filters = append(filters, []string{"-s", ip}, []string{"-d", ip})
	}
	for _, port := range ports {
		filters = append(filters, []string{"-p", "tcp", "--orig-port-dst", strconv.Itoa(port)})
	}
	for _, f := range filters {
		// Exit status 1 with "0 flow entries" means nothing matched.
		out, err := run(ctx, 30*time.Second, "conntrack", append([]string{"-D"}, f...)...)
		if err != nil && !strings.Contains(out, "0 flow entries") {
			errs = append(errs, err)
		}
	}
	return errs
}
