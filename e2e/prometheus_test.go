//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/nodeagent/nodeagent/deploy"
	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

// The e2e Prometheus scrapes faster than the chart's 30s default so that
// rates have points within seconds; everything else is the ServiceMonitor's.
const promInterval = "2s"

// prometheusBin is the pinned Prometheus deploy/hack/prometheus.sh installs
// ($PROMETHEUS overrides).
func prometheusBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMETHEUS"); p != "" {
		return p
	}
	p := filepath.Join(cluster.CacheDir(), "bin", "prometheus")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("prometheus not found at %s: e2e/hack/prereqs.sh installs it (deploy/hack/prometheus.sh)", p)
	}
	return p
}

// expectedEmpty are the selectors that may select nothing in this cluster,
// and why: by metric name prefix and, when set, a matcher the selector has.
// Every other selector of every panel and alert must select at least one
// series from the real scrape.
var expectedEmpty = []struct{ prefix, matcher, why string }{
	{"kube_", "", "kube-state-metrics does not run in the e2e cluster"},
	{"nodeagent_feature_restarts_total", "", "no feature restarted (a feature's series appears with its first restart)"},
	{"nodeagent_dnscache_requests_total", `rcode="SERVFAIL"`, "no query failed: the test's upstream answers every name"},
	{"nodeagent_raid_", "", "raid is off: no instance-store NVMe disks here (raid's own tests run md in QEMU)"},
	{"nodeagent_feature_ready", `feature="raid"`, "raid is off"},
	{"nodeagent_imagewarm_", "", "imagewarm is off: no required images configured here (its own e2e test warms images)"},
	{"nodeagent_interrupt_", "", "interrupt is off: there is no IMDS here (its own tests run ec2-metadata-mock)"},
	{"nodeagent_conntrack_ena_", "", "no interface of the ena driver on this machine (it is EC2's NIC)"},
	{"nodeagent_conntrack_other_stat_total", "", "only for counters of a kernel newer than this build knows"},
	{"nodeagent_conntrack_searched_total", "", "old kernels only"},
	{"nodeagent_conntrack_new_total", "", "old kernels only"},
	{"nodeagent_conntrack_ignore_total", "", "old kernels only"},
	{"nodeagent_conntrack_delete_total", "", "old kernels only"},
	{"nodeagent_conntrack_delete_list_total", "", "old kernels only"},
	{"nodeagent_conntrack_read_errors_total", "", "no read failed"},
}

func emptyReason(selector string) string {
	for _, e := range expectedEmpty {
		if strings.HasPrefix(selector, e.prefix) && strings.Contains(selector, e.matcher) {
			return e.why
		}
	}
	return ""
}

// promQuery is one entry of e2e/tools/dashboard/queries.json.
type promQuery struct {
	Source, Feature, Expr string
	Selectors             []string
}

// TestPrometheusScrapesAgentAsRoot runs a real Prometheus (3.x, pinned in
// deploy/hack/prometheus.sh) that discovers and scrapes the agent the way the
// chart's ServiceMonitor makes prometheus-operator do it, with the chart's
// alerting rules loaded, and checks that every alert expression and every
// dashboard query runs and that their selectors select series from the real
// scrape (those of features that are off or of other exporters are listed
// in expectedEmpty with the reason). Then a rejected config makes
// NodeagentConfigRejected fire, seen through Prometheus's API, and a good
// one clears it.
func TestPrometheusScrapesAgentAsRoot(t *testing.T) {
	promBin := prometheusBin(t)
	var queries []promQuery
	b, err := os.ReadFile(filepath.Join(cluster.ModuleDir(), "tools", "dashboard", "queries.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &queries); err != nil {
		t.Fatal(err)
	}

	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	up := startUpstream(t)
	installAgent(ctx, t, c, agentConfig(t, up.addr))

	// Prometheus, configured from the chart's rendered ServiceMonitor.
	sm, err := exec.CommandContext(ctx, helmBin(t), "template", agentRelease, filepath.Join(repoDir(), "deploy", "helm", "nodeagent"),
		"--namespace", agentNamespace, "--set", "serviceMonitor.enabled=true", "--show-only", "templates/servicemonitor.yaml").Output()
	if err != nil {
		t.Fatalf("helm template ServiceMonitor: %v %s", err, stderrOf(err))
	}
	prom := startPrometheus(ctx, t, c, promBin, sm)

	// Traffic for the DNS series: cache misses (upstream), hits, NXDOMAIN.
	for i, name := range []string{"www.e2e.test.", "www.e2e.test.", "nothing.example."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		if _, _, err := new(dns.Client).ExchangeContext(ctx, m, net.JoinHostPort(cluster.NodeLocalDNS, "53")); err != nil {
			t.Fatalf("query %d (%s) to the agent: %v", i, name, err)
		}
	}
	// The target is up and has the node label the rules use, and the
	// scrape after the DNS queries is in.
	mustPoll(ctx, t, "the agent scraped with its node label and DNS counters", 2*time.Minute, func() bool {
		return len(prom.query(ctx, t, `up{job="nodeagent-metrics", node="`+c.NodeName+`"} == 1`)) == 1 &&
			len(prom.query(ctx, t, `nodeagent_dnscache_cache_hits_total > 0`)) == 1
	})
	// Rates need two scrapes after the traffic.
	time.Sleep(3 * 2 * time.Second)

	t.Run("EveryQuerySelectsSeries", func(t *testing.T) {
		var empty []string
		checked := 0
		for _, q := range queries {
			if _, err := prom.run(ctx, q.Expr); err != nil {
				t.Errorf("%s: %s: %v", q.Source, q.Expr, err)
				continue
			}
			for _, s := range q.Selectors {
				checked++
				n := len(prom.query(ctx, t, s))
				why := emptyReason(s)
				switch {
				case n == 0 && why == "":
					t.Errorf("%s: selector %s selects no series from the real scrape (expr %s)", q.Source, s, q.Expr)
				case n == 0:
					empty = append(empty, fmt.Sprintf("%s (%s): %s", s, q.Source, why))
				case why != "":
					t.Logf("%s is listed as expected empty (%s) but selects %d series", s, why, n)
				}
			}
		}
		sort.Strings(empty)
		t.Logf("%d queries run, %d selectors checked; expected empty:\n  %s", len(queries), checked, strings.Join(empty, "\n  "))
	})

	t.Run("RulesLoadedAndHealthy", func(t *testing.T) {
		var want int
		for _, q := range queries {
			if strings.HasPrefix(q.Source, "alert ") {
				want++
			}
		}
		var got []string
		mustPoll(ctx, t, "every rule evaluated without error", time.Minute, func() bool {
			got = got[:0]
			var rules struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError string
					}
				}
			}
			prom.get(ctx, t, "/api/v1/rules", nil, &rules)
			ok := true
			for _, g := range rules.Groups {
				for _, r := range g.Rules {
					got = append(got, r.Name+" "+r.Health+" "+r.LastError)
					ok = ok && r.Health == "ok"
				}
			}
			return ok && len(got) == want
		})
		t.Logf("%d rules loaded, all healthy", len(got))
	})

	t.Run("ConfigRejectedFires", func(t *testing.T) {
		if a := prom.alert(ctx, t, "NodeagentConfigRejected"); a != nil {
			t.Fatalf("NodeagentConfigRejected is %s before any bad config", a.State)
		}
		start := time.Now()
		good := updateConfig(ctx, t, c, func(cfg string) string { return cfg + "\nnoSuchFeature:\n  enabled: true\n" })
		var firing *promAlert
		mustPoll(ctx, t, "NodeagentConfigRejected firing", 3*time.Minute, func() bool {
			firing = prom.alert(ctx, t, "NodeagentConfigRejected")
			return firing != nil && firing.State == "firing"
		})
		t.Logf("firing %s after the bad config was written: labels %v, summary %q", time.Since(start).Round(time.Second),
			firing.Labels, firing.Annotations["summary"])
		if firing.Labels["node"] != c.NodeName || firing.Labels["severity"] != "warning" {
			t.Errorf("alert labels %v, want node=%s severity=warning", firing.Labels, c.NodeName)
		}
		// It stays while the bad file stays: still firing a few evaluations later.
		time.Sleep(3 * 2 * time.Second)
		if a := prom.alert(ctx, t, "NodeagentConfigRejected"); a == nil || a.State != "firing" {
			t.Errorf("NodeagentConfigRejected stopped firing while the bad config is still on disk: %v", a)
		}
		updateConfig(ctx, t, c, func(string) string { return good })
		mustPoll(ctx, t, "NodeagentConfigRejected resolved after the good config came back", 3*time.Minute, func() bool {
			return prom.alert(ctx, t, "NodeagentConfigRejected") == nil
		})
	})
}

// agentConfig is the chart's default config with dnscache (on the test's
// upstream) and conntrack enabled, so that their series exist.
func agentConfig(t *testing.T, upstreamAddr string) string {
	t.Helper()
	cfg := replaceSection(string(deploy.DefaultConfig), "dnscache", dnsConfig(upstreamAddr, true))
	return replaceSection(cfg, "conntrack", "conntrack:\n  enabled: true\n")
}

// installAgent builds and pushes the agent image, applies the chart with
// config as its config file (the privileges follow what it enables), and
// waits for the rollout and the node to be ready.
func installAgent(ctx context.Context, t *testing.T, c *cluster.Cluster, config string) {
	t.Helper()
	img, err := image.Nodeagent(ctx, image.NodeagentOptions{RepoDir: repoDir(), CacheDir: cluster.CacheDir(), WorkDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatalf("build the nodeagent image: %v", err)
	}
	agentRepo = c.Registry + "/nodeagent"
	if _, err := image.Push(ctx, img, agentRepo+":e2e"); err != nil {
		t.Fatal(err)
	}
	applyConfig(ctx, t, c, config)
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := agentLog(c); err == nil {
				t.Logf("---- agent log ----\n%s", lastBytes(log, 8000))
			}
		}
	})
	waitRollout(ctx, t, c)
	mustPoll(ctx, t, "node ready", 4*time.Minute, func() bool { return strings.Contains(scrape(ctx, t), "nodeagent_node_ready 1") })
}

func mustPoll(ctx context.Context, t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

type prometheus struct{ base string }

// startPrometheus runs prometheus on loopback with a scrape job made from
// the rendered ServiceMonitor (as prometheus-operator generates it:
// endpoints discovery in its namespace, keep the Service by its selector
// labels and the endpoint by port name, the standard target labels, then
// the ServiceMonitor's own relabelings) and the chart's rules file.
func startPrometheus(ctx context.Context, t *testing.T, c *cluster.Cluster, bin string, serviceMonitor []byte) *prometheus {
	t.Helper()
	var sm struct {
		Metadata struct{ Name, Namespace string }
		Spec     struct {
			Selector          struct{ MatchLabels map[string]string }
			NamespaceSelector struct{ MatchNames []string }
			Endpoints         []struct {
				Port, Path, ScrapeTimeout string
				Relabelings               []map[string]any
			}
		}
	}
	if err := yaml.Unmarshal(serviceMonitor, &sm); err != nil || len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("rendered ServiceMonitor: %v (%d endpoints)\n%s", err, len(sm.Spec.Endpoints), serviceMonitor)
	}
	ep := sm.Spec.Endpoints[0]
	relabel := []map[string]any{}
	keys := make([]string, 0, len(sm.Spec.Selector.MatchLabels))
	for k := range sm.Spec.Selector.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		l := "__meta_kubernetes_service_label_" + sanitize(k)
		relabel = append(relabel, map[string]any{"action": "keep", "source_labels": []string{l}, "regex": sm.Spec.Selector.MatchLabels[k]})
	}
	relabel = append(relabel,
		map[string]any{"action": "keep", "source_labels": []string{"__meta_kubernetes_endpoint_port_name"}, "regex": ep.Port},
		map[string]any{"source_labels": []string{"__meta_kubernetes_namespace"}, "target_label": "namespace"},
		map[string]any{"source_labels": []string{"__meta_kubernetes_service_name"}, "target_label": "service"},
		map[string]any{"source_labels": []string{"__meta_kubernetes_pod_name"}, "target_label": "pod"},
		map[string]any{"source_labels": []string{"__meta_kubernetes_pod_container_name"}, "target_label": "container"},
		map[string]any{"source_labels": []string{"__meta_kubernetes_service_name"}, "target_label": "job"},
		map[string]any{"target_label": "endpoint", "replacement": ep.Port},
	)
	rename := map[string]string{"sourceLabels": "source_labels", "targetLabel": "target_label"}
	for _, r := range ep.Relabelings {
		out := map[string]any{}
		for k, v := range r {
			if nk, ok := rename[k]; ok {
				k = nk
			}
			out[k] = v
		}
		relabel = append(relabel, out)
	}
	dir := filepath.Join(c.Dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"global":     map[string]any{"scrape_interval": promInterval, "evaluation_interval": promInterval},
		"rule_files": []string{filepath.Join(repoDir(), "deploy", "helm", "nodeagent", "files", "alerts.yaml")},
		"scrape_configs": []any{map[string]any{
			"job_name":        "serviceMonitor/" + sm.Metadata.Namespace + "/" + sm.Metadata.Name + "/0",
			"metrics_path":    ep.Path,
			"scrape_interval": promInterval,
			"scrape_timeout":  promInterval,
			"kubernetes_sd_configs": []any{map[string]any{
				"role": "endpoints", "kubeconfig_file": c.Kubeconfig,
				"namespaces": map[string]any{"names": sm.Spec.NamespaceSelector.MatchNames},
			}},
			"relabel_configs": relabel,
		}},
	}
	cfgJSON, _ := json.MarshalIndent(cfg, "", "  ") // JSON is YAML
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, cfgJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("prometheus.yml from the chart's ServiceMonitor:\n%s", cfgJSON)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=info")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("---- prometheus log ----\n%s", lastBytes(string(b), 6000))
		}
	})
	p := &prometheus{base: "http://" + addr}
	mustPoll(ctx, t, "prometheus ready", time.Minute, func() bool {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// sanitize is Prometheus's label name sanitizing of Kubernetes label keys.
func sanitize(k string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, k)
}

// get calls the HTTP API and decodes its data field into v.
func (p *prometheus) get(ctx context.Context, t *testing.T, path string, params url.Values, v any) {
	t.Helper()
	if err := p.call(ctx, path, params, v); err != nil {
		t.Fatal(err)
	}
}

func (p *prometheus) call(ctx context.Context, path string, params url.Values, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path+"?"+params.Encode(), nil)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, v)
}

// run evaluates expr now; an error is Prometheus refusing or failing it.
func (p *prometheus) run(ctx context.Context, expr string) ([]json.RawMessage, error) {
	var data struct {
		ResultType string
		Result     json.RawMessage
	}
	if err := p.call(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	var vec []json.RawMessage
	if data.ResultType == "vector" {
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return nil, err
		}
	} else {
		vec = []json.RawMessage{data.Result}
	}
	return vec, nil
}

// query returns the series expr selects now.
func (p *prometheus) query(ctx context.Context, t *testing.T, expr string) []json.RawMessage {
	t.Helper()
	r, err := p.run(ctx, expr)
	if err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	return r
}

type promAlert struct {
	Labels, Annotations map[string]string
	State               string
}

// alert returns the alert named name (pending or firing), or nil.
func (p *prometheus) alert(ctx context.Context, t *testing.T, name string) *promAlert {
	t.Helper()
	var data struct{ Alerts []promAlert }
	p.get(ctx, t, "/api/v1/alerts", nil, &data)
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name {
			return &a
		}
	}
	return nil
}
