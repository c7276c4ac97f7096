package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	chartDir      = "helm/nodeagent"
	manifestsFile = "manifests/nodeagent.yaml"
	helmScript    = "hack/helm.sh"
	releaseName   = "nodeagent"
	releaseNS     = "kube-system"
)

// pinnedHelmVersion reads HELM_VERSION from hack/helm.sh, the one place the
// version is pinned.
func pinnedHelmVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(helmScript)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^HELM_VERSION=(v\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no HELM_VERSION=v... line", helmScript)
	}
	return string(m[1])
}

// helmBinary finds helm: $HELM, then the cache hack/helm.sh installs into, then
// PATH. It skips the test, saying how to get helm, when there is none.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	cache := os.Getenv("NODEAGENT_CACHE")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache", "nodeagent")
		}
	}
	if cache != "" {
		h := filepath.Join(cache, "bin", "helm")
		if fi, err := os.Stat(h); err == nil && !fi.IsDir() {
			return h
		}
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	t.Skipf("helm not found ($HELM, $NODEAGENT_CACHE/bin, PATH): export HELM=$(deploy/hack/helm.sh) installs helm %s", pinnedHelmVersion(t))
	return ""
}

func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// stripHeader drops the comment lines render.sh writes before helm's output.
func stripHeader(b []byte) []byte {
	for len(b) > 0 && b[0] == '#' {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return nil
		}
		b = b[i+1:]
	}
	return b
}

func TestManifestsMatchChart(t *testing.T) {
	want, err := runHelm(t, "template", releaseName, chartDir, "--namespace", releaseNS)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(manifestsFile)
	if err != nil {
		t.Fatal(err)
	}
	got := stripHeader(committed)
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	i := 0
	for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
		i++
	}
	line := func(l []string) string {
		if i < len(l) {
			return fmt.Sprintf("%q", l[i])
		}
		return "(end of file)"
	}
	t.Errorf("deploy/%s is out of date with the chart; run deploy/hack/render.sh (helm %s) and commit the result.\n"+
		"first difference at line %d after the header:\n  committed: %s\n  chart:     %s",
		manifestsFile, pinnedHelmVersion(t), i+1, line(gl), line(wl))
}

// allOptional turns on everything the default render leaves off.
var allOptional = []string{
	"--set", "serviceMonitor.enabled=true",
	"--set", "podMonitor.enabled=true",
	"--set", "prometheusRule.enabled=true",
	"--set", "prometheusRule.additionalAlertLabels.team=platform",
	"--set", "dashboard.enabled=true",
	"--set", "podAnnotations.example\\.com/a=b",
	"--set", "imagePullSecrets[0].name=regcred",
	"--set", "extraArgs[0]=--log-level=debug",
	"--set", "tolerateAllTaints=false",
	"--set", "tolerations[0].key=nodeagent.io/not-ready",
	"--set", "tolerations[0].operator=Exists",
}

func TestHelmLint(t *testing.T) {
	for name, args := range map[string][]string{
		"defaults":     nil,
		"all optional": allOptional,
	} {
		t.Run(name, func(t *testing.T) {
			out, err := runHelm(t, append([]string{"lint", "--strict", chartDir}, args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestChartValues renders non-default values and checks what a user of each
// knob would look for.
func TestChartValues(t *testing.T) {
	render := func(t *testing.T, args ...string) map[string]map[string]any {
		t.Helper()
		out, err := runHelm(t, append([]string{"template", "x", chartDir, "--namespace", "ops"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return objectsByKind(t, out)
	}

	t.Run("optional monitoring objects", func(t *testing.T) {
		objs := render(t, allOptional...)
		for _, kind := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule"} {
			o, ok := objs[kind]
			if !ok {
				t.Errorf("no %s rendered", kind)
				continue
			}
			if ns := dig(o, "metadata", "namespace"); ns != "ops" {
				t.Errorf("%s namespace = %v, want the release namespace", kind, ns)
			}
		}
		var rules []string
		for _, g := range dig(objs["PrometheusRule"], "spec", "groups").([]any) {
			for _, r := range g.(map[string]any)["rules"].([]any) {
				rules = append(rules, r.(map[string]any)["alert"].(string))
			}
		}
		wantRules := alertNames(t)
		if !slices.Equal(rules, wantRules) {
			t.Errorf("alerts = %v, want %v", rules, wantRules)
		}
		tol := dig(objs["DaemonSet"], "spec", "template", "spec", "tolerations")
		wantTol := []any{map[string]any{"key": "nodeagent.io/not-ready", "operator": "Exists"}}
		if !reflect.DeepEqual(tol, wantTol) {
			t.Errorf("tolerations with tolerateAllTaints=false = %v, want only %v", tol, wantTol)
		}
	})

	t.Run("no surge declares the metrics port", func(t *testing.T) {
		objs := render(t, "--set", "updateStrategy.maxSurge=0", "--set", "updateStrategy.maxUnavailable=1")
		c := container(t, objs["DaemonSet"])
		want := []any{map[string]any{"name": "metrics", "containerPort": 9910, "protocol": "TCP"}}
		if !reflect.DeepEqual(c["ports"], want) {
			t.Errorf("ports = %v, want %v", c["ports"], want)
		}
	})

	t.Run("surge and unavailable both 0 is refused", func(t *testing.T) {
		_, err := runHelm(t, "template", "x", chartDir,
			"--set", "updateStrategy.maxSurge=0", "--set", "updateStrategy.maxUnavailable=0")
		if err == nil || !strings.Contains(err.Error(), "cannot both be 0") {
			t.Errorf("err = %v, want one saying maxSurge and maxUnavailable cannot both be 0", err)
		}
	})

	t.Run("config value replaces the default file", func(t *testing.T) {
		objs := render(t, "--set-string", "config=dnscache:\n  enabled: true\n")
		if got := dig(objs["ConfigMap"], "data", "config.yaml"); got != "dnscache:\n  enabled: true\n" {
			t.Errorf("config.yaml = %q", got)
		}
	})

	t.Run("image digest wins over tag", func(t *testing.T) {
		digest := "sha256:" + strings.Repeat("ab", 32)
		objs := render(t, "--set", "image.tag=v9", "--set", "image.digest="+digest)
		if got := container(t, objs["DaemonSet"])["image"]; got != "ghcr.io/nodeagent/nodeagent@"+digest {
			t.Errorf("image = %v", got)
		}
	})

	t.Run("optional services off", func(t *testing.T) {
		objs := render(t, "--set", "kubeDnsUpstream.create=false", "--set", "metricsService.create=false",
			"--set", "rbac.create=false", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=na")
		for _, kind := range []string{"Service", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"} {
			if _, ok := objs[kind]; ok {
				t.Errorf("%s rendered although turned off", kind)
			}
		}
		if got := dig(objs["DaemonSet"], "spec", "template", "spec", "serviceAccountName"); got != "na" {
			t.Errorf("serviceAccountName = %v, want na", got)
		}
	})
}

// committedObjects parses the committed manifests; the tests below need no helm.
func committedObjects(t *testing.T) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(manifestsFile)
	if err != nil {
		t.Fatal(err)
	}
	return parseDocs(t, b)
}

func parseDocs(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var objs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("parse manifests: %v", err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
}

// objectsByKind indexes objects by kind; the first of a kind wins.
func objectsByKind(t *testing.T, b []byte) map[string]map[string]any {
	t.Helper()
	m := map[string]map[string]any{}
	for _, o := range parseDocs(t, b) {
		k, _ := o["kind"].(string)
		if _, seen := m[k]; !seen {
			m[k] = o
		}
	}
	return m
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func container(t *testing.T, ds map[string]any) map[string]any {
	t.Helper()
	cs, _ := dig(ds, "spec", "template", "spec", "containers").([]any)
	if len(cs) != 1 {
		t.Fatalf("DaemonSet has %d containers, want 1", len(cs))
	}
	return cs[0].(map[string]any)
}

type rbacRule struct {
	APIGroup, Resource, Verbs string
	Names                     string // resourceNames, comma-separated; "" = any
}

// TestClusterRoleRules pins the agent's permissions. Widening them must show
// up here as a diff, with the feature that needs it named in clusterrole.yaml.
func TestClusterRoleRules(t *testing.T) {
	var got []rbacRule
	n := 0
	for _, o := range committedObjects(t) {
		if o["kind"] != "ClusterRole" {
			continue
		}
		n++
		rules, _ := o["rules"].([]any)
		for _, r := range rules {
			r := r.(map[string]any)
			if _, ok := r["nonResourceURLs"]; ok {
				t.Errorf("rule with nonResourceURLs: %v", r)
			}
			got = append(got, flattenRule(r)...)
		}
	}
	if n != 1 {
		t.Fatalf("%d ClusterRoles in %s, want 1", n, manifestsFile)
	}
	if !slices.Equal(got, agentRules) {
		t.Errorf("ClusterRole rules changed.\n got: %v\nwant: %v\nIf the widening is needed, update this test and name the feature in templates/clusterrole.yaml.", got, agentRules)
	}
}

// agentRules are the agent's own rules, whatever features are enabled.
var agentRules = []rbacRule{
	{"", "nodes", "get,list,patch,watch", ""}, // NodeWatch; readiness gate (taint, label)
	{"", "nodes/status", "patch", ""},         // node condition
	{"events.k8s.io", "events", "create", ""}, // Events on the Node
}

// flattenRule turns a PolicyRule into one rbacRule per group and resource.
func flattenRule(r map[string]any) []rbacRule {
	strs := func(k string) []string {
		var out []string
		l, _ := r[k].([]any)
		for _, v := range l {
			out = append(out, v.(string))
		}
		slices.Sort(out)
		return out
	}
	verbs, names := strings.Join(strs("verbs"), ","), strings.Join(strs("resourceNames"), ",")
	var out []rbacRule
	for _, g := range strs("apiGroups") {
		for _, res := range strs("resources") {
			out = append(out, rbacRule{g, res, verbs, names})
		}
	}
	return out
}

// TestDaemonSetInvariants checks the properties the agent relies on in the
// committed manifests, each of which a harmless-looking edit could break.
func TestDaemonSetInvariants(t *testing.T) {
	var ds map[string]any
	for _, o := range committedObjects(t) {
		if o["kind"] == "DaemonSet" {
			ds = o
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	pod := dig(ds, "spec", "template", "spec").(map[string]any)
	c := container(t, ds)

	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"hostNetwork (the metrics port on the node)", pod["hostNetwork"], true},
		{"dnsPolicy Default (never the cluster DNS it may serve)", pod["dnsPolicy"], "Default"},
		{"priorityClassName", pod["priorityClassName"], "system-node-critical"},
		{"terminationGracePeriodSeconds above agent.shutdownTimeout", pod["terminationGracePeriodSeconds"], 30},
		{"tolerates every taint, the startup taint included", pod["tolerations"], []any{map[string]any{"operator": "Exists"}}},
		{"surge rollout", dig(ds, "spec", "updateStrategy"), map[string]any{"type": "RollingUpdate",
			"rollingUpdate": map[string]any{"maxSurge": 1, "maxUnavailable": 0}}},
		{"no ports: with hostNetwork each becomes a hostPort and blocks the surge pod", c["ports"], nil},
		{"read-only root filesystem", dig(c, "securityContext", "readOnlyRootFilesystem"), true},
		{"no pod annotations: a config checksum would defeat hot reload", dig(ds, "spec", "template", "metadata", "annotations"), nil},
		{"liveness asks its own agent", dig(c, "livenessProbe", "exec", "command"), []any{"/usr/local/bin/nodeagent", "probe", "healthz", "--socket=/run/nodeagent/probe.sock"}},
		{"readiness asks its own agent", dig(c, "readinessProbe", "exec", "command"), []any{"/usr/local/bin/nodeagent", "probe", "readyz", "--socket=/run/nodeagent/probe.sock"}},
		{"NODE_NAME from the downward API", envSource(c, "NODE_NAME"), map[string]any{"fieldRef": map[string]any{"fieldPath": "spec.nodeName"}}},
		{"GOMEMLIMIT from the memory limit", envSource(c, "GOMEMLIMIT"), map[string]any{"resourceFieldRef": map[string]any{"resource": "limits.memory"}}},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	args := fmt.Sprint(c["args"])
	for _, a := range []string{"--config=/etc/nodeagent/config.yaml", "--host-root=/host", "--metrics-addr=:9910", "--probe-socket=/run/nodeagent/probe.sock"} {
		if !strings.Contains(args, a) {
			t.Errorf("args %s lack %s", args, a)
		}
	}

	// Every volume, where it is mounted, how, and from where.
	type mount struct {
		Source, Path, Propagation string
		ReadOnly                  bool
	}
	sources := map[string]string{}
	for _, v := range pod["volumes"].([]any) {
		v := v.(map[string]any)
		switch {
		case v["hostPath"] != nil:
			sources[v["name"].(string)] = fmt.Sprintf("hostPath:%v:%v", dig(v, "hostPath", "path"), dig(v, "hostPath", "type"))
		case v["configMap"] != nil:
			sources[v["name"].(string)] = fmt.Sprintf("configMap:%v", dig(v, "configMap", "name"))
		case v["emptyDir"] != nil:
			sources[v["name"].(string)] = "emptyDir"
		default:
			t.Errorf("volume of unexpected type: %v", v)
		}
	}
	var got []mount
	for _, m := range c["volumeMounts"].([]any) {
		m := m.(map[string]any)
		if _, ok := m["subPath"]; ok {
			t.Errorf("volumeMount %v uses subPath, which gets no ConfigMap updates", m["name"])
		}
		prop, _ := m["mountPropagation"].(string)
		ro, _ := m["readOnly"].(bool)
		got = append(got, mount{sources[m["name"].(string)], m["mountPath"].(string), prop, ro})
	}
	want := []mount{
		{"configMap:nodeagent", "/etc/nodeagent", "", true},                                     // agent config, a directory for hot reload
		{"hostPath:/var/lib/nodeagent:DirectoryOrCreate", "/host/var/lib/nodeagent", "", false}, // agent state
		{"emptyDir", "/run", "", false},
		{"emptyDir", "/tmp", "", false},
	}
	if !slices.Equal(got, want) {
		t.Errorf("volume mounts changed.\n got: %+v\nwant: %+v", got, want)
	}
}

func envSource(c map[string]any, name string) any {
	env, _ := c["env"].([]any)
	for _, e := range env {
		if e := e.(map[string]any); e["name"] == name {
			return e["valueFrom"]
		}
	}
	return nil
}

// TestConfigMapShipsDefaultConfig: the ConfigMap carries the chart's default
// config file byte for byte, the same file the binary embeds.
func TestConfigMapShipsDefaultConfig(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(chartDir, "files", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range committedObjects(t) {
		if o["kind"] == "ConfigMap" {
			if got := dig(o, "data", "config.yaml"); got != string(want) {
				t.Errorf("ConfigMap config.yaml differs from %s/files/config.yaml; run deploy/hack/render.sh", chartDir)
			}
			return
		}
	}
	t.Fatal("no ConfigMap in the manifests")
}

func TestImagePackages(t *testing.T) {
	pkgs := ImagePackages()
	name := regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`) // Debian policy 5.6.1
	seen := map[string]bool{}
	for _, p := range pkgs {
		if !name.MatchString(p) {
			t.Errorf("image-packages.txt: %q is not a Debian package name", p)
		}
		if seen[p] {
			t.Errorf("image-packages.txt: %q listed twice", p)
		}
		seen[p] = true
	}
	for _, p := range []string{"mdadm", "xfsprogs", "e2fsprogs", "util-linux", "mount", "nftables", "iptables",
		"conntrack", "fuse3", "ca-certificates"} {
		if !seen[p] {
			t.Errorf("image-packages.txt lacks %s, which a feature execs", p)
		}
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(df, []byte("COPY deploy/image-packages.txt")) {
		t.Error("Dockerfile does not install from deploy/image-packages.txt")
	}
	for _, p := range pkgs {
		if regexp.MustCompile(`install[^\n]*\b` + regexp.QuoteMeta(p) + `\b`).Match(df) {
			t.Errorf("Dockerfile names %s itself; keep the list in image-packages.txt only", p)
		}
	}
}
