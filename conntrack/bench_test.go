package conntrack

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// BenchmarkMillionEntries is `make bench-conntrack` (conntrack/hack/bench.sh):
// one run, side by side, against a namespace whose table holds
// CONNTRACK_BENCH_ENTRIES (default 1,000,000) entries injected over ctnetlink,
// 1% of them UDP to port 53 (half answered):
//
//   - this collector's scrape (in process, and GET /metrics over HTTP),
//   - node_exporter's conntrack collector scrape (GET /metrics over HTTP),
//   - this feature's DNS-flow count pass (time, extra RSS),
//   - `conntrack -L -p udp --dport 53 | wc -l`,
//   - a full dump with vishvananda/netlink's ConntrackTableList.
//
// It raises nf_conntrack_max when it is below the entry count and restores
// it; deleting the namespace frees the entries.
func BenchmarkMillionEntries(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	total := 1_000_000
	if v := os.Getenv("CONNTRACK_BENCH_ENTRIES"); v != "" {
		total, _ = strconv.Atoi(v)
	}
	dnsEvery := 100
	ns := newTestNS(b)
	ns.track(b)

	const maxPath = "/proc/sys/net/netfilter/nf_conntrack_max"
	orig, err := readUint(maxPath)
	if err != nil {
		b.Fatal(err)
	}
	if orig < uint64(total)+100_000 {
		if err := os.WriteFile(maxPath, []byte(strconv.Itoa(total+100_000)), 0o644); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.WriteFile(maxPath, []byte(strconv.FormatUint(orig, 10)), 0o644) })
	}

	start := time.Now()
	if err := inject(ns, total, dnsEvery, false); err != nil {
		b.Fatal(err)
	}
	injectTook := time.Since(start)

	deps, reg := testDeps(b, "/")
	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	cfg.DNSFlows.MaxTableEntries = 0
	c, err := newIn(cfg, deps, ns.handle, "/proc")
	if err != nil {
		b.Fatal(err)
	}
	defer c.col.nl.close()
	got := scrape(b, reg)
	fmt.Printf("table: %.0f entries (limit %.0f), injected in %s over ctnetlink; %d UDP to port 53\n",
		got["nodeagent_conntrack_entries"], got["nodeagent_conntrack_entries_limit"], injectTook.Round(time.Millisecond), total/dnsEvery)

	const scrapes = 50
	var rows []benchRow

	// This collector, in process.
	var inproc []time.Duration
	for range scrapes {
		s := time.Now()
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
		inproc = append(inproc, time.Since(s))
	}
	rows = append(rows, benchRow{name: "nodeagent scrape (in process, Gather)", d: inproc})

	// Both over HTTP from inside the namespace.
	ours := serveIn(b, ns, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ne, stopNE := nodeExporterIn(b, ns)
	defer stopNE()
	oursHTTP := httpScrapes(b, ns, ours, scrapes)
	neHTTP := httpScrapes(b, ns, ne, scrapes)
	rows = append(rows, benchRow{name: "nodeagent GET /metrics (conntrack only)", d: oursHTTP},
		benchRow{name: "node_exporter GET /metrics (--collector.conntrack only)", d: neHTTP})

	// The DNS-flow count pass: the defaults (families [auto]: IPv4 only in
	// this namespace, which has no global IPv6 address; protocols [udp]),
	// with TCP, all four walks one at a time (the previous default) and two
	// at a time, and IPv4 in parallel.
	var passes, passCPU []time.Duration
	var maxRSS int64
	var walkNote []string
	for i, v := range []struct {
		fams, protos []string
		parallel     int
	}{
		{[]string{FamilyAuto}, []string{ProtoUDP}, 1},
		{[]string{FamilyAuto}, []string{ProtoUDP, ProtoTCP}, 1},
		{[]string{FamilyIPv4, FamilyIPv6}, []string{ProtoUDP, ProtoTCP}, 1},
		{[]string{FamilyIPv4, FamilyIPv6}, []string{ProtoUDP, ProtoTCP}, 2},
		{[]string{FamilyIPv4}, []string{ProtoUDP, ProtoTCP}, 2},
	} {
		dc := cfg.DNSFlows
		dc.Families, dc.Protocols, dc.ParallelWalks = v.fams, v.protos, v.parallel
		counter := newDNSCounter(ns.handle, dc)
		var d, cpu, sys []time.Duration
		var extraRSS []int64
		var udp, tcp dnsCount
		var walks [][]time.Duration
		var stall []time.Duration
		for range 5 {
			runtime.GC()
			debug.FreeOSMemory()
			base := resetHWM()
			stop := startStallProbes()
			u0, s0 := processCPU()
			s := time.Now()
			udp, tcp, err = counter.count(time.Now().Add(30 * time.Second))
			if err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(s))
			u1, s1 := processCPU()
			cpu, sys = append(cpu, u1-u0+s1-s0), append(sys, s1-s0)
			stall = append(stall, stop())
			extraRSS = append(extraRSS, hwm()-base)
			walks = slices.Grow(walks, len(counter.took))[:len(counter.took)]
			for i, w := range counter.took {
				walks[i] = append(walks[i], w)
			}
		}
		var each []string
		for i, w := range counter.walks {
			each = append(each, fmt.Sprintf("%s/%s %s", familyName(w.family), protoName(w.proto), pct(walks[i], 50)))
		}
		name := fmt.Sprintf("%s %s, parallelWalks %d", strings.Join(v.fams, "+"), strings.Join(v.protos, "+"), counter.parallel)
		if i == 0 {
			name = "defaults: " + name
			passes, passCPU = d, cpu
		}
		walkNote = append(walkNote, name+": "+strings.Join(each, ", "))
		maxRSS = max(maxRSS, slices.Max(extraRSS))
		rows = append(rows, benchRow{name: fmt.Sprintf("DNS-flow pass, %s (%d walks; %d udp, %d unreplied, %d tcp)",
			name, len(counter.walks), udp.flows, udp.unreplied, tcp.flows), d: d, rss: extraRSS},
			benchRow{name: "  the same, CPU time of the process (user+system)", d: cpu},
			benchRow{name: "  the same, of which system (the kernel's walks)", d: sys},
			benchRow{name: "  the same, longest wakeup delay of a 1 ms sleeper on any CPU", d: stall})
	}
	var idle []time.Duration
	for range 5 {
		stop := startStallProbes()
		time.Sleep(500 * time.Millisecond)
		idle = append(idle, stop())
	}
	rows = append(rows, benchRow{name: "no pass: longest wakeup delay of a 1 ms sleeper on any CPU over 0.5 s", d: idle})

	// conntrack -L -p udp --dport 53 | wc -l
	var ctl, ctlCPU []time.Duration
	var ctlCount string
	for range 3 {
		s := time.Now()
		cmd := exec.Command("ip", "netns", "exec", ns.name, "sh", "-c", "conntrack -L -p udp --dport 53 2>/dev/null | wc -l")
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("conntrack -L: %v", err)
		}
		ctl = append(ctl, time.Since(s))
		ctlCPU = append(ctlCPU, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
		ctlCount = strings.TrimSpace(string(out))
	}
	rows = append(rows, benchRow{name: "conntrack -L -p udp --dport 53 | wc -l (" + ctlCount + ")", d: ctl},
		benchRow{name: "  the same, CPU time (user+system of the commands)", d: ctlCPU})

	// vishvananda/netlink: a full dump, filtered in Go.
	var full, fullCPU []time.Duration
	var fullRSS []int64
	var n53 int
	for range 3 {
		runtime.GC()
		debug.FreeOSMemory()
		base := resetHWM()
		s := time.Now()
		u0, s0 := processCPU()
		h, err := vnl.NewHandleAt(ns.handle)
		if err != nil {
			b.Fatal(err)
		}
		flows, err := h.ConntrackTableList(vnl.ConntrackTable, vnl.FAMILY_V4)
		h.Close()
		if err != nil {
			b.Fatal(err)
		}
		n53 = 0
		for _, f := range flows {
			if f.Forward.DstPort == 53 {
				n53++
			}
		}
		full = append(full, time.Since(s))
		u1, s1 := processCPU()
		fullCPU = append(fullCPU, u1-u0+s1-s0)
		fullRSS = append(fullRSS, hwm()-base)
		flows = nil
	}
	rows = append(rows, benchRow{name: fmt.Sprintf("vishvananda/netlink ConntrackTableList, filtered in Go (%d)", n53), d: full, rss: fullRSS},
		benchRow{name: "  the same, CPU time (user+system of this process, GC included)", d: fullCPU})

	fmt.Printf("\n%-100s %5s %10s %10s %10s %12s\n", "", "runs", "median", "p90", "max", "extra RSS")
	for _, r := range rows {
		fmt.Printf("%-100s %5d %10s %10s %10s %12s\n", r.name, len(r.d), pct(r.d, 50), pct(r.d, 90), pct(r.d, 100), rssString(r.rss))
	}
	fmt.Printf("\nratios of medians: node_exporter HTTP / nodeagent HTTP = %.2f; conntrack -L / DNS pass = %.1f (CPU %.1f); ConntrackTableList / DNS pass = %.1f (CPU %.1f)\n",
		ratio(neHTTP, oursHTTP), ratio(ctl, passes), ratio(ctlCPU, passCPU), ratio(full, passes), ratio(fullCPU, passCPU))
	fmt.Printf("targets: scrape <= 5ms (in process median %s, HTTP median %s); DNS pass <= 0.5s (median %s wall, %s CPU), <= 10 MB extra RSS (max %s)\n",
		pct(inproc, 50), pct(oursHTTP, 50), pct(passes, 50), pct(passCPU, 50), rssString([]int64{maxRSS}))
	fmt.Printf("median of each kernel walk (family x protocol, in order): %s\n", strings.Join(walkNote, "; "))
	compareFigures(b, ns, ne, got)
}

// processCPU is the process's user and system CPU time so far (the
// kernel's walks run in system time; on a loaded machine wall time also
// counts the waits for a CPU).
func processCPU() (user, sys time.Duration) {
	var r unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &r)
	return time.Duration(r.Utime.Nano()), time.Duration(r.Stime.Nano())
}

// startStallProbes pins one thread to each CPU, each sleeping 1 ms in a
// loop, and returns a function that stops them and reports the longest
// wakeup delay seen: how long a CPU ran something it would not preempt (a
// filtered dump walks the table with bottom halves, hence preemption,
// disabled until its buffer fills). Like cyclictest, crudely.
func startStallProbes() (stop func() time.Duration) {
	var set unix.CPUSet
	unix.SchedGetaffinity(0, &set)
	var cpus []int
	for c := range 1024 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	done := make(chan struct{})
	results := make(chan time.Duration, len(cpus))
	for _, c := range cpus {
		go func() {
			// Never unlocked: the thread ends with the goroutine rather
			// than go back to the runtime pinned to one CPU.
			runtime.LockOSThread()
			var one unix.CPUSet
			one.Set(c)
			unix.SchedSetaffinity(0, &one)
			var worst time.Duration
			for {
				select {
				case <-done:
					results <- worst
					return
				default:
				}
				s := time.Now()
				unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
				worst = max(worst, time.Since(s)-time.Millisecond)
			}
		}()
	}
	return func() time.Duration {
		close(done)
		var worst time.Duration
		for range cpus {
			worst = max(worst, <-results)
		}
		return worst
	}
}

func familyName(f uint8) string {
	if f == unix.AF_INET6 {
		return FamilyIPv6
	}
	return FamilyIPv4
}

func protoName(p uint8) string {
	if p == unix.IPPROTO_TCP {
		return ProtoTCP
	}
	return ProtoUDP
}

type benchRow struct {
	name string
	d    []time.Duration
	rss  []int64
}

func pct(d []time.Duration, p int) string {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	i = max(0, min(i, len(s)-1))
	v := s[i]
	switch {
	case v < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(v)/1e3)
	case v < time.Second:
		return fmt.Sprintf("%.2fms", float64(v)/1e6)
	}
	return fmt.Sprintf("%.2fs", v.Seconds())
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ratio(a, b []time.Duration) float64 { return float64(median(a)) / float64(median(b)) }

func rssString(r []int64) string {
	if len(r) == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f MB", float64(slices.Max(r))/1e6)
}

// resetHWM resets the process's peak RSS (VmHWM) and returns the RSS now.
func resetHWM() int64 {
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	return statusKB("VmRSS")
}

func hwm() int64 { return statusKB("VmHWM") }

func statusKB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n * 1024
		}
	}
	return 0
}

// inject creates total UDP entries in ns over ctnetlink, in batches of
// messages per sendmsg without acknowledgements: every dnsEvery-th to port
// 53 (every other of those answered), the rest to port 8080. With assured,
// every entry is answered and assured, so that a full table cannot evict
// them (early_drop takes only entries that are not assured).
func inject(ns *testNS, total, dnsEvery int, assured bool) error {
	var fd int
	if err := netnsrun.Run(ns.handle, func() (err error) {
		if fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER); err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}); err != nil {
		return err
	}
	defer unix.Close(fd)
	var batch []byte
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := unix.Sendto(fd, batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		batch = batch[:0]
		if err != nil {
			return err
		}
		// Failures come back as NLMSG_ERROR (no acks were asked for).
		buf := make([]byte, 1<<16)
		for {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if err != nil {
				return nil
			}
			if n >= 20 && binary.NativeEndian.Uint16(buf[4:6]) == unix.NLMSG_ERROR {
				if e := -int32(binary.NativeEndian.Uint32(buf[16:20])); e != 0 {
					return fmt.Errorf("create entry: %w", unix.Errno(e))
				}
			}
		}
	}
	for i := range total {
		src := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
		dst, dport := [4]byte{10, 200, 0, 1}, uint16(8080)
		var status uint32
		if assured {
			status = ipsSeenReply | 1<<2 | 1<<3 // IPS_ASSURED, IPS_CONFIRMED
		}
		if i%dnsEvery == 0 {
			dst, dport = [4]byte{10, 96, 0, 10}, 53
			if i/dnsEvery%2 == 0 && !assured {
				status = ipsSeenReply | 1<<3 // IPS_CONFIRMED: the kernel refuses to change that bit (EBUSY)
			}
		}
		m, err := createMsg(src, dst, 40000+uint16(i%20000), dport, status, uint32(i))
		if err != nil {
			return err
		}
		batch = append(batch, m...)
		if len(batch) > 256<<10 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// createMsg is an IPCTNL_MSG_CT_NEW for one UDP entry with a 10-minute timeout.
func createMsg(src, dst [4]byte, sport, dport uint16, status, seq uint32) ([]byte, error) {
	tuple := func(ae *netlink.AttributeEncoder, typ uint16, s, d [4]byte, sp, dp uint16) {
		ae.Nested(typ, func(t *netlink.AttributeEncoder) error {
			t.Nested(1, func(ip *netlink.AttributeEncoder) error { // CTA_TUPLE_IP
				ip.Bytes(1, s[:]) // CTA_IP_V4_SRC
				ip.Bytes(2, d[:]) // CTA_IP_V4_DST
				return nil
			})
			t.Nested(ctaTupleProto, func(p *netlink.AttributeEncoder) error {
				p.Uint8(ctaProtoNum, unix.IPPROTO_UDP)
				p.Bytes(2, binary.BigEndian.AppendUint16(nil, sp)) // CTA_PROTO_SRC_PORT
				p.Bytes(ctaProtoDPort, binary.BigEndian.AppendUint16(nil, dp))
				return nil
			})
			return nil
		})
	}
	ae := netlink.NewAttributeEncoder()
	tuple(ae, ctaTupleOrig, src, dst, sport, dport)
	tuple(ae, 2, dst, src, dport, sport)                 // CTA_TUPLE_REPLY
	ae.Bytes(7, binary.BigEndian.AppendUint32(nil, 600)) // CTA_TIMEOUT
	if status != 0 {
		ae.Bytes(ctaStatus, binary.BigEndian.AppendUint32(nil, status))
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	data := append([]byte{unix.AF_INET, 0, 0, 0}, attrs...)
	return netlink.Message{Header: netlink.Header{
		Length: uint32(unix.NLMSG_HDRLEN + len(data)), Type: nfnlSubsysCTNetlink << 8, // IPCTNL_MSG_CT_NEW
		Flags: netlink.Request | netlink.Create | netlink.Excl, Sequence: seq,
	}, Data: data}.MarshalBinary()
}

// serveIn serves h on a listener inside ns; it returns the address.
func serveIn(b *testing.B, ns *testNS, h http.Handler) string {
	var l net.Listener
	if err := netnsrun.Run(ns.handle, func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	b.Cleanup(func() { srv.Close(); <-done })
	return l.Addr().String()
}

// nodeExporterIn runs node_exporter with only its conntrack collector inside ns.
func nodeExporterIn(b *testing.B, ns *testNS) (string, func()) {
	bin := os.Getenv("NODE_EXPORTER")
	if bin == "" {
		bin = os.ExpandEnv("$HOME/.cache/nodeagent/bin/node_exporter")
	}
	addr := "127.0.0.1:19100"
	cmd := exec.Command("ip", "netns", "exec", ns.name, bin, "--collector.disable-defaults", "--collector.conntrack",
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("node_exporter (conntrack/hack/prereqs.sh installs it): %v", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := httpGet(ns, addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			b.Fatal("node_exporter did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, stop
}

// httpGet fetches /metrics from addr inside ns (a fresh connection each time).
func httpGet(ns *testNS, addr string) (string, error) {
	var conn net.Conn
	if err := netnsrun.Run(ns.handle, func() (err error) { conn, err = net.DialTimeout("tcp", addr, 2*time.Second); return err }); err != nil {
		return "", err
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func httpScrapes(b *testing.B, ns *testNS, addr string, n int) []time.Duration {
	var d []time.Duration
	for range n {
		s := time.Now()
		if _, err := httpGet(ns, addr); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(s))
	}
	return d
}

// compareFigures prints node_exporter's conntrack figures next to ours.
func compareFigures(b *testing.B, ns *testNS, ne string, ours map[string]float64) {
	body, err := httpGet(ns, ne)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Println("\nthe same figures: node_exporter | nodeagent")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "node_nf_conntrack") {
			fmt.Printf("  %s\n", line)
		}
	}
	for _, k := range []string{"entries", "entries_limit", "found_total", "invalid_total", "insert_total", "insert_failed_total",
		"drop_total", "early_drop_total", "error_total", "search_restart_total", "clash_resolve_total", "chaintoolong_total"} {
		fmt.Printf("  nodeagent_conntrack_%s %v\n", k, ours["nodeagent_conntrack_"+k])
	}
}
