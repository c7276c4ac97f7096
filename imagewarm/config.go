package imagewarm

import (
	"fmt"
	"strings"
	"time"

	"github.com/containerd/platforms"
	docker "github.com/distribution/reference"

	"github.com/nodeagent/nodeagent/agent/config"
)

// Config is the imagewarm section of the agent config.
type Config struct {
	Enabled bool `yaml:"enabled"`
	// ContainerdSocket is containerd's gRPC socket below the host root. The
	// CRI is served on the same socket.
	ContainerdSocket string `yaml:"containerdSocket"`
	// Namespace is the containerd namespace kubelet's CRI uses.
	Namespace string `yaml:"namespace"`
	// Snapshotter overrides the snapshotter read from the CRI runtime status
	// ("" = read it, as the CRI would unpack).
	Snapshotter string `yaml:"snapshotter"`
	// RegistryConfigPath is the hosts.toml directory below the host root
	// ("" = the CRI's registry.config_path, else /etc/containerd/certs.d).
	RegistryConfigPath string `yaml:"registryConfigPath"`
	// BlobWrite is how fetched blobs reach containerd's content store:
	// "direct" writes them into its directory (ContentDir) and registers
	// them over gRPC, falling back to "grpc" (every byte streamed through
	// containerd's content API) when containerd does not see them there.
	BlobWrite string `yaml:"blobWrite"`
	// ContentDir is containerd's local content store below the host root
	// ("" = <the CRI's containerdRootDir>/io.containerd.content.v1.content).
	ContentDir string `yaml:"contentDir"`
	// MaxConcurrentImages bounds the images pulled at once.
	MaxConcurrentImages int `yaml:"maxConcurrentImages"`
	// MaxConcurrentDownloads bounds the blobs (layers) downloaded at once,
	// across every image.
	MaxConcurrentDownloads int `yaml:"maxConcurrentDownloads"`
	// PullTimeout bounds one attempt at one image.
	PullTimeout time.Duration `yaml:"pullTimeout"`
	// RecheckInterval is how often every image is checked (records, content,
	// snapshots) and pulled again if image GC or a user removed it.
	RecheckInterval time.Duration `yaml:"recheckInterval"`
	Retry           RetryConfig   `yaml:"retry"`
	Credentials     CredsConfig   `yaml:"credentials"`
	// Images to warm.
	Images []ImageConfig `yaml:"images"`
	// S3 mounts (s3Mounts, s3): s3config.go.
	S3Config `yaml:",inline"`
}

// RetryConfig is the jittered exponential backoff between failed attempts.
type RetryConfig struct {
	InitialBackoff time.Duration `yaml:"initialBackoff"`
	MaxBackoff     time.Duration `yaml:"maxBackoff"`
}

// CredsConfig names the credential sources, tried in order: the kubelet
// image credential providers, then a dockerconfigjson Secret.
type CredsConfig struct {
	// ProviderConfig is kubelet's --image-credential-provider-config file
	// below the host root ("" = none).
	ProviderConfig string `yaml:"providerConfig"`
	// ProviderBinDir is kubelet's --image-credential-provider-bin-dir below
	// the host root.
	ProviderBinDir string `yaml:"providerBinDir"`
	// Secret is "namespace/name" of a kubernetes.io/dockerconfigjson Secret
	// ("" = none). The agent gets it by name only.
	Secret string `yaml:"secret"`
	// SecretRefresh is how often the Secret is read again.
	SecretRefresh time.Duration `yaml:"secretRefresh"`
}

// ImageConfig is one image to warm.
type ImageConfig struct {
	// Ref is a reference by tag or digest ("registry/repo:tag",
	// "registry/repo@sha256:..."); normalized as kubelet does (docker.io).
	Ref string `yaml:"ref"`
	// Platform is "os/arch[/variant]"; "" = the node's.
	Platform string `yaml:"platform"`
	// Pin labels the records io.cri-containerd.pinned=pinned, which keeps
	// them from kubelet's image GC (containerd >= 1.7.3 reports it).
	Pin bool `yaml:"pin"`
	// Required images gate the node's readiness (the startup taint).
	Required bool `yaml:"required"`
}

// Values of blobWrite.
const (
	blobWriteDirect = "direct"
	blobWriteGRPC   = "grpc"
)

// DefaultConfig is the feature disabled, with an empty list.
func DefaultConfig() *Config {
	return &Config{
		Enabled:                false,
		ContainerdSocket:       "/run/containerd/containerd.sock",
		Namespace:              "k8s.io",
		Snapshotter:            "",
		RegistryConfigPath:     "",
		BlobWrite:              blobWriteDirect,
		ContentDir:             "",
		MaxConcurrentImages:    5,
		MaxConcurrentDownloads: 12,
		PullTimeout:            30 * time.Minute,
		RecheckInterval:        5 * time.Minute,
		Retry:                  RetryConfig{InitialBackoff: 2 * time.Second, MaxBackoff: 2 * time.Minute},
		Credentials: CredsConfig{
			ProviderConfig: "",
			ProviderBinDir: "",
			Secret:         "",
			SecretRefresh:  5 * time.Minute,
		},
		Images:   []ImageConfig{},
		S3Config: defaultS3Config(),
	}
}

// IsEnabled implements agent.Config.
func (c *Config) IsEnabled() bool { return c.Enabled }

// Validate implements agent.Config: every problem, with its key path.
func (c *Config) Validate() error {
	var errs config.Errors
	if !strings.HasPrefix(c.ContainerdSocket, "/") {
		errs.Addf("containerdSocket", "must be an absolute path, got %q", c.ContainerdSocket)
	}
	if c.Namespace == "" {
		errs.Addf("namespace", "must not be empty (kubelet's CRI uses k8s.io)")
	}
	if c.RegistryConfigPath != "" && !strings.HasPrefix(c.RegistryConfigPath, "/") {
		errs.Addf("registryConfigPath", "must be an absolute path or empty, got %q", c.RegistryConfigPath)
	}
	if c.BlobWrite != blobWriteDirect && c.BlobWrite != blobWriteGRPC {
		errs.Addf("blobWrite", "must be %q or %q, got %q", blobWriteDirect, blobWriteGRPC, c.BlobWrite)
	}
	if c.ContentDir != "" && !strings.HasPrefix(c.ContentDir, "/") {
		errs.Addf("contentDir", "must be an absolute path or empty, got %q", c.ContentDir)
	}
	if c.MaxConcurrentImages < 1 {
		errs.Addf("maxConcurrentImages", "must be >= 1, got %d", c.MaxConcurrentImages)
	}
	if c.MaxConcurrentDownloads < 1 {
		errs.Addf("maxConcurrentDownloads", "must be >= 1, got %d", c.MaxConcurrentDownloads)
	}
	if c.PullTimeout <= 0 {
		errs.Addf("pullTimeout", "must be > 0s, got %s", c.PullTimeout)
	}
	if c.RecheckInterval < time.Second {
		errs.Addf("recheckInterval", "must be >= 1s, got %s", c.RecheckInterval)
	}
	if c.Retry.InitialBackoff <= 0 {
		errs.Addf("retry.initialBackoff", "must be > 0s, got %s", c.Retry.InitialBackoff)
	}
	if c.Retry.MaxBackoff < c.Retry.InitialBackoff {
		errs.Addf("retry.maxBackoff", "must be >= retry.initialBackoff (%s), got %s", c.Retry.InitialBackoff, c.Retry.MaxBackoff)
	}
	cr := c.Credentials
	if cr.ProviderConfig != "" && !strings.HasPrefix(cr.ProviderConfig, "/") {
		errs.Addf("credentials.providerConfig", "must be an absolute path or empty, got %q", cr.ProviderConfig)
	}
	if cr.ProviderConfig != "" && !strings.HasPrefix(cr.ProviderBinDir, "/") {
		errs.Addf("credentials.providerBinDir", "must be an absolute path when providerConfig is set, got %q", cr.ProviderBinDir)
	}
	if cr.Secret != "" {
		ns, name, ok := strings.Cut(cr.Secret, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			errs.Addf("credentials.secret", "must be \"namespace/name\", got %q", cr.Secret)
		}
	}
	if cr.SecretRefresh < time.Second {
		errs.Addf("credentials.secretRefresh", "must be >= 1s, got %s", cr.SecretRefresh)
	}
	seen := map[string]int{}
	for i, img := range c.Images {
		p := fmt.Sprintf("images[%d]", i)
		if img.Ref == "" {
			errs.Addf(config.JoinPath(p, "ref"), "must not be empty")
			continue
		}
		named, err := docker.ParseDockerRef(img.Ref)
		if err != nil {
			errs.Addf(config.JoinPath(p, "ref"), "not an image reference: %v", err)
			continue
		}
		if img.Platform != "" {
			if _, err := platforms.Parse(img.Platform); err != nil {
				errs.Addf(config.JoinPath(p, "platform"), "must be os/arch[/variant]: %v", err)
			}
		}
		key := named.String() + " " + img.Platform
		if j, dup := seen[key]; dup {
			errs.Addf(config.JoinPath(p, "ref"), "duplicate of images[%d] (%s)", j, named.String())
		}
		seen[key] = i
	}
	c.S3Config.validate(&errs)
	return errs.Err()
}
