// Package cluster starts and stops a real single-node Kubernetes cluster for
// end-to-end tests: etcd, a docker registry, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd and a kubelet, all on
// loopback or in a temporary directory, with certificates, tokens and
// kubeconfigs generated per run. Start registers a complete teardown with
// t.Cleanup, and refuses to start when an earlier run left state behind.
//
// It needs root, the Debian packages that e2e/hack/prereqs.sh installs and
// the Kubernetes binaries that e2e/hack/build-k8s.sh builds.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodeagent/nodeagent/e2e/image"
)

// K8sVersion is the Kubernetes version built by e2e/hack/build-k8s.sh.
const K8sVersion = "v1.35.4"

// Addresses of this harness. They are documentation/benchmark ranges or a
// private /24 used only on the run's own bridge, so no traffic can reach
// another machine: the node address lives on a dummy interface, the service
// range is a blackhole except for the kubernetes service IP, which is local
// and DNATed to the API server on loopback.
const (
	DefaultNodeIP      = "198.18.77.1"
	DefaultServiceCIDR = "198.18.96.0/24"
	DefaultPodCIDR     = "10.244.77.0/24"
	kubernetesSvcIP    = "198.18.96.1"
	DefaultNodeName    = "nodeagent-e2e"
	// StartupTaint is the taint the Node registers with; the agent removes it.
	StartupTaint = "nodeagent.io/not-ready:NoSchedule"
	// NodeLocalDNS is the agent's DNS cache address (dnscache default);
	// pods get a route to it through the node.
	NodeLocalDNS = "169.254.20.10"
	// AgentMetricsPort is where the agent serves /metrics, /healthz, /readyz.
	AgentMetricsPort = 9910
)

// Options configure Start. The zero value is usable.
type Options struct {
	// BinDir holds kube-apiserver, kube-controller-manager, kube-scheduler,
	// kubelet and kubectl. Default: $NODEAGENT_CACHE/k8s/<version>/bin.
	BinDir string
	// NodeName defaults to DefaultNodeName.
	NodeName string
	// RegisterWithTaints defaults to StartupTaint; "-" registers none.
	RegisterWithTaints string
}

// Cluster is a running single-node cluster.
type Cluster struct {
	Dir              string // per-run temporary directory
	BinDir           string
	NodeName         string
	NodeIP           string
	PodCIDR          string
	Kubeconfig       string // admin (system:masters) kubeconfig
	Config           *rest.Config
	Client           kubernetes.Interface
	Registry         string // host:port of the plain-HTTP registry
	PauseImage       string
	ContainerdSocket string
	PodLogsDir       string
	APIServerURL     string
	// AuditLog is the API server's audit log: every ServiceAccount's
	// requests at Metadata level (AuditRequests reads it).
	AuditLog string

	t                  testing.TB
	pki                *pki
	procs              []*proc
	host               hostState
	ports              []int
	cniConfDir         string
	apiPort, etcdPort  int
	kubeletPort        int
	kubeletHealthzPort int
	hostNetUp          bool
	phaseStart         time.Time
}

// CacheDir is $NODEAGENT_CACHE or $HOME/.cache/nodeagent.
func CacheDir() string {
	if d := os.Getenv("NODEAGENT_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "nodeagent")
}

// DefaultBinDir is where build-k8s.sh puts the Kubernetes binaries.
func DefaultBinDir() string { return filepath.Join(CacheDir(), "k8s", K8sVersion, "bin") }

// RequireRoot skips the test, naming the reason, unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts containerd, a kubelet and changes host networking")
	}
}

// Start brings the cluster up and waits until the Node is Ready. Failures
// are fatal to t; teardown always runs at t's cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if stale := staleState(ctx); len(stale) > 0 {
		t.Fatalf("stale state from an earlier run on this host; remove it first (as root, in e2e/: go run ./cmd/e2e-clean):\n  %s",
			strings.Join(stale, "\n  "))
	}
	c := &Cluster{
		t:          t,
		BinDir:     opts.BinDir,
		NodeName:   opts.NodeName,
		NodeIP:     DefaultNodeIP,
		PodCIDR:    DefaultPodCIDR,
		phaseStart: time.Now(),
	}
	if c.BinDir == "" {
		c.BinDir = DefaultBinDir()
	}
	if c.NodeName == "" {
		c.NodeName = DefaultNodeName
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			t.Fatalf("missing %s in %s: run e2e/hack/build-k8s.sh", b, c.BinDir)
		}
	}
	for _, b := range []string{"etcd", "containerd", "containerd-shim-runc-v2", "runc", "docker-registry", "iptables", "conntrack", "ip", "nft"} {
		if _, err := lookPath(b); err != nil {
			t.Fatalf("missing %s: run e2e/hack/prereqs.sh", b)
		}
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = dir
	c.host.Dirs = snapshotDirs()
	c.host.Sysctls = readSysctls()
	if c.host.NFTBefore, err = nftTables(ctx); err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	if err := c.host.save(c.Dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.teardown)

	start := time.Now()
	if err := c.up(ctx, opts); err != nil {
		t.Fatalf("cluster start: %v", err)
	}
	t.Logf("PHASE cluster-up: %s (node %s Ready, dir %s)", time.Since(start).Round(time.Millisecond), c.NodeName, c.Dir)
	return c
}

func lookPath(name string) (string, error) {
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func (c *Cluster) logPhase(name string) {
	c.t.Logf("  cluster: %-28s %s", name, time.Since(c.phaseStart).Round(time.Millisecond))
	c.phaseStart = time.Now()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

func (c *Cluster) start(name string, env []string, bin string, args ...string) (*proc, error) {
	p, err := startProc(name, filepath.Join(c.Dir, "logs", name+".log"), env, bin, args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// waitFor polls cond every 200ms until it returns true, the component p
// exits, or the timeout passes.
func waitFor(ctx context.Context, what string, timeout time.Duration, p *proc, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if p != nil {
			if done, perr := p.exited(); done {
				return fmt.Errorf("%s exited while waiting for %s: %v; log tail:\n%s", p.name, what, perr, tail(p.logPath, 4000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func httpOK(client *http.Client, url, token string) (bool, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return true, nil
}

func (c *Cluster) up(ctx context.Context, opts Options) error {
	for _, d := range []string{"logs", "pki", "etcd", "registry", "containerd", "kubelet", "pod-logs", "cni", "kcm", "scheduler", "images"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o755); err != nil {
			return err
		}
	}
	ports, err := freePorts(8)
	if err != nil {
		return err
	}
	c.ports = ports
	c.host.Ports = append(ports, AgentMetricsPort)
	if err := c.host.save(c.Dir); err != nil {
		return err
	}
	c.apiPort, c.etcdPort = ports[0], ports[1]
	etcdPeer, regPort, kcmPort, schedPort := ports[2], ports[3], ports[4], ports[5]
	c.kubeletPort, c.kubeletHealthzPort = ports[6], ports[7]
	c.Registry = fmt.Sprintf("127.0.0.1:%d", regPort)
	c.ContainerdSocket = filepath.Join(c.Dir, "containerd", "containerd.sock")
	c.PodLogsDir = filepath.Join(c.Dir, "pod-logs")
	c.cniConfDir = filepath.Join(c.Dir, "cni", "net.d")
	c.APIServerURL = fmt.Sprintf("https://127.0.0.1:%d", c.apiPort)

	if err := c.hostNetworkUp(ctx); err != nil {
		return fmt.Errorf("host network: %w", err)
	}
	c.logPhase("host network")

	c.pki, err = newPKI(filepath.Join(c.Dir, "pki"), c.NodeName,
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(c.NodeIP), net.ParseIP(kubernetesSvcIP)},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	c.logPhase("certificates")

	// Registry and etcd.
	regCfg := filepath.Join(c.Dir, "registry", "config.yml")
	if err := c.writeRegistryConfig(regCfg, filepath.Join(c.Dir, "registry", "data")); err != nil {
		return err
	}
	reg, err := c.start("registry", nil, "docker-registry", "serve", regCfg)
	if err != nil {
		return err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcd, err := c.start("etcd", nil, "etcd",
		"--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL)
	if err != nil {
		return err
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if err := waitFor(ctx, "registry", time.Minute, reg, func() (bool, error) {
		return httpOK(plain, "http://"+c.Registry+"/v2/", "")
	}); err != nil {
		return err
	}
	if err := waitFor(ctx, "etcd health", time.Minute, etcd, func() (bool, error) {
		return httpOK(plain, etcdURL+"/health", "")
	}); err != nil {
		return err
	}
	c.logPhase("registry + etcd")

	// The pause image has to be in the registry before the first pod.
	if err := c.pushPause(ctx); err != nil {
		return err
	}
	c.logPhase("pause image")

	// API server.
	audit, err := c.auditFlags()
	if err != nil {
		return err
	}
	apiserver, err := c.start("kube-apiserver", nil, filepath.Join(c.BinDir, "kube-apiserver"), append(audit,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.apiPort),
		"--advertise-address="+c.NodeIP,
		"--cert-dir="+filepath.Join(c.Dir, "pki", "apiserver"),
		"--tls-cert-file="+c.pki.servingCert,
		"--tls-private-key-file="+c.pki.servingKey,
		"--client-ca-file="+c.pki.caFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+c.pki.saPub,
		"--service-account-signing-key-file="+c.pki.saKey,
		"--token-auth-file="+c.pki.tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range="+DefaultServiceCIDR,
		"--allow-privileged=true",
		"--enable-admission-plugins=NodeRestriction",
		"--profiling=false",
		"--v=1",
	)...)
	if err != nil {
		return err
	}
	caPool := x509.NewCertPool()
	caPool.AppendCertsFromPEM(c.pki.caPEM)
	tlsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	if err := waitFor(ctx, "kube-apiserver /readyz", 2*time.Minute, apiserver, func() (bool, error) {
		return httpOK(tlsClient, c.APIServerURL+"/readyz", c.pki.adminToken)
	}); err != nil {
		return err
	}
	c.logPhase("kube-apiserver")

	kc := func(name, user, token string) (string, error) {
		p := filepath.Join(c.Dir, "pki", name+".kubeconfig")
		return p, writeKubeconfig(p, c.APIServerURL, c.pki.caFile, user, token)
	}
	if c.Kubeconfig, err = kc("admin", "admin", c.pki.adminToken); err != nil {
		return err
	}
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	kcmKC, err := kc("controller-manager", "system:kube-controller-manager", c.pki.controllerToken)
	if err != nil {
		return err
	}
	schedKC, err := kc("scheduler", "system:kube-scheduler", c.pki.schedToken)
	if err != nil {
		return err
	}
	kubeletKC, err := kc("kubelet", "system:node:"+c.NodeName, c.pki.kubeletToken)
	if err != nil {
		return err
	}

	kcm, err := c.start("kube-controller-manager", nil, filepath.Join(c.BinDir, "kube-controller-manager"),
		"--kubeconfig="+kcmKC,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(kcmPort),
		"--cert-dir="+filepath.Join(c.Dir, "kcm"),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.pki.saKey,
		"--root-ca-file="+c.pki.caFile,
		"--cluster-signing-cert-file="+c.pki.caFile,
		"--cluster-signing-key-file="+c.pki.caKeyFile,
		"--service-cluster-ip-range="+DefaultServiceCIDR,
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	sched, err := c.start("kube-scheduler", nil, filepath.Join(c.BinDir, "kube-scheduler"),
		"--kubeconfig="+schedKC,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(schedPort),
		"--cert-dir="+filepath.Join(c.Dir, "scheduler"),
		"--leader-elect=false",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if err := waitFor(ctx, "kube-controller-manager /healthz", 2*time.Minute, kcm, func() (bool, error) {
		return httpOK(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort), "")
	}); err != nil {
		return err
	}
	if err := waitFor(ctx, "kube-scheduler /healthz", 2*time.Minute, sched, func() (bool, error) {
		return httpOK(insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", schedPort), "")
	}); err != nil {
		return err
	}
	c.logPhase("controller-manager + scheduler")

	// containerd.
	if err := c.writeCNIConfig(); err != nil {
		return err
	}
	ctrdCfg := filepath.Join(c.Dir, "containerd", "config.toml")
	if err := c.writeContainerdConfig(ctrdCfg); err != nil {
		return err
	}
	ctrd, err := c.start("containerd", nil, "containerd", "--config", ctrdCfg)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "containerd socket", time.Minute, ctrd, func() (bool, error) {
		conn, err := net.DialTimeout("unix", c.ContainerdSocket, time.Second)
		if err != nil {
			return false, err
		}
		conn.Close()
		return true, nil
	}); err != nil {
		return err
	}
	c.logPhase("containerd")

	// kubelet.
	kubeletCfg := filepath.Join(c.Dir, "kubelet", "config.yaml")
	if err := c.writeKubeletConfig(kubeletCfg); err != nil {
		return err
	}
	taints := opts.RegisterWithTaints
	if taints == "" {
		taints = StartupTaint
	}
	kubeletArgs := []string{
		"--config=" + kubeletCfg,
		"--kubeconfig=" + kubeletKC,
		"--root-dir=" + filepath.Join(c.Dir, "kubelet", "root"),
		"--cert-dir=" + filepath.Join(c.Dir, "kubelet", "pki"),
		"--hostname-override=" + c.NodeName,
		"--node-ip=" + c.NodeIP,
		"--v=2",
	}
	if taints != "-" {
		kubeletArgs = append(kubeletArgs, "--register-with-taints="+taints)
	}
	kubelet, err := c.start("kubelet", nil, filepath.Join(c.BinDir, "kubelet"), kubeletArgs...)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "node "+c.NodeName+" Ready", 3*time.Minute, kubelet, func() (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return true, nil
				}
				return false, fmt.Errorf("node not ready: %s: %s", cond.Reason, cond.Message)
			}
		}
		return false, errors.New("node has no Ready condition yet")
	}); err != nil {
		return err
	}
	// Pods need their namespace's default ServiceAccount and the
	// kube-root-ca.crt ConfigMap (projected into every pod) before they
	// can start; both come from the controller-manager.
	if err := waitFor(ctx, "service account default/default and ConfigMap kube-root-ca.crt", time.Minute, kcm, func() (bool, error) {
		for _, ns := range []string{"default", "kube-system"} {
			if _, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
				return false, err
			}
			if _, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	c.logPhase("kubelet + node Ready")
	return nil
}

// pushPause builds the pod sandbox image and pushes it to the registry.
func (c *Cluster) pushPause(ctx context.Context) error {
	bin := filepath.Join(c.Dir, "images", "pause")
	if err := image.GoBuild(ctx, ModuleDir(), "./images/pause", bin); err != nil {
		return err
	}
	img, err := image.StaticBinary(bin, "pause")
	if err != nil {
		return err
	}
	c.PauseImage = c.Registry + "/e2e/pause:1"
	_, err = image.Push(ctx, img, c.PauseImage)
	return err
}

// ModuleDir is the directory of the e2e module (e2e/ in the repository).
func ModuleDir() string {
	// Tests run with the package directory as working directory; walk up
	// to the go.mod of the e2e module.
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; d != "/"; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/nodeagent/nodeagent/e2e\n") {
			return d
		}
	}
	return wd
}

// Kubectl runs the cached kubectl against the cluster as admin.
func (c *Cluster) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	return runStdin(ctx, 2*time.Minute, stdin, filepath.Join(c.BinDir, "kubectl"),
		append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
}

// PodLog returns the current log of a container, read from the kubelet's
// pod log directory (the kubelet listens on loopback only, so the API
// server cannot proxy logs).
func (c *Cluster) PodLog(namespace, pod, container string) (string, error) {
	matches, err := filepath.Glob(filepath.Join(c.PodLogsDir, namespace+"_"+pod+"_*", container, "*.log"))
	if err != nil {
		return "", err
	}
	if len(matches) == 0 {
		return "", fmt.Errorf("no log for %s/%s/%s", namespace, pod, container)
	}
	var b strings.Builder
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			return "", err
		}
		b.Write(data)
	}
	return b.String(), nil
}

// LogFiles lists the components' log files.
func (c *Cluster) LogFiles() []string {
	var out []string
	for _, p := range c.procs {
		out = append(out, p.logPath)
	}
	return out
}
