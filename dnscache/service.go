package dnscache

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// firstServiceRead is how long Run waits, at start, for the first read of
// clusterDNS.service before it serves the other zones without it.
const firstServiceRead = 10 * time.Second

// watchService starts watching clusterDNS.service when the cluster DNS comes
// from it: one watch for the life of Run instead of a GET on every
// reconcile, and a change of the Service (a new ClusterIP, a port) reaches
// the upstream list at once. It waits up to firstServiceRead for the first
// read (or a failed one) and returns the function that stops the watch and
// waits for it.
func (c *Cache) watchService(ctx context.Context) (stop func()) {
	if len(c.cfg.ClusterDNS.Addresses) > 0 || c.deps.Kube == nil {
		return func() {}
	}
	ns, name, _ := strings.Cut(c.cfg.ClusterDNS.Service, "/")
	c.svc = c.deps.Kube.ServiceWatch(ns, name)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.svc.Run(ctx)
	}()
	wctx, wcancel := context.WithTimeout(ctx, firstServiceRead)
	defer wcancel()
	_, _ = c.svc.Wait(wctx) // clusterUpstreams reports what it found
	return func() { cancel(); <-done }
}

// serviceChanges hears of each change of clusterDNS.service (nil without a
// watch: a nil channel never receives).
func (c *Cache) serviceChanges() (<-chan struct{}, func()) {
	if c.svc == nil {
		return nil, func() {}
	}
	return c.svc.Subscribe()
}

// clusterUpstreams is clusterDNS.addresses, or the addresses of the watched
// clusterDNS.service (its ClusterIPs, at its DNS port for
// clusterDNS.protocol).
func (c *Cache) clusterUpstreams() ([]netip.AddrPort, error) {
	if len(c.cfg.ClusterDNS.Addresses) > 0 {
		return mustUpstreams(c.cfg.ClusterDNS.Addresses), nil
	}
	if c.svc == nil {
		return nil, fmt.Errorf("clusterDNS.service %q needs a Kubernetes client; set clusterDNS.addresses", c.cfg.ClusterDNS.Service)
	}
	svc, synced := c.svc.Get()
	if !synced {
		return nil, fmt.Errorf("service %s: %w", c.cfg.ClusterDNS.Service, c.svc.Err())
	}
	if svc == nil {
		return nil, fmt.Errorf("service %s not found", c.cfg.ClusterDNS.Service)
	}
	return serviceUpstreams(svc, c.cfg.ClusterDNS.Protocol, c.cfg.ClusterDNS.Service, c.addrs, c.cfg.Port)
}

// serviceUpstreams is svc's ClusterIPs at its DNS port for protocol,
// refusing the cache's own addresses at its own port (a forwarding loop).
func serviceUpstreams(svc *corev1.Service, protocol, svcName string, own []netip.Addr, ownPort int) ([]netip.AddrPort, error) {
	port := 53
	for _, p := range svc.Spec.Ports {
		if strings.EqualFold(string(p.Protocol), protocol) && (p.Port == 53 || strings.HasPrefix(p.Name, "dns")) {
			port = int(p.Port)
			break
		}
	}
	var out []netip.AddrPort
	for _, ipStr := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
		ip, err := netip.ParseAddr(ipStr)
		if err != nil {
			continue
		}
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		if containsAddr(own, ap.Addr()) && port == ownPort {
			return nil, fmt.Errorf("service %s has the cache's own address %s (a forwarding loop)", svcName, ap)
		}
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("service %s has no ClusterIP", svcName)
	}
	return out, nil
}
