//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodeagent/nodeagent/e2e/cluster"
	"github.com/nodeagent/nodeagent/e2e/image"
)

const startupTaint = "nodeagent.io/not-ready"

// executorImage is the pause image plus layers of random data (about
// 8 x 4 MB): a runnable image that takes a real pull.
func executorImage(ctx context.Context, t *testing.T, c *cluster.Cluster) v1.Image {
	t.Helper()
	r, err := name.ParseReference(c.PauseImage, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	base, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	img := base
	for range 8 {
		l, err := random.Layer(4<<20, "application/vnd.docker.image.rootfs.diff.tar.gzip")
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// testImageWarm enables imagewarm through the chart with a required image
// that is not in the registry yet, on a node carrying the startup taint
// (the new agent process gates it): the taint stays while the image is missing (the NodeAgentReady
// condition says why) and goes once the image is pushed and warmed. Pods
// naming the warmed image by tag and by digest then start with kubelet's
// "already present on machine" and no pull; a pod of an image of the same
// size that was not warmed is timed for comparison.
func testImageWarm(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	warmTag := c.Registry + "/spark/executor:warm"
	warmImg := executorImage(ctx, t, c)
	coldImg := executorImage(ctx, t, c)
	coldRef, err := image.Push(ctx, coldImg, c.Registry+"/spark/executor-cold:1")
	if err != nil {
		t.Fatal(err)
	}
	d, err := warmImg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	warmDigest := c.Registry + "/spark/executor@" + d.String()
	// A second required image in a registry that wants a password, which
	// the agent gets from a dockerconfigjson Secret (RBAC: get on that name).
	privReg := authRegistry(ctx, t, c, "puller", "s3cret")
	privRef := privReg + "/spark/private:1"
	if _, err := image.PushAuth(ctx, executorImage(ctx, t, c), privRef, "puller", "s3cret"); err != nil {
		t.Fatal(err)
	}
	pullSecret(ctx, t, c, agentNamespace, "imagewarm-pull", privReg, "puller", "s3cret")

	// The node starts over: startup taint back, agent restarted with the
	// required image configured but not pushed yet.
	// First the installed agent releases the node (so it cannot remove
	// the taint put back below), then the taint goes back on.
	var node *corev1.Node
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		node, err = c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		return err == nil && !hasTaint(node, startupTaint, corev1.TaintEffectNoSchedule), nil
	})
	if err != nil {
		t.Fatalf("the installed agent never removed the startup taint: %v", err)
	}
	node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: startupTaint, Effect: corev1.TaintEffectNoSchedule})
	if _, err := c.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	section := fmt.Sprintf(`imagewarm:
  enabled: true
  containerdSocket: %s
  contentDir: %s
  retry: {initialBackoff: 1s, maxBackoff: 2s}
  credentials: {secret: %s/imagewarm-pull}
  images:
    - {ref: %q, required: true, pin: true}
    - {ref: %q, required: true}
`, c.ContainerdSocket, filepath.Join(filepath.Dir(c.ContainerdSocket), "root", "io.containerd.content.v1.content"), agentNamespace, warmTag, privRef)
	// Through the chart, as a user's helm upgrade: the pod template gets
	// imagewarm's mounts (containerd's socket) and the agent restarts.
	orig := currentConfig(ctx, t, c)
	applyConfig(ctx, t, c, replaceSection(orig, "imagewarm", section))
	defer func() {
		applyConfig(ctx, t, c, orig)
		waitRollout(ctx, t, c)
	}()
	// The new agent reports imagewarm as what blocks the node.
	var blocking string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == "NodeAgentReady" && cond.Status == corev1.ConditionFalse && strings.Contains(cond.Message, "spark/executor:warm") {
				blocking = cond.Message
				return hasTaint(n, startupTaint, corev1.TaintEffectNoSchedule), nil
			}
		}
		return false, nil
	})
	if err != nil {
		n, _ := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		t.Fatalf("the restarted agent does not hold the taint for the missing image: %v; conditions %v taints %v", err, n.Status.Conditions, n.Spec.Taints)
	}
	t.Logf("while the image is missing: NodeAgentReady=False: %s", blocking)

	pushed := time.Now()
	if _, err := image.Push(ctx, warmImg, warmTag); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		return err == nil && !hasTaint(n, startupTaint, corev1.TaintEffectNoSchedule), nil
	})
	if err != nil {
		t.Fatalf("startup taint not removed after the required image was pushed: %v", err)
	}
	t.Logf("PHASE imagewarm-taint-removed: %s after the push", time.Since(pushed).Round(time.Millisecond))
	waitEvent(ctx, t, c, "ImageWarmed", corev1.EventTypeNormal, time.Minute)
	waitRollout(ctx, t, c)
	// blobWrite: direct through the chart's content store mount: the
	// agent's probe saw containerd register a blob it wrote there.
	if log, err := agentLog(c); err != nil {
		t.Fatal(err)
	} else if strings.Contains(log, "streaming blobs over gRPC") {
		t.Errorf("the agent fell back to streaming blobs over gRPC:\n%s", log)
	}

	for _, tc := range []struct{ pod, ref string }{{"warm-by-tag", warmTag}, {"warm-by-digest", warmDigest}, {"warm-private", privRef}, {"not-warmed", coldRef}} {
		took := runPod(ctx, t, c, tc.pod, tc.ref)
		pulled, present := podPullEvents(ctx, t, c, tc.pod)
		t.Logf("PHASE pod-start %s: %s created -> Running (pulled=%t, already present=%t)", tc.pod, took.Round(time.Millisecond), pulled, present)
		if tc.pod != "not-warmed" {
			if pulled || !present {
				t.Errorf("pod %s (%s): kubelet pulled=%t, already present=%t; want no pull", tc.pod, tc.ref, pulled, present)
			}
		} else if !pulled {
			t.Errorf("pod %s: kubelet did not pull the image that was not warmed", tc.pod)
		}
	}
}

// runPod creates a pod running ref and returns how long it took from the
// create call to the pod Running.
func runPod(ctx context.Context, t *testing.T, c *cluster.Cluster, podName, ref string) time.Duration {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: "default"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "executor", Image: ref, ImagePullPolicy: corev1.PullIfNotPresent}},
		},
	}
	start := time.Now()
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().Pods("default").Delete(context.Background(), podName, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	})
	var got *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = c.Client.CoreV1().Pods("default").Get(ctx, podName, metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("pod %s not Running: %v %v", podName, err, statusOf(got))
	}
	return time.Since(start)
}

// podPullEvents reports whether kubelet pulled the pod's image, and
// whether it said the image was already present on the machine.
func podPullEvents(ctx context.Context, t *testing.T, c *cluster.Cluster, podName string) (pulled, present bool) {
	t.Helper()
	evs, err := c.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + podName})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Reason == "Pulling" {
			pulled = true
		}
		if e.Reason == "Pulled" && strings.Contains(e.Message, "already present on machine") {
			present = true
		}
	}
	return pulled, present
}

// authRegistry starts a docker-registry on a free port that requires basic
// auth (htpasswd with user:password) and returns its host:port. Without a
// hosts.toml, containerd and the agent reach 127.0.0.1:PORT over HTTP.
func authRegistry(ctx context.Context, t *testing.T, c *cluster.Cluster, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage:\n  filesystem: {rootdirectory: %s}\n"+
		"http:\n  addr: %s\nauth:\n  htpasswd:\n    realm: e2e\n    path: %s\n", filepath.Join(dir, "data"), addr, htpasswd)), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("docker-registry", "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized, nil
	})
	if err != nil {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("registry with auth on %s not up: %v\n%s", addr, err, out)
	}
	return addr
}

// pullSecret creates (or replaces) a kubernetes.io/dockerconfigjson Secret
// for registry, removed when the test ends.
func pullSecret(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, name, registry, user, password string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	data := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, registry, auth)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(data)},
	}
	_ = c.Client.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Client.CoreV1().Secrets(ns).Delete(context.Background(), name, metav1.DeleteOptions{}) })
}
