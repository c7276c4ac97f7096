package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// CleanStale removes what a run that could not tear down (a killed or
// timed-out test binary: t.Cleanup does not run after a go test timeout)
// left on this host: processes using a nodeagent-e2e-* temporary directory
// and every process in the kubelet's pod cgroups, mounts under those
// directories, the cgroups, the KUBE-*, CNI-* and NODEAGENT-E2E* iptables
// chains, the harness's interfaces and blackhole route, and the
// directories; and it restores the sysctls, the propagation of / and the
// nftables tables as the dead run recorded them in its directory.
func CleanStale(ctx context.Context, logf func(string, ...any)) error {
	var errs []error
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for round := 0; round < 3; round++ {
		killCgroupProcs(cgroupDirs())
		for _, d := range dirs {
			for _, pid := range procsMatching(d) {
				logf("kill process %d (uses %s)", pid, d)
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, p := range procsNamed("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet") {
		errs = append(errs, fmt.Errorf("process %s is still running and does not use a %s* directory: not ours, stop it yourself", p, dirPrefix))
	}
	for _, d := range dirs {
		if err := unmountBelow(d); err != nil {
			errs = append(errs, err)
		}
	}
	if cg := cgroupDirs(); len(cg) > 0 {
		logf("remove cgroups %v", cg)
		if err := removeCgroups(cg, 30*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		if err := removeChains(ctx, bin, "KUBE-", "CNI-", guardChain); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeHostNetwork(ctx, logf)...)
	for _, d := range dirs {
		if h, err := loadHostState(d); err == nil {
			logf("restore host state recorded in %s: sysctls %v, / made shared %v, nftables tables before %v, %d paths in host directories",
				d, h.Sysctls, h.MadeRootShared, h.NFTBefore, len(h.Dirs))
			errs = append(errs, h.restore(ctx)...)
			errs = append(errs, deleteConntrack(ctx, DefaultPodCIDR, h.Ports, h.ServiceIPs)...)
		}
	}
	for _, d := range dirs {
		logf("remove %s", d)
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	if stale := staleState(ctx); len(stale) > 0 {
		errs = append(errs, fmt.Errorf("still there: %s", strings.Join(stale, "; ")))
	}
	return errors.Join(errs...)
}
