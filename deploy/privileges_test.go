package deploy

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// privileges is everything the chart grants the agent that reaches past its
// own container: host namespaces, capabilities, host paths and RBAC rules.
type privileges struct {
	HostNetwork, HostPID, Privileged bool
	Caps                             []string   // capabilities added (all others dropped unless Privileged)
	HostPaths                        []string   // "host path (type) -> mount path [ro] [propagation]"
	Rules                            []rbacRule // on top of agentRules
}

// agentHostPaths are mounted whatever features are enabled.
var agentHostPaths = []string{"/var/lib/nodeagent (DirectoryOrCreate) -> /host/var/lib/nodeagent"}

// imagewarmHostPaths are the agent's and imagewarm's with its defaults
// (containerd's socket, certs.d, the content store for blobWrite: direct),
// then more.
func imagewarmHostPaths(more ...string) []string {
	return append(append(slices.Clone(agentHostPaths),
		"/run/containerd/containerd.sock (Socket) -> /host/run/containerd/containerd.sock",
		"/etc/containerd/certs.d (DirectoryOrCreate) -> /host/etc/containerd/certs.d ro",
		"/var/lib/containerd/io.containerd.content.v1.content (DirectoryOrCreate) -> /host/var/lib/containerd/io.containerd.content.v1.content"),
		more...)
}

// agentOnly is what the agent gets with every feature off.
var agentOnly = privileges{HostNetwork: true, HostPaths: agentHostPaths}

// dnscacheAlone is dnscache with its default config.
var dnscacheAlone = privileges{
	HostNetwork: true,
	Caps:        []string{"NET_ADMIN", "NET_BIND_SERVICE"},
	HostPaths: append(slices.Clone(agentHostPaths),
		"/etc/resolv.conf (File) -> /host/etc/resolv.conf ro",
		"/run/systemd/resolve (DirectoryOrCreate) -> /host/run/systemd/resolve ro"),
	Rules: []rbacRule{{"", "services", "list,watch", "kube-dns-upstream"}},
}

// TestPrivilegesPerFeature renders the chart with each feature enabled alone
// and pins what the pod and its ServiceAccount get. A feature that needs more
// adds it to its blocks in templates/daemonset.yaml and clusterrole.yaml and
// to its row here (deploy/README.md, "Adding a feature's privileges").
func TestPrivilegesPerFeature(t *testing.T) {
	only := func(feature string) []string {
		return []string{"--set-string", "config=" + feature + ":\n  enabled: true\n"}
	}
	for _, tc := range []struct {
		name string
		args []string
		want privileges
	}{
		{"defaults: every feature off", nil, agentOnly},
		{"raid", only("raid"), privileges{
			HostNetwork: true, HostPID: true, Privileged: true, // devices, nsenter into PID 1's mount namespace
			HostPaths: append(slices.Clone(agentHostPaths),
				"/ (Directory) -> /host ro HostToContainer",
				"/dev (Directory) -> /host/dev HostToContainer"),
		}},
		{"raid mounting in the agent's namespace", []string{"--set-string", "config=raid:\n  enabled: true\n  mount:\n    namespace: agent\n"}, privileges{
			HostNetwork: true, HostPID: true, Privileged: true,
			HostPaths: append(slices.Clone(agentHostPaths),
				"/ (Directory) -> /host ro HostToContainer",
				"/dev (Directory) -> /host/dev HostToContainer",
				"/mnt/nodeagent (DirectoryOrCreate) -> /host/mnt/nodeagent Bidirectional"),
		}},
		{"dnscache", only("dnscache"), dnscacheAlone},
		{"imagewarm", only("imagewarm"), privileges{
			HostNetwork: true,
			HostPaths:   imagewarmHostPaths(),
		}},
		{"imagewarm streaming blobs over gRPC", []string{"--set-string", "config=imagewarm:\n  enabled: true\n  blobWrite: grpc\n"}, privileges{
			HostNetwork: true,
			HostPaths: append(slices.Clone(agentHostPaths),
				"/run/containerd/containerd.sock (Socket) -> /host/run/containerd/containerd.sock",
				"/etc/containerd/certs.d (DirectoryOrCreate) -> /host/etc/containerd/certs.d ro"),
		}},
		{"imagewarm with credential provider, Secret and two hosts dirs", []string{"--set-string", "config=imagewarm:\n  enabled: true\n" +
			"  registryConfigPath: /etc/containerd/certs.d:/etc/docker/certs.d\n  contentDir: /data/containerd/io.containerd.content.v1.content\n" +
			"  credentials:\n    providerConfig: /etc/eks/image-credential-provider/config.json\n" +
			"    providerBinDir: /etc/eks/image-credential-provider\n    secret: spark/registry-pull\n"}, privileges{
			HostNetwork: true,
			HostPaths: append(slices.Clone(agentHostPaths),
				"/run/containerd/containerd.sock (Socket) -> /host/run/containerd/containerd.sock",
				"/etc/containerd/certs.d (DirectoryOrCreate) -> /host/etc/containerd/certs.d ro",
				"/etc/docker/certs.d (DirectoryOrCreate) -> /host/etc/docker/certs.d ro",
				"/data/containerd/io.containerd.content.v1.content (DirectoryOrCreate) -> /host/data/containerd/io.containerd.content.v1.content",
				"/etc/eks/image-credential-provider/config.json (File) -> /host/etc/eks/image-credential-provider/config.json ro",
				"/etc/eks/image-credential-provider (Directory) -> /host/etc/eks/image-credential-provider ro"),
			Rules: []rbacRule{{"", "secrets", "get", "registry-pull"}},
		}},
		{"imagewarm with no S3 mount listed", []string{"--set-string", "config=imagewarm:\n  enabled: true\n  s3Mounts: []\n"}, privileges{
			HostNetwork: true,
			HostPaths:   imagewarmHostPaths(),
		}},
		{"imagewarm with S3 mounts", []string{"--set-string", "config=imagewarm:\n  enabled: true\n" +
			"  s3Mounts:\n  - name: libs\n    bucket: libs--use1-az4--x-s3\n    mountPath: /mnt/s3/libs\n" +
			"  s3:\n    allowedRoots:\n    - /mnt/s3\n    - /data/s3\n"}, privileges{
			HostNetwork: true, HostPID: true, Privileged: true, // /dev/fuse, mount(2) under AppArmor, nsenter into PID 1's mount namespace
			HostPaths: imagewarmHostPaths(
				"/proc (Directory) -> /host/proc ro",
				"/mnt/s3 (DirectoryOrCreate) -> /host/mnt/s3 ro HostToContainer",
				"/data/s3 (DirectoryOrCreate) -> /host/data/s3 ro HostToContainer",
				"/run/nodeagent/s3mounts (DirectoryOrCreate) -> /host/run/nodeagent/s3mounts",
				"/sys/fs/cgroup (Directory) -> /host/sys/fs/cgroup",
				"/run/systemd (DirectoryOrCreate) -> /host/run/systemd ro"), // supervisor auto: systemd's private socket
		}},
		{"imagewarm with S3 mounts, daemons left in the pod's cgroup", []string{"--set-string", "config=imagewarm:\n  enabled: true\n" +
			"  s3Mounts:\n  - name: libs\n    bucket: libs--use1-az4--x-s3\n    mountPath: /mnt/s3/libs\n" +
			"  s3:\n    cgroupRoot: \"\"\n    supervisor: cgroup\n"}, privileges{
			HostNetwork: true, HostPID: true, Privileged: true,
			HostPaths: imagewarmHostPaths(
				"/proc (Directory) -> /host/proc ro",
				"/mnt/s3 (DirectoryOrCreate) -> /host/mnt/s3 ro HostToContainer",
				"/run/nodeagent/s3mounts (DirectoryOrCreate) -> /host/run/nodeagent/s3mounts"),
		}},
		{"imagewarm with S3 mounts made in the agent's mount namespace", []string{"--set-string", "config=imagewarm:\n  enabled: true\n" +
			"  s3Mounts:\n  - name: libs\n    bucket: libs--use1-az4--x-s3\n    mountPath: /mnt/s3/libs\n" +
			"  s3:\n    namespace: agent\n"}, privileges{
			HostNetwork: true, HostPID: true, Privileged: true,
			HostPaths: imagewarmHostPaths(
				"/proc (Directory) -> /host/proc ro",
				"/mnt/s3 (DirectoryOrCreate) -> /host/mnt/s3 Bidirectional",
				"/run/nodeagent/s3mounts (DirectoryOrCreate) -> /host/run/nodeagent/s3mounts",
				"/sys/fs/cgroup (Directory) -> /host/sys/fs/cgroup"),
		}},
		{"interrupt", only("interrupt"), privileges{
			HostNetwork: true, // IMDS hop limit 1
			HostPaths: append(slices.Clone(agentHostPaths),
				"/run/containerd/containerd.sock (Socket) -> /host/run/containerd/containerd.sock"),
			Rules: []rbacRule{{"", "pods", "get,list", ""}, {"policy", "poddisruptionbudgets", "create,delete", ""}},
		}},
		{"interrupt evicting, unguarded", []string{"--set-string", "config=interrupt:\n  enabled: true\n" +
			"  decommission:\n    strategy: evict\n    guardEviction: false\n"}, privileges{
			HostNetwork: true,
			HostPaths:   agentHostPaths,
			Rules:       []rbacRule{{"", "pods", "get,list", ""}, {"", "pods/eviction", "create", ""}},
		}},
		{"interrupt signalling, evicting at the deadline", []string{"--set-string", "config=interrupt:\n  enabled: true\n" +
			"  decommission:\n    fallback: evict\n  containerd:\n    socket: /run/k3s/containerd/containerd.sock\n"}, privileges{
			HostNetwork: true,
			HostPaths: append(slices.Clone(agentHostPaths),
				"/run/k3s/containerd/containerd.sock (Socket) -> /host/run/k3s/containerd/containerd.sock"),
			Rules: []rbacRule{{"", "pods", "get,list", ""}, {"", "pods/eviction", "create", ""}, {"policy", "poddisruptionbudgets", "create,delete", ""}},
		}},
		{"conntrack", only("conntrack"), privileges{HostNetwork: true, Caps: []string{"NET_ADMIN"}, HostPaths: agentHostPaths}},
		{"conntrack from /proc only, no DNS flows", []string{"--set-string", "config=conntrack:\n  enabled: true\n" +
			"  source: procfs\n  dnsFlows:\n    enabled: false\n"}, privileges{HostNetwork: true, HostPaths: agentHostPaths}},
		{"conntrack from /proc, DNS flows on", []string{"--set-string", "config=conntrack:\n  enabled: true\n  source: procfs\n"},
			privileges{HostNetwork: true, Caps: []string{"NET_ADMIN"}, HostPaths: agentHostPaths}},
		{"dnscache iptables mode, own resolvers and cluster DNS addresses", []string{"--set-string", "config=" +
			"dnscache:\n  enabled: true\n  firewall:\n    mode: iptables\n  clusterDNS:\n    addresses: [10.0.0.10]\n" +
			"  node:\n    addresses: [10.0.0.2]\n"}, privileges{
			HostNetwork: true,
			Caps:        []string{"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"}, // iptables-legacy opens a raw socket
			HostPaths:   append(slices.Clone(agentHostPaths), "/run/xtables.lock (FileOrCreate) -> /run/xtables.lock"),
		}},
		{"dnscache another Service and resolv.conf", []string{"--set-string", "config=" +
			"dnscache:\n  enabled: true\n  clusterDNS:\n    service: dns/coredns\n  node:\n    resolvConf: /run/resolv.conf\n"}, privileges{
			HostNetwork: true,
			Caps:        []string{"NET_ADMIN", "NET_BIND_SERVICE"},
			HostPaths: append(slices.Clone(agentHostPaths),
				"/run/resolv.conf (File) -> /host/run/resolv.conf ro",
				"/run/systemd/resolve (DirectoryOrCreate) -> /host/run/systemd/resolve ro"),
			Rules: []rbacRule{{"", "services", "list,watch", "coredns"}},
		}},
		{"dnscache disabled but kept for its teardown", []string{"--set", "keepPrivileges={dnscache}"}, dnscacheAlone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runHelm(t, append([]string{"template", releaseName, chartDir, "--namespace", releaseNS}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			got := renderedPrivileges(t, out)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("privileges changed.\n got: %+v\nwant: %+v\nIf a feature needs more, add it in its block of the templates, say why there, and update its row here.", got, tc.want)
			}
		})
	}
}

func TestPrivilegesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set-string", "config=dnscache:\n  enabled: \"true\"\n"}, `config: dnscache.enabled must be true or false, not "true"`},
		{[]string{"--set-string", "config=- a list\n"}, "config: not a YAML mapping of feature sections"},
		{[]string{"--set-string", "config=dnscache: [1]\n"}, "config: section dnscache must be a mapping"},
		{[]string{"--set", "keepPrivileges={dns}"}, "keepPrivileges"}, // the schema, and the template behind it
	} {
		_, err := runHelm(t, append([]string{"template", releaseName, chartDir}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("helm template %v: err = %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func renderedPrivileges(t *testing.T, manifests []byte) privileges {
	t.Helper()
	objs := objectsByKind(t, manifests)
	ds := objs["DaemonSet"]
	pod, _ := dig(ds, "spec", "template", "spec").(map[string]any)
	c := container(t, ds)
	var p privileges
	p.HostNetwork, _ = pod["hostNetwork"].(bool)
	p.HostPID, _ = pod["hostPID"].(bool)
	if _, ok := pod["hostIPC"]; ok {
		t.Errorf("hostIPC is set: no feature needs it")
	}
	sc, _ := c["securityContext"].(map[string]any)
	p.Privileged, _ = sc["privileged"].(bool)
	add, _ := dig(sc, "capabilities", "add").([]any)
	if !p.Privileged {
		// Kubernetes refuses allowPrivilegeEscalation: false with SYS_ADMIN.
		if sysAdmin := slices.Contains(add, any("SYS_ADMIN")); (sc["allowPrivilegeEscalation"] == false) == sysAdmin {
			t.Errorf("allowPrivilegeEscalation = %v, want false in an unprivileged container unless it adds SYS_ADMIN", sc["allowPrivilegeEscalation"])
		}
		if drop := dig(sc, "capabilities", "drop"); !reflect.DeepEqual(drop, []any{"ALL"}) {
			t.Errorf("capabilities.drop = %v, want [ALL]", drop)
		}
	}
	for _, a := range add {
		p.Caps = append(p.Caps, a.(string))
	}

	hostPaths := map[string]string{}
	vols, _ := pod["volumes"].([]any)
	for _, v := range vols {
		v := v.(map[string]any)
		if v["hostPath"] != nil {
			hostPaths[v["name"].(string)] = fmt.Sprintf("%v (%v)", dig(v, "hostPath", "path"), dig(v, "hostPath", "type"))
		}
	}
	mounts, _ := c["volumeMounts"].([]any)
	mounted := map[string]bool{}
	for _, m := range mounts {
		m := m.(map[string]any)
		name := m["name"].(string)
		src, ok := hostPaths[name]
		if !ok {
			continue
		}
		mounted[name] = true
		s := src + " -> " + m["mountPath"].(string)
		if ro, _ := m["readOnly"].(bool); ro {
			s += " ro"
		}
		if prop, _ := m["mountPropagation"].(string); prop != "" {
			s += " " + prop
		}
		p.HostPaths = append(p.HostPaths, s)
	}
	for name := range hostPaths {
		if !mounted[name] {
			t.Errorf("hostPath volume %s is not mounted", name)
		}
	}

	agent := 0
	for _, r := range dig(objs["ClusterRole"], "rules").([]any) {
		for _, fr := range flattenRule(r.(map[string]any)) {
			if agent < len(agentRules) && fr == agentRules[agent] {
				agent++
				continue
			}
			p.Rules = append(p.Rules, fr)
		}
	}
	if agent != len(agentRules) {
		t.Errorf("the ClusterRole lacks some of the agent's own rules %v", agentRules)
	}
	return p
}

// TestOwnNodePolicy: the manifests ship the ValidatingAdmissionPolicy that
// keeps the agent's ServiceAccount to its own Node, bound with Deny. What it
// refuses is proven against a real API server in e2e (OwnNodeOnly).
func TestOwnNodePolicy(t *testing.T) {
	var policy, binding map[string]any
	for _, o := range committedObjects(t) {
		switch o["kind"] {
		case "ValidatingAdmissionPolicy":
			policy = o
		case "ValidatingAdmissionPolicyBinding":
			binding = o
		}
	}
	if policy == nil || binding == nil {
		t.Fatalf("manifests lack the ValidatingAdmissionPolicy or its binding")
	}
	name := dig(policy, "metadata", "name")
	for _, tc := range []struct {
		what      string
		got, want any
	}{
		{"apiVersion (GA)", policy["apiVersion"], "admissionregistration.k8s.io/v1"},
		{"failurePolicy", dig(policy, "spec", "failurePolicy"), "Fail"},
		{"matches the agent's ServiceAccount only", dig(policy, "spec", "matchConditions"), []any{map[string]any{
			"name": "nodeagent-service-account", "expression": `request.userInfo.username == "system:serviceaccount:kube-system:nodeagent"`}}},
		{"binding names the policy", dig(binding, "spec", "policyName"), name},
		{"binding denies", dig(binding, "spec", "validationActions"), []any{"Deny"}},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	var resources []string
	for _, r := range dig(policy, "spec", "matchConstraints", "resourceRules").([]any) {
		for _, res := range r.(map[string]any)["resources"].([]any) {
			resources = append(resources, res.(string))
		}
	}
	if want := []string{"nodes", "nodes/status", "events"}; !slices.Equal(resources, want) {
		t.Errorf("policy covers %v, want %v", resources, want)
	}
	vars := fmt.Sprint(dig(policy, "spec", "variables"))
	if !strings.Contains(vars, `request.userInfo.extra["authentication.kubernetes.io/node-name"]`) {
		t.Errorf("policy does not read the token's node name: %s", vars)
	}

	out, err := runHelm(t, "template", releaseName, chartDir, "--set", "ownNodePolicy.create=false")
	if err != nil {
		t.Fatal(err)
	}
	if objs := objectsByKind(t, out); objs["ValidatingAdmissionPolicy"] != nil || objs["ValidatingAdmissionPolicyBinding"] != nil {
		t.Errorf("ownNodePolicy.create=false still renders the policy")
	}
}
