//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodeagent/nodeagent/deploy"
	"github.com/nodeagent/nodeagent/e2e/cluster"
)

// Names CoreDNS serves under the cluster domain with plugins other than
// kubernetes, which the agent is told to exempt: a rewrite to the API
// server's Service, and a stub zone (its own server block) answered by the
// template plugin.
const (
	lnxRewritten = "api.cluster.local."
	lnxStubZone  = "stub.cluster.local."
	lnxStubIP    = "203.0.113.9"
	lnxPlugins   = "        rewrite name exact api.cluster.local kubernetes.default.svc.cluster.local\n"
	lnxBlocks    = `    stub.cluster.local:53 {
        bind NODE_IP
        template IN A stub.cluster.local {
            answer "{{ .Name }} 60 IN A ` + lnxStubIP + `"
        }
    }
`
)

// TestDNSLocalNXDOMAINAsRoot runs the agent's local NXDOMAIN rules against
// the real CoreDNS of the cluster (kubernetes plugin, pods insecure) and
// compares every answer with CoreDNS's own for the same question: the
// Services, endpoints, SRV records and pod names that exist, the names a
// pod's ndots:5 search list makes of them and of external names, a
// namespace created after the cache started, and names served by a rewrite
// and a stub zone (exempt). No name CoreDNS answers may get NXDOMAIN from
// the agent; the impossible ones must be answered on the node.
func TestDNSLocalNXDOMAINAsRoot(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	up := startUpstream(t)
	installAgent(ctx, t, c, replaceSection(string(deploy.DefaultConfig), "dnscache", dnsConfig(up.addr, false)))
	startCoreDNSWith(ctx, t, c, up.addr, lnxPlugins, lnxBlocks)
	applyConfig(ctx, t, c, replaceSection(currentConfig(ctx, t, c), "dnscache", dnsConfig(up.addr, true)+
		"  localNXDOMAIN:\n    exempt: ["+strings.TrimSuffix(lnxRewritten, ".")+", "+strings.TrimSuffix(lnxStubZone, ".")+"]\n"))
	waitRollout(ctx, t, c)
	mustPoll(ctx, t, "dnscache ready", 3*time.Minute, func() bool {
		return strings.Contains(scrape(ctx, t), `nodeagent_feature_ready{feature="dnscache"} 1`)
	})
	agent := net.JoinHostPort(cluster.NodeLocalDNS, "53")
	coredns := net.JoinHostPort(c.NodeIP, "53")
	start := time.Now()

	// Everything below is created after the cache started.
	const ns = "lnx"
	pods := createLocalNXObjects(ctx, t, c, ns)
	var podIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, p.Status.PodIP)
	}
	exist := []string{
		"cluster.local.", "svc.cluster.local.", "pod.cluster.local.", "dns-version.cluster.local.", "ns.dns.cluster.local.",
		"kubernetes.default.svc.cluster.local.", "kube-dns.kube-system.svc.cluster.local.",
		"_dns._udp.kube-dns.kube-system.svc.cluster.local.", "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local.",
		ns + ".svc.cluster.local.",
		"web." + ns + ".svc.cluster.local.",                  // ClusterIP
		"_http._tcp.web." + ns + ".svc.cluster.local.",       // SRV of a named port
		"_metrics._udp.web." + ns + ".svc.cluster.local.",    // a UDP one
		"hl." + ns + ".svc.cluster.local.",                   // headless
		"web-0.hl." + ns + ".svc.cluster.local.",             // pod hostname + subdomain
		"web-1.hl." + ns + ".svc.cluster.local.",             //
		"_http._tcp.hl." + ns + ".svc.cluster.local.",        // SRV of the headless Service
		"_http._tcp.web-0.hl." + ns + ".svc.cluster.local.",  // (too long: CoreDNS NXDOMAIN)
		"ext." + ns + ".svc.cluster.local.",                  // ExternalName
		ns + ".pod.cluster.local.",                           //
		"10-1-2-3." + ns + ".pod.cluster.local.",             // pods insecure: any IP
		"fd00-10-244--5." + ns + ".pod.cluster.local.",       // IPv6 with dashes
		"x.10-1-2-3." + ns + ".pod.cluster.local.",           // CoreDNS ignores labels left of the pod
		"www." + strings.TrimSuffix(testZone, "."),           // external (with the trailing dot added below)
		"x." + lnxStubZone, "db." + lnxStubZone, lnxStubZone, // stub zone (exempt)
		lnxRewritten, // rewrite (exempt)
	}
	for _, ip := range podIPs {
		exist = append(exist, strings.ReplaceAll(ip, ".", "-")+"."+ns+".pod.cluster.local.")
	}
	// Wait until CoreDNS itself answers every name that is created above,
	// so that no NXDOMAIN of its own from before its informers saw them is
	// cached anywhere.
	for _, n := range []string{"web-0.hl." + ns + ".svc.cluster.local.", "web-1.hl." + ns + ".svc.cluster.local.",
		"web." + ns + ".svc.cluster.local.", "_http._tcp.hl." + ns + ".svc.cluster.local."} {
		qt := dns.TypeA
		if strings.HasPrefix(n, "_") {
			qt = dns.TypeSRV
		}
		mustPoll(ctx, t, "CoreDNS answers "+n, time.Minute, func() bool {
			r, err := exchange(ctx, coredns, n, qt)
			return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0
		})
	}

	// A pod's search list (namespace lnx) and ndots:5: every name with
	// fewer than 5 dots is asked with each suffix first.
	search := []string{ns + ".svc.cluster.local.", "svc.cluster.local.", "cluster.local."}
	bases := []string{"s3.us-east-1.amazonaws.com", "www.e2e.test", "web", "web." + ns, "web." + ns + ".svc", "hl." + ns,
		"web-0.hl", "web-0.hl." + ns, "_http._tcp.web", "_http._tcp.web." + ns, "kubernetes.default", "kubernetes.default.svc",
		"ext", "10-1-2-3." + ns + ".pod", "x.stub", "db.stub", "api", "kube-dns.kube-system"}
	names := map[string]bool{}
	for _, n := range exist {
		names[dns.Fqdn(n)] = true
	}
	for _, b := range bases {
		if strings.Count(b, ".") < 5 {
			for _, s := range search {
				names[b+"."+s] = true
			}
		}
		names[dns.Fqdn(b)] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)

	before := scrape(ctx, t)
	var nx, answered int
	types := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT}
	for _, n := range sorted {
		for _, qt := range types {
			if dns.IsSubDomain(lnxStubZone, n) && qt != dns.TypeA {
				continue // the template answers A only (anything else has no plugin after it)
			}
			got, err := exchange(ctx, agent, n, qt)
			if err != nil {
				t.Fatalf("agent: %s %s: %v", n, dns.TypeToString[qt], err)
			}
			want, err := exchange(ctx, coredns, n, qt)
			if err != nil {
				t.Fatalf("CoreDNS: %s %s: %v", n, dns.TypeToString[qt], err)
			}
			if got.Rcode != want.Rcode {
				t.Errorf("%s %s: agent %s, CoreDNS %s", n, dns.TypeToString[qt], dns.RcodeToString[got.Rcode], dns.RcodeToString[want.Rcode])
				continue
			}
			switch {
			case got.Rcode != dns.RcodeNameError:
				answered++
			case dns.IsSubDomain("cluster.local.", n) && (len(got.Ns) != 1 || got.Ns[0].Header().Rrtype != dns.TypeSOA):
				t.Errorf("%s %s: NXDOMAIN without the cluster domain's SOA: %v", n, dns.TypeToString[qt], got)
			default:
				nx++
			}
		}
	}
	after := scrape(ctx, t)
	schema := metricValue(after, `nodeagent_dnscache_local_nxdomain_total{rule="schema"}`) -
		metricValue(before, `nodeagent_dnscache_local_nxdomain_total{rule="schema"}`)
	t.Logf("%d names x %d types compared with CoreDNS, same rcode for each: %d answered, %d NXDOMAIN, of them %v answered on the node (schema rule)",
		len(sorted), len(types), answered, nx, schema)
	if schema < float64(len(bases)) {
		t.Errorf("only %v answers from the schema rule, want at least %d (the impossible expansions)", schema, len(bases))
	}
	for _, n := range []string{lnxRewritten, "x." + lnxStubZone} {
		r, err := exchange(ctx, agent, n, dns.TypeA)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("exempt %s: %v %v", n, r, err)
		}
	}

	// RFC 8020 and a namespace created after the cache started: CoreDNS's
	// NXDOMAIN for the namespace answers the names below it on the node
	// until it expires; then the new Service resolves.
	late := "late" + fmt.Sprint(time.Now().Unix()%1000)
	if r, err := exchange(ctx, agent, late+".svc.cluster.local.", dns.TypeA); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("namespace %s before it exists: %v %v", late, r, err)
	}
	rfc := metricValue(scrape(ctx, t), `nodeagent_dnscache_local_nxdomain_total{rule="rfc8020"}`)
	svcName := "web." + late + ".svc.cluster.local."
	if r, err := exchange(ctx, agent, svcName, dns.TypeA); err != nil || r.Rcode != dns.RcodeNameError {
		t.Fatalf("%s before its namespace exists: %v %v", svcName, r, err)
	}
	if d := metricValue(scrape(ctx, t), `nodeagent_dnscache_local_nxdomain_total{rule="rfc8020"}`) - rfc; d != 1 {
		t.Errorf("rfc8020 answers went up by %v, want 1 (%s below the cached NXDOMAIN of its namespace)", d, svcName)
	}
	created := time.Now()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: late}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Client.CoreV1().Namespaces().Delete(context.Background(), late, metav1.DeleteOptions{}) })
	if _, err := c.Client.CoreV1().Services(late).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustPoll(ctx, t, svcName+" through the agent", time.Minute, func() bool {
		r, err := exchange(ctx, agent, svcName, dns.TypeA)
		return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0
	})
	t.Logf("%s resolved through the agent %s after its namespace and Service were created (denialTTL 5s); whole test %s",
		svcName, time.Since(created).Round(100*time.Millisecond), time.Since(start).Round(time.Second))
}

// exchange asks server over UDP (TCP when truncated), up to three times
// on a timeout as a stub resolver (and dig) does: the test asks hundreds of
// questions on a loaded machine, and one lost or late datagram is not a
// wrong answer.
func exchange(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	var r *dns.Msg
	var err error
	for range 3 {
		var ne net.Error
		if r, _, err = (&dns.Client{Timeout: 3 * time.Second}).ExchangeContext(ctx, m, server); !errors.As(err, &ne) || !ne.Timeout() {
			break
		}
	}
	if err == nil && r.Truncated {
		r, _, err = (&dns.Client{Net: "tcp", Timeout: 3 * time.Second}).ExchangeContext(ctx, m, server)
	}
	return r, err
}

// createLocalNXObjects makes namespace ns with a ClusterIP Service (named
// TCP and UDP ports), a headless Service with two pods that set hostname
// and subdomain, and an ExternalName Service; it returns the running pods.
func createLocalNXObjects(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) []*corev1.Pod {
	t.Helper()
	cs := c.Client.CoreV1()
	if _, err := cs.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	svcs := []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", Port: 9000, Protocol: corev1.ProtocolUDP},
		}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "hl"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
			Selector: map[string]string{"app": "hl"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName,
			ExternalName: "www." + strings.TrimSuffix(testZone, ".")}},
	}
	for _, s := range svcs {
		if _, err := cs.Services(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var out []*corev1.Pod
	for _, h := range []string{"web-0", "web-1"} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: h, Labels: map[string]string{"app": "hl"}},
			Spec: corev1.PodSpec{
				Hostname: h, Subdomain: "hl",
				Containers: []corev1.Container{{Name: "pause", Image: c.PauseImage,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
			},
		}
		if _, err := cs.Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []string{"web-0", "web-1"} {
		var p *corev1.Pod
		mustPoll(ctx, t, "pod "+h+" ready", 3*time.Minute, func() bool {
			var err error
			p, err = cs.Pods(ns).Get(ctx, h, metav1.GetOptions{})
			if err != nil || p.Status.PodIP == "" {
				return false
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return true
				}
			}
			return false
		})
		out = append(out, p)
	}
	return out
}
