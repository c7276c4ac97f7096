package cluster

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RouteService makes a ClusterIP Service reachable from the host network
// namespace, as kube-proxy would for host-network clients (this harness runs
// no kube-proxy): its ClusterIP becomes a local address of the host
// interface and each port is DNATed to the Service's first ready endpoint.
// It is written once: call it after the endpoints are ready and again after
// they change. Teardown removes it with the interface and the
// NODEAGENT-E2E-SVC chain, and the conntrack entries of the ClusterIP.
func (c *Cluster) RouteService(ctx context.Context, namespace, name string) error {
	svc, err := c.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return fmt.Errorf("service %s/%s has no ClusterIP", namespace, name)
	}
	eps, err := c.Client.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		return err
	}
	var addr string
	ports := map[string]int32{} // port name -> endpoint port
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			if addr == "" && len(ep.Addresses) > 0 && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				addr = ep.Addresses[0]
			}
		}
		for _, p := range s.Ports {
			if p.Name != nil && p.Port != nil {
				ports[*p.Name] = *p.Port
			}
		}
	}
	if addr == "" {
		return fmt.Errorf("service %s/%s has no ready endpoint", namespace, name)
	}
	if !slices.Contains(c.host.ServiceIPs, svc.Spec.ClusterIP) {
		c.host.ServiceIPs = append(c.host.ServiceIPs, svc.Spec.ClusterIP)
		if err := c.host.save(c.Dir); err != nil {
			return err
		}
	}
	if _, err := run(ctx, 30*time.Second, "ip", "addr", "replace", svc.Spec.ClusterIP+"/32", "dev", dummyIf); err != nil {
		return err
	}
	for _, p := range svc.Spec.Ports {
		target, ok := ports[p.Name]
		if !ok {
			return fmt.Errorf("service %s/%s port %q has no endpoint port", namespace, name, p.Name)
		}
		rule := []string{"-t", "nat", "-A", serviceNAT, "-d", svc.Spec.ClusterIP + "/32", "-p", strings.ToLower(string(p.Protocol)),
			"--dport", strconv.Itoa(int(p.Port)), "-j", "DNAT", "--to-destination", addr + ":" + strconv.Itoa(int(target))}
		if _, err := run(ctx, 30*time.Second, "iptables", append([]string{"-w"}, rule...)...); err != nil {
			return err
		}
	}
	c.t.Logf("service %s/%s: %s routed to %s (DNAT in %s)", namespace, name, svc.Spec.ClusterIP, addr, serviceNAT)
	return nil
}
