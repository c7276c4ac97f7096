//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

// testZone is answered by the fake upstream; the answer address is a
// documentation address that is only ever data in a DNS answer.
const (
	testZone   = "e2e.test."
	testAnswer = "203.0.113.7"
)

// upstream is a real DNS server on loopback standing in for the node's
// resolvers (which are off-machine and must not be used by tests).
type upstream struct {
	addr    string
	queries atomic.Int64
	servers []*dns.Server
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	u := &upstream{addr: pc.LocalAddr().String()}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 {
			q := r.Question[0]
			switch {
			case dns.IsSubDomain(testZone, q.Name) && q.Qtype == dns.TypeA:
				u.queries.Add(1)
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.ParseIP(testAnswer),
				})
			case dns.IsSubDomain(testZone, q.Name):
				// NODATA
			case q.Name == "." && q.Qtype == dns.TypeNS:
				// health check: empty NOERROR
			default:
				m.Rcode = dns.RcodeNameError
			}
		}
		_ = w.WriteMsg(m)
	})
	u.servers = []*dns.Server{
		{PacketConn: pc, Handler: h},
		{Listener: ln, Handler: h},
	}
	for _, s := range u.servers {
		go func() { _ = s.ActivateAndServe() }()
	}
	t.Cleanup(func() {
		for _, s := range u.servers {
			_ = s.Shutdown()
		}
	})
	return u
}

func nftTableExists(ctx context.Context, family, name string) bool {
	return exec.CommandContext(ctx, "nft", "list", "table", family, name).Run() == nil
}

// dnsConfig is the dnscache section the test enables: a bridge instead of
// a dummy interface (this kernel has no dummy driver), the default cluster
// upstream (TCP to the kube-dns-upstream Service, in front of CoreDNS), and
// the node's resolvers replaced by the loopback server (the real ones are
// off-machine).
// Disabled, the section keeps the rest, so that the chart renders the same
// privileges (with keepPrivileges).
func dnsConfig(upstreamAddr string, enabled bool) string {
	return `dnscache:
  enabled: ` + strconv.FormatBool(enabled) + `
  interfaceType: bridge
  reconcileInterval: 5s
  node:
    addresses: ["` + upstreamAddr + `"]
`
}

// replaceSection swaps the top-level YAML section name (up to the next
// top-level key) for repl.
// logPrivileges logs what the agent pod runs with.
func logPrivileges(t *testing.T, p *corev1.Pod) {
	t.Helper()
	sc := p.Spec.Containers[0].SecurityContext
	var paths []string
	for _, v := range p.Spec.Volumes {
		if v.HostPath != nil {
			paths = append(paths, v.HostPath.Path)
		}
	}
	t.Logf("agent pod %s: hostNetwork=%v hostPID=%v privileged=%v capabilities=%+v hostPaths=%v",
		p.Name, p.Spec.HostNetwork, p.Spec.HostPID, sc.Privileged != nil && *sc.Privileged, sc.Capabilities, paths)
}

func replaceSection(cfg, name, repl string) string {
	lines := strings.Split(cfg, "\n")
	var out []string
	in := false
	done := false
	for _, l := range lines {
		top := l != "" && l[0] != ' ' && l[0] != '#'
		if top && strings.HasPrefix(l, name+":") {
			in = true
			done = true
			out = append(out, strings.TrimRight(repl, "\n"))
			continue
		}
		if in && top {
			in = false
		}
		if !in {
			out = append(out, l)
		}
	}
	if !done {
		out = append(out, strings.TrimRight(repl, "\n"))
	}
	return strings.Join(out, "\n")
}

// testDNSThroughAgent enables dnscache through the chart (the pod gets
// dnscache's privileges, so the DaemonSet rolls), resolves a name from a pod
// on the pod network through the agent's address, checks the answer came
// through the agent (its metrics) from the upstream, then disables the
// feature and checks the agent removed its interface and nftables table.
func testDNSThroughAgent(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	up := startUpstream(t)
	startCoreDNS(ctx, t, c, up.addr)
	before := agentPod(ctx, t, c)
	applyConfig(ctx, t, c, replaceSection(currentConfig(ctx, t, c), "dnscache", dnsConfig(up.addr, true)))
	if p := waitRollout(ctx, t, c); p.UID == before.UID {
		t.Fatalf("enabling dnscache did not roll the agent pod: its privileges did not change")
	} else {
		logPrivileges(t, p)
	}
	// dnscache's RBAC: the one Service it watches, no other, and no GET.
	sa := "--as=system:serviceaccount:" + agentNamespace + ":" + agentName
	for q, want := range map[[2]string]string{
		{"watch", "services/kube-dns-upstream"}: "yes", {"list", "services/kube-dns-upstream"}: "yes",
		{"watch", "services/kube-dns"}: "no", {"get", "services/kube-dns-upstream"}: "no",
	} {
		out, _ := c.Kubectl(ctx, "", "auth", "can-i", sa, q[0], q[1], "-n", "kube-system")
		if got := lastLine(out); got != want {
			t.Errorf("with dnscache on, can the agent %s %s? %q, want %q", q[0], q[1], got, want)
		}
	}
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		return strings.Contains(scrape(ctx, t), `nodeagent_feature_ready{feature="dnscache"} 1`), nil
	})
	if err != nil {
		log, _ := agentLog(c)
		t.Fatalf("dnscache not ready: %v\n%s", err, lastBytes(log, 4000))
	}
	readyAt := time.Now()

	bin := filepath.Join(t.TempDir(), "dnsquery")
	if err := image.GoBuild(ctx, cluster.ModuleDir(), "./images/dnsquery", bin); err != nil {
		t.Fatal(err)
	}
	img, err := image.StaticBinary(bin, "dnsquery")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := image.Push(ctx, img, c.Registry+"/e2e/dnsquery:1")
	if err != nil {
		t.Fatal(err)
	}
	name := "www." + strings.TrimSuffix(testZone, ".")
	// A cluster name: CoreDNS answers it from the API (kubernetes plugin),
	// reached through the kube-dns-upstream Service over TCP.
	clusterName := "kube-dns.kube-system.svc.cluster.local"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "dnsquery", Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			DNSPolicy:     corev1.DNSNone,
			DNSConfig: &corev1.PodDNSConfig{
				Nameservers: []string{cluster.NodeLocalDNS},
				Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("1")}},
			},
			Containers: []corev1.Container{{Name: "q", Image: ref, Args: []string{name, name, clusterName}}},
		},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err = c.Client.CoreV1().Pods("default").Get(ctx, "dnsquery", metav1.GetOptions{})
		return err == nil && (got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed), nil
	})
	log, _ := c.PodLog("default", "dnsquery", "q")
	if err != nil || got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("dnsquery pod did not succeed: %v %v\n%s", err, statusOf(got), log)
	}
	if !strings.Contains(log, "RESOLVED "+name+" "+testAnswer) {
		t.Fatalf("pod did not resolve %s to %s:\n%s", name, testAnswer, log)
	}
	if !strings.Contains(log, "RESOLVED "+clusterName+" "+kubeDNSIP) {
		t.Fatalf("pod did not resolve %s to %s (CoreDNS through kube-dns-upstream):\n%s", clusterName, kubeDNSIP, log)
	}
	t.Logf("pod on the pod network resolved through %s:\n%s", cluster.NodeLocalDNS, log)
	if up.queries.Load() == 0 {
		t.Errorf("the upstream saw no query for %s: the answer did not come through the agent", testZone)
	}
	body := scrape(ctx, t)
	if !strings.Contains(body, "nodeagent_dnscache_requests_total{") {
		t.Errorf("agent metrics show no dnscache requests")
	}
	if hits := metricValue(body, "nodeagent_dnscache_cache_hits_total"); hits < 1 {
		t.Errorf("nodeagent_dnscache_cache_hits_total = %v, want >= 1 (the second lookup)", hits)
	}
	_ = c.Client.CoreV1().Pods("default").Delete(ctx, "dnsquery", metav1.DeleteOptions{})
	testDNSRollingUpdate(ctx, t, c)
	checkServiceWatched(t, c, readyAt)

	// Disabling the feature tears its host state down. keepPrivileges keeps
	// the privileges its teardown needs: the pod template stays the same and
	// the running agent applies the change by hot reload.
	running := agentPod(ctx, t, c)
	applyConfig(ctx, t, c, replaceSection(currentConfig(ctx, t, c), "dnscache", dnsConfig(up.addr, false)),
		"--set", "keepPrivileges={dnscache}")
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, ifErr := net.InterfaceByName("nodelocaldns")
		return ifErr != nil && !nftTableExists(ctx, "inet", "nodeagent-dnscache"), nil
	})
	if err != nil {
		t.Errorf("after enabled: false, interface nodelocaldns or table inet nodeagent-dnscache is still there")
	}
	assertNotRestarted(ctx, t, c, running)
	// A disabled feature does not gate readiness: the node is ready again.
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		return metricValue(scrape(ctx, t), "nodeagent_node_ready") == 1, nil
	})
	if err != nil {
		body := scrape(ctx, t)
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "nodeagent_feature_") || strings.HasPrefix(l, "nodeagent_node_ready") {
				lines = append(lines, l)
			}
		}
		t.Errorf("nodeagent_node_ready is not 1 a minute after dnscache was disabled:\n%s", strings.Join(lines, "\n"))
	}
}

// testDNSRollingUpdate restarts the agent DaemonSet the way an upgrade does
// (maxSurge 1: the new pod starts next to the old one, which then gets
// SIGTERM) under a steady load of queries to the agent's address, and
// checks that none was lost: the interface and rules stay, the two
// processes share the sockets (SO_REUSEPORT), the old one drains.
func testDNSRollingUpdate(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	old := agentPod(ctx, t, c)
	var sent, lost, wrong atomic.Int64
	stop := make(chan struct{})
	var load sync.WaitGroup
	for i := range 8 {
		conn, err := net.Dial("udp", net.JoinHostPort(cluster.NodeLocalDNS, "53"))
		if err != nil {
			t.Fatal(err)
		}
		dc := &dns.Conn{Conn: conn}
		load.Go(func() {
			defer conn.Close()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				// Every name is new (a cache miss): even ones go to CoreDNS
				// through the cluster upstream (its kubernetes plugin answers
				// pod names, "pods insecure"), odd ones to the node's resolver.
				name, want := fmt.Sprintf("u%d-%d.%s", i, j, testZone), testAnswer
				if j%2 == 0 {
					want = fmt.Sprintf("10.%d.%d.%d", i, j/256%256, j%256)
					name = strings.ReplaceAll(want, ".", "-") + ".default.pod.cluster.local."
				}
				m := new(dns.Msg)
				m.SetQuestion(name, dns.TypeA)
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				sent.Add(1)
				if dc.WriteMsg(m) != nil {
					lost.Add(1)
					continue
				}
				r, err := dc.ReadMsg()
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					lost.Add(1)
					continue
				}
				if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != want {
					wrong.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		load.Wait()
	}()
	time.Sleep(2 * time.Second)
	if lost.Load() > 0 {
		t.Fatalf("%d of %d queries lost before the rollout", lost.Load(), sent.Load())
	}

	start := time.Now()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"e2e.nodeagent.io/restartedAt":%q}}}}}`, start.Format(time.RFC3339Nano))
	if _, err := c.Client.AppsV1().DaemonSets(agentNamespace).Patch(ctx, agentName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var overlap bool
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=nodeagent"})
		if err != nil {
			return false, nil
		}
		var oldThere, newReady bool
		for _, p := range pods.Items {
			if p.UID == old.UID {
				oldThere = true
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					newReady = true
				}
			}
		}
		overlap = overlap || (oldThere && newReady)
		return !oldThere && newReady, nil
	})
	if err != nil {
		log, _ := agentLog(c)
		t.Fatalf("rollout did not finish: %v\n%s", err, lastBytes(log, 4000))
	}
	rollout := time.Since(start)
	time.Sleep(2 * time.Second)
	close(stop)
	load.Wait()
	misses := metricValue(scrape(ctx, t), "nodeagent_dnscache_cache_misses_total")
	t.Logf("rolling update in %s (new pod ready while the old one ran: %v): %d queries of names asked once (half to CoreDNS), %d lost, %d wrong answers; the new agent counted %v misses",
		rollout.Round(time.Millisecond), overlap, sent.Load(), lost.Load(), wrong.Load(), misses)
	if wrong.Load() > 0 {
		t.Errorf("%d wrong answers across the rolling update", wrong.Load())
	}
	if !overlap {
		t.Errorf("the new agent pod was never ready next to the old one: not a surge rollout")
	}
	if lost.Load() > 0 {
		t.Errorf("%d of %d queries lost across the rolling update", lost.Load(), sent.Load())
	}
}

// checkServiceWatched: while dnscache served (reconciling every 5 s, and
// through a rolling update), the agent read the kube-dns-upstream Service
// through a watch per process, never by a GET per reconcile (API server
// audit log).
func checkServiceWatched(t *testing.T, c *cluster.Cluster, from time.Time) {
	t.Helper()
	to := time.Now()
	reqs, err := c.AuditRequests("system:serviceaccount:"+agentNamespace+":"+agentName, from, to)
	if err != nil {
		t.Fatal(err)
	}
	var svc []string
	for _, r := range reqs {
		if r.ObjectRef != nil && r.ObjectRef.Resource == "services" {
			svc = append(svc, r.Verb+" "+r.RequestURI)
			if r.Verb == "get" {
				t.Errorf("dnscache read its Service with a GET: %s", r.RequestURI)
			}
		}
	}
	t.Logf("Service requests in the %s dnscache served: %d %v", to.Sub(from).Round(time.Second), len(svc), svc)
}
