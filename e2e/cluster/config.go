package cluster

import (
	"fmt"
	"os"
	"path/filepath"
)

func (c *Cluster) writeRegistryConfig(path, storage string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, storage, c.Registry)), 0o644)
}

// writeContainerdConfig writes a private containerd configuration: root,
// state, sockets and runc state all live under c.Dir; the CRI plugin uses
// overlayfs, the CNI config of this run, our pause image, and the local
// registry as a plain-HTTP mirror of itself.
func (c *Cluster) writeContainerdConfig(path string) error {
	d := filepath.Join(c.Dir, "containerd")
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
oom_score = 0

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %[7]q
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.%[9]q]
    endpoint = ["http://%[9]s"]
`,
		filepath.Join(d, "root"), filepath.Join(d, "state"), c.ContainerdSocket, c.ContainerdSocket+".ttrpc",
		filepath.Join(d, "opt"), c.PauseImage, filepath.Join(d, "runc"), c.cniConfDir, c.Registry)
	return os.WriteFile(path, []byte(cfg), 0o644)
}

// writeCNIConfig writes a bridge + host-local network on this run's private
// bridge. Pods get routes to the pod subnet and to the node-local DNS
// address only, so nothing they send can leave the machine. (The CRI plugin
// adds the loopback plugin itself.)
func (c *Cluster) writeCNIConfig() error {
	if err := os.MkdirAll(c.cniConfDir, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": %q}, {"dst": %q}]
      }
    }
  ]
}
`, cniNetwork, bridgeIf, filepath.Join(c.Dir, "cni-ipam"), c.PodCIDR, c.PodCIDR, NodeLocalDNS+"/32")
	return os.WriteFile(filepath.Join(c.cniConfDir, "10-nodeagent-e2e.conflist"), []byte(conf), 0o644)
}

func (c *Cluster) writeKubeletConfig(path string) error {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
failSwapOn: false
podLogsDir: %s
serializeImagePulls: false
resolvConf: /etc/resolv.conf
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
staticPodPath: ""
`, c.ContainerdSocket, c.kubeletPort, c.kubeletHealthzPort, c.pki.caFile, c.PodLogsDir)
	return os.WriteFile(path, []byte(cfg), 0o644)
}
