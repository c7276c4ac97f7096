//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

// kubeDNSIP is the kube-dns Service's ClusterIP (kubelet's clusterDNS on EKS).
const kubeDNSIP = "198.18.96.10"

// corednsReadyPort is CoreDNS's ready plugin, on the node address.
const corednsReadyPort = 18181

// corednsManifests is CoreDNS as EKS runs it: a Deployment selected by
// k8s-app=kube-dns behind the kube-dns Service, with the kubernetes plugin
// (its RBAC as in the upstream manifests) and everything else forwarded. Two
// differences: it runs on the host network (this harness's pod network cannot
// reach the API server, which listens on loopback), bound to the node address
// only; and forward goes to the test's upstream on loopback instead of the
// VPC resolver. The chart creates kube-dns-upstream next to it.
const corednsManifests = `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
  - kind: ServiceAccount
    name: coredns
    namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        bind NODE_IP
        errors
        ready NODE_IP:READY_PORT
EXTRA_PLUGINS        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        forward . UPSTREAM
        cache 30
    }
EXTRA_BLOCKS---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      hostNetwork: true
      dnsPolicy: Default
      tolerations:
        - operator: Exists
      containers:
        - name: coredns
          image: IMAGE
          args: [-conf, /etc/coredns/Corefile]
          readinessProbe:
            httpGet:
              path: /ready
              port: READY_PORT
            periodSeconds: 1
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
              add: [NET_BIND_SERVICE]
          volumeMounts:
            - name: config
              mountPath: /etc/coredns
              readOnly: true
      volumes:
        - name: config
          configMap:
            name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  selector:
    k8s-app: kube-dns
  clusterIP: KUBE_DNS_IP
  ports:
    - name: dns
      port: 53
      protocol: UDP
    - name: dns-tcp
      port: 53
      protocol: TCP
`

// startCoreDNS runs CoreDNS (the binary e2e/hack/prereqs.sh installs, the
// version dnscache benchmarks against) as the cluster DNS, forwarding what
// is not cluster.local to upstream, and routes the kube-dns and
// kube-dns-upstream ClusterIPs to it.
func startCoreDNS(ctx context.Context, t *testing.T, c *cluster.Cluster, upstream string) {
	t.Helper()
	startCoreDNSWith(ctx, t, c, upstream, "", "")
}

// startCoreDNSWith is startCoreDNS with more lines in the Corefile: plugins
// (indented 8 spaces) before kubernetes in the main server block, and more
// server blocks (indented 4) after it. NODE_IP and UPSTREAM are replaced in
// them too.
func startCoreDNSWith(ctx context.Context, t *testing.T, c *cluster.Cluster, upstream, plugins, blocks string) {
	t.Helper()
	start := time.Now()
	bin := filepath.Join(cluster.CacheDir(), "bin", "coredns")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("coredns not found (%v): run e2e/hack/prereqs.sh", err)
	}
	// The go-installed CoreDNS is linked against libc: run it on the agent
	// image's Debian layer (cached, and already in the registry).
	rootfs, err := image.DebianLayer(ctx, image.AgentPackages(), cluster.CacheDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	l, err := image.Layer([]image.File{{Path: "/usr/local/bin/coredns", Mode: 0o755, Source: bin}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := image.FromLayers(image.Config{Entrypoint: []string{"/usr/local/bin/coredns"}}, rootfs, l)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := image.Push(ctx, img, c.Registry+"/e2e/coredns:1")
	if err != nil {
		t.Fatal(err)
	}
	manifests := strings.NewReplacer("EXTRA_PLUGINS", plugins, "EXTRA_BLOCKS", blocks).Replace(corednsManifests)
	m := strings.NewReplacer("NODE_IP", c.NodeIP, "READY_PORT", fmt.Sprint(corednsReadyPort), "UPSTREAM", upstream,
		"IMAGE", ref, "KUBE_DNS_IP", kubeDNSIP).Replace(manifests)
	if _, err := c.Kubectl(ctx, m, "apply", "--server-side", "--field-manager=e2e", "-f", "-"); err != nil {
		t.Fatalf("apply CoreDNS: %v", err)
	}
	var d *appsv1.Deployment
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err = c.Client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		return err == nil && d.Status.ObservedGeneration >= d.Generation && d.Status.ReadyReplicas == 1, nil
	})
	if err != nil {
		pods, _ := c.Kubectl(ctx, "", "-n", "kube-system", "get", "pods", "-o", "wide")
		t.Fatalf("CoreDNS not ready: %v\n%s", err, pods)
	}
	for _, svc := range []string{"kube-dns", "kube-dns-upstream"} {
		err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
			return c.RouteService(ctx, "kube-system", svc) == nil, nil
		})
		if err != nil {
			t.Fatalf("route Service kube-system/%s: %v", svc, c.RouteService(ctx, "kube-system", svc))
		}
	}
	t.Logf("PHASE coredns: %s (%s, cluster DNS at %s)", time.Since(start).Round(time.Millisecond), ref, kubeDNSIP)
}
