//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/deploy"
	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

// TestConntrackOnNodeAsRoot runs the agent with conntrack enabled through
// the chart on the real node and checks what it exports against the host's
// own table: the statistics come over ctnetlink, entries and limit match
// the kernel's, and pods that look names up through the cluster DNS (the
// kube-dns ClusterIP, DNATed to CoreDNS as kube-proxy does) show up as DNS
// flows, over UDP and, with `options use-vc`, over TCP; queries to an
// address that does not answer show up as unreplied.
func TestConntrackOnNodeAsRoot(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	up := startUpstream(t)
	cfg := replaceSection(string(deploy.DefaultConfig), "conntrack",
		"conntrack:\n  enabled: true\n  dnsFlows:\n    interval: 2s\n    timeout: 1s\n    protocols: [udp, tcp]\n")
	installAgent(ctx, t, c, cfg)
	startCoreDNS(ctx, t, c, up.addr)

	t.Run("TableFromNetlink", func(t *testing.T) {
		body := scrape(ctx, t)
		if v := sample(body, `nodeagent_conntrack_stats_source{source="netlink"}`); v != 1 {
			t.Errorf(`stats_source{source="netlink"} = %v, want 1 (the chart grants NET_ADMIN for ctnetlink)`, v)
		}
		limit := readProcUint(t, "/proc/sys/net/netfilter/nf_conntrack_max")
		if v := sample(body, "nodeagent_conntrack_entries_limit"); v != float64(limit) {
			t.Errorf("entries_limit = %v, want nf_conntrack_max %d", v, limit)
		}
		// The table moves while we look: the agent's figure must lie
		// between the host's counts read just before and after a scrape.
		var lo, hi uint64
		var got float64
		mustPoll(ctx, t, "entries within the host's nf_conntrack_count", time.Minute, func() bool {
			before := readProcUint(t, "/proc/sys/net/netfilter/nf_conntrack_count")
			got = sample(scrape(ctx, t), "nodeagent_conntrack_entries")
			after := readProcUint(t, "/proc/sys/net/netfilter/nf_conntrack_count")
			lo, hi = min(before, after), max(before, after)
			return got > 0 && got >= float64(lo) && got <= float64(hi)
		})
		t.Logf("entries %v (host %d-%d), limit %d", got, lo, hi, limit)
		// This kernel's per-CPU counters, each under its own name; the
		// two that node_exporter mislabels from /proc among them.
		for _, name := range []string{"found", "invalid", "insert_failed", "drop", "early_drop", "error",
			"search_restart", "clash_resolve", "chaintoolong"} {
			if v := sample(body, "nodeagent_conntrack_"+name+"_total"); v < 0 {
				t.Errorf("nodeagent_conntrack_%s_total not exported", name)
			}
		}
	})

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

	t.Run("DNSFlowsFromPods", func(t *testing.T) {
		base := scrape(ctx, t)
		udp0 := max(0, sample(base, `nodeagent_conntrack_dns_flows{proto="udp"}`))
		tcp0 := max(0, sample(base, `nodeagent_conntrack_dns_flows{proto="tcp"}`))
		const lookups = 10
		var names []string
		for i := range lookups {
			names = append(names, fmt.Sprintf("q%d.%s", i, testZone))
		}
		// Go's resolver asks A and AAAA from a socket each: two UDP
		// entries per lookup, which stay 30 s (nf_conntrack_udp_timeout).
		runLookups(ctx, t, c, ref, "dnsquery-udp", names, nil)
		var udp, tcp float64
		mustPoll(ctx, t, "the pod's lookups counted as UDP DNS flows", 20*time.Second, func() bool {
			udp = sample(scrape(ctx, t), `nodeagent_conntrack_dns_flows{proto="udp"}`)
			return udp >= udp0+2*lookups
		})
		t.Logf("dns_flows udp %v (before %v); conntrack -L on the host: %s", udp, udp0, hostDNSFlows(ctx))
		// use-vc: the same over TCP (the entries stay in TIME_WAIT for 120 s).
		runLookups(ctx, t, c, ref, "dnsquery-tcp", names[:2], []corev1.PodDNSConfigOption{{Name: "use-vc"}})
		mustPoll(ctx, t, "the pod's lookups counted as TCP DNS flows", 20*time.Second, func() bool {
			tcp = sample(scrape(ctx, t), `nodeagent_conntrack_dns_flows{proto="tcp"}`)
			return tcp >= tcp0+2
		})
		t.Logf("dns_flows tcp %v (before %v); conntrack -L on the host: %s", tcp, tcp0, hostDNSFlows(ctx))
	})

	t.Run("UnrepliedQueries", func(t *testing.T) {
		un0 := max(0, sample(scrape(ctx, t), `nodeagent_conntrack_dns_flows_unreplied{proto="udp"}`))
		// Nothing listens on this loopback address: queries to it get no
		// DNS answer, as to a dead server.
		const queries, dead = 5, "127.77.0.53"
		t.Cleanup(func() { _ = exec.Command("conntrack", "-D", "-d", dead).Run() })
		for range queries {
			conn, err := net.Dial("udp", net.JoinHostPort(dead, "53"))
			if err != nil {
				t.Fatal(err)
			}
			conn.Write([]byte("not answered"))
			conn.Close()
		}
		var un float64
		mustPoll(ctx, t, "unanswered queries counted as unreplied DNS flows", 20*time.Second, func() bool {
			un = sample(scrape(ctx, t), `nodeagent_conntrack_dns_flows_unreplied{proto="udp"}`)
			return un >= un0+queries
		})
		t.Logf("dns_flows_unreplied udp %v (before %v)", un, un0)
	})

	if body := scrape(ctx, t); sample(body, `nodeagent_conntrack_dns_count_passes_total{result="ok"}`) < 1 {
		t.Errorf("no DNS counting pass succeeded:\n%s", grepLines(body, "nodeagent_conntrack_dns_count"))
	}
}

// runLookups runs dnsquery on the host network (as node-level clients and
// hostNetwork pods do) with the cluster DNS as its only nameserver, and
// waits for it to resolve every name.
func runLookups(ctx context.Context, t *testing.T, c *cluster.Cluster, ref, name string, names []string, opts []corev1.PodDNSConfigOption) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			HostNetwork:   true,
			DNSPolicy:     corev1.DNSNone,
			DNSConfig: &corev1.PodDNSConfig{
				Nameservers: []string{kubeDNSIP},
				Options:     append([]corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("1")}}, opts...),
			},
			Containers: []corev1.Container{{Name: "q", Image: ref, Args: names}},
		},
	}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	var got *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = c.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		return err == nil && (got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed), nil
	})
	log, _ := c.PodLog("default", name, "q")
	if err != nil || got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("%s did not succeed: %v %v\n%s", name, err, statusOf(got), log)
	}
	if n := strings.Count(log, "RESOLVED "); n != len(names) {
		t.Fatalf("%s resolved %d of %d names:\n%s", name, n, len(names), log)
	}
}

// sample returns the value of the exposition line whose series is exactly
// series (name and labels as the agent writes them), or -1.
func sample(body, series string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func readProcUint(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// hostDNSFlows is conntrack(8)'s count of the same entries, for the log.
func hostDNSFlows(ctx context.Context) string {
	var parts []string
	for _, p := range []string{"udp", "tcp"} {
		out, err := exec.CommandContext(ctx, "sh", "-c", "conntrack -L -p "+p+" --dport 53 2>/dev/null | wc -l").Output()
		if err != nil {
			return err.Error()
		}
		parts = append(parts, p+" "+strings.TrimSpace(string(out)))
	}
	return strings.Join(parts, ", ")
}
