package conntrack

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodeagent/nodeagent/agent/netnsrun"
)

// TestRootClashResolve reproduces the DNAT insert race behind lost DNS
// queries: two threads send the first datagram of one UDP socket at the same
// moment (glibc's parallel A and AAAA queries), through a DNAT rule (kube-proxy's
// ClusterIP), so two CPUs create an entry for the same tuple and the second
// insert clashes. The kernel resolves it (clash_resolve) when both entries
// NAT the same way. A race on 2 CPUs needs many tries: it sends pairs on new
// sockets until clash_resolve rises (or 20 s pass).
func TestRootClashResolve(t *testing.T) {
	needRoot(t)
	if runtime.NumCPU() < 2 || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs 2 CPUs for the insert race")
	}
	ns := newTestNS(t)
	ns.track(t)
	ns.mustRun(t, "ip", "addr", "add", "10.96.0.10/32", "dev", "lo")
	ns.mustRun(t, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-d", "10.96.0.10", "--dport", "53",
		"-j", "DNAT", "--to-destination", "127.0.0.1:53")
	cfg := DefaultConfig()
	cfg.ENA.Enabled = false
	_, reg := startIn(t, ns, cfg)
	before := scrape(t, reg)["nodeagent_conntrack_clash_resolve_total"]

	deadline := time.Now().Add(20 * time.Second)
	tries := 0
	for time.Now().Before(deadline) {
		var fds []int
		if err := netnsrun.Run(ns.handle, func() error {
			for range 200 {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 53, Addr: [4]byte{10, 96, 0, 10}}); err != nil {
					unix.Close(fd)
					return err
				}
				fds = append(fds, fd)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		racePairs(fds)
		for _, fd := range fds {
			unix.Close(fd)
		}
		tries += len(fds)
		got := scrape(t, reg)
		if got["nodeagent_conntrack_clash_resolve_total"] > before {
			t.Logf("clash_resolve rose by %v after %d socket pairs (insert_failed %v)",
				got["nodeagent_conntrack_clash_resolve_total"]-before, tries, got["nodeagent_conntrack_insert_failed_total"])
			return
		}
	}
	t.Fatalf("no clash_resolve after %d racing socket pairs", tries)
}

// racePairs sends one datagram from two threads at once on each socket.
func racePairs(fds []int) {
	var wg sync.WaitGroup
	var ready [2]atomic.Int64
	for side := range 2 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			msg := []byte{byte(side)}
			for i, fd := range fds {
				ready[side].Store(int64(i + 1))
				for ready[1-side].Load() < int64(i+1) {
				}
				unix.Write(fd, msg)
			}
		})
	}
	wg.Wait()
}
