package imagewarm

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nodeagent/nodeagent/agent/config"
)

// S3 mount drivers.
const (
	// DriverMountpoint runs Mountpoint for S3 (mount-s3), for S3 and S3 Express.
	DriverMountpoint = "mountpoint"
	// DriverS3fs runs s3fs-fuse, for S3-compatible stores.
	DriverS3fs = "s3fs"
	// DriverRclone runs rclone mount, for S3-compatible stores.
	DriverRclone = "rclone"
)

// S3Config is the S3 mounts part of the imagewarm section (inlined: its keys
// sit beside images).
type S3Config struct {
	// S3Mounts are the buckets mounted on the node.
	S3Mounts []S3MountConfig `yaml:"s3Mounts"`
	// S3 holds what every mount shares.
	S3 S3Options `yaml:"s3"`
}

// S3Options are the settings shared by every S3 mount.
type S3Options struct {
	// AllowedRoots: every mountPath must be below one of them.
	AllowedRoots []string `yaml:"allowedRoots"`
	// StateDir (host path) keeps a record per mount the agent made, so that a
	// new agent adopts it, and removes only what it mounted.
	StateDir string `yaml:"stateDir"`
	// Namespace is host (nsenter into PID 1's mount namespace) or agent.
	Namespace string `yaml:"namespace"`
	// Supervisor keeps the FUSE daemons alive beyond the agent pod: systemd
	// (a transient unit per mount, started through SystemdSocket), cgroup (a
	// cgroup of the agent's own below CgroupRoot) or auto (systemd when the
	// host's answers, else cgroup). systemd needs namespace host.
	Supervisor string `yaml:"supervisor"`
	// SystemdSocket (host path) is systemd's private D-Bus socket.
	SystemdSocket string `yaml:"systemdSocket"`
	// CgroupRoot (host path) is where the FUSE daemons get a cgroup of their
	// own, outside the agent container's, so they outlive the agent pod
	// (supervisor cgroup). "" leaves them in the agent's cgroup.
	CgroupRoot string `yaml:"cgroupRoot"`
	// RaidMount is where raid mounts the instance-store array (its
	// mount.path): a mount with cache "raid" gets <raidMount>/s3cache/<name>
	// once it is mounted.
	RaidMount string `yaml:"raidMount"`
	// CacheWait is how long a mount with cache "raid" waits for RaidMount to
	// be mounted before it mounts without a cache (an instance without
	// instance store, raid off).
	CacheWait time.Duration `yaml:"cacheWait"`
	// CheckInterval is how often each mount's root is stat'ed.
	CheckInterval time.Duration `yaml:"checkInterval"`
	// StatTimeout bounds one stat of a mount's root (a hung daemon).
	StatTimeout time.Duration `yaml:"statTimeout"`
	// MountTimeout bounds the wait for a new daemon's mount to answer.
	MountTimeout time.Duration `yaml:"mountTimeout"`
	Retry        RetryConfig   `yaml:"retry"`
	// Binaries by driver ("" = looked up on PATH).
	MountS3Path string `yaml:"mountS3Path"`
	S3fsPath    string `yaml:"s3fsPath"`
	RclonePath  string `yaml:"rclonePath"`
}

// S3MountConfig is one bucket (or prefix of it) mounted at a host path.
type S3MountConfig struct {
	// Name labels metrics and records.
	Name   string `yaml:"name"`
	Bucket string `yaml:"bucket"`
	// Prefix mounts only keys below it; it ends in "/".
	Prefix string `yaml:"prefix"`
	// MountPath is the host path, below one of s3.allowedRoots.
	MountPath string `yaml:"mountPath"`
	Region    string `yaml:"region"`
	// EndpointURL overrides the S3 endpoint (S3-compatible stores, tests).
	EndpointURL string `yaml:"endpointURL"`
	// ReadOnly mounts get --read-only and, with the mountpoint driver,
	// --metadata-ttl indefinite unless metadataTTL says otherwise.
	ReadOnly bool `yaml:"readOnly"`
	// Cache is a local cache directory (host path), "raid" for one on the
	// raid feature's NVMe mount (s3.raidMount), or "" for none.
	Cache string `yaml:"cache"`
	// MetadataTTL is mount-s3's --metadata-ttl: seconds, indefinite or minimal.
	MetadataTTL string `yaml:"metadataTTL"`
	// UID and GID own the files (nil = the daemon's).
	UID *int `yaml:"uid"`
	GID *int `yaml:"gid"`
	// AllowOther lets users other than root (the pods) read the mount.
	AllowOther bool `yaml:"allowOther"`
	// ExtraArgs are appended to the driver's command line.
	ExtraArgs []string `yaml:"extraArgs"`
	// Driver is mountpoint (default), s3fs or rclone.
	Driver string `yaml:"driver"`
	// Required mounts gate the node's readiness.
	Required bool `yaml:"required"`
}

func defaultS3Config() S3Config {
	return S3Config{
		S3Mounts: []S3MountConfig{},
		S3: S3Options{
			AllowedRoots:  []string{"/mnt/s3"},
			StateDir:      "/run/nodeagent/s3mounts",
			Namespace:     MountNamespaceHost,
			Supervisor:    SupervisorAuto,
			SystemdSocket: "/run/systemd/private",
			CgroupRoot:    "/sys/fs/cgroup",
			RaidMount:     "/mnt/k8s-disks/0",
			CacheWait:     2 * time.Minute,
			CheckInterval: 2 * time.Second,
			StatTimeout:   5 * time.Second,
			MountTimeout:  30 * time.Second,
			Retry:         RetryConfig{InitialBackoff: time.Second, MaxBackoff: time.Minute},
			MountS3Path:   "",
			S3fsPath:      "",
			RclonePath:    "",
		},
	}
}

// Mount namespaces of the S3 daemons.
const (
	MountNamespaceHost  = "host"
	MountNamespaceAgent = "agent"
)

// CacheOnRaid as a mount's cache puts it on the raid mount.
const CacheOnRaid = "raid"

// Supervisors of the S3 daemons.
const (
	SupervisorAuto    = "auto"
	SupervisorSystemd = "systemd"
	SupervisorCgroup  = "cgroup"
)

var (
	// directoryBucket is an S3 Express One Zone directory bucket name.
	directoryBucket = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*--[a-z0-9]+-az[0-9]+--x-s3$`)
	generalBucket   = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	mountName       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	metadataTTL     = regexp.MustCompile(`^([0-9]+|indefinite|minimal)$`)
)

func (c *S3Config) validate(errs *config.Errors) {
	o := c.S3
	for i, r := range o.AllowedRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r || r == "/" {
			errs.Addf(fmt.Sprintf("s3.allowedRoots[%d]", i), "must be a clean absolute path other than /, got %q", r)
		}
	}
	if !filepath.IsAbs(o.StateDir) {
		errs.Addf("s3.stateDir", "must be an absolute path, got %q", o.StateDir)
	}
	if o.Namespace != MountNamespaceHost && o.Namespace != MountNamespaceAgent {
		errs.Addf("s3.namespace", "must be %s or %s, got %q", MountNamespaceHost, MountNamespaceAgent, o.Namespace)
	}
	switch o.Supervisor {
	case SupervisorAuto, SupervisorCgroup:
	case SupervisorSystemd:
		if o.Namespace != MountNamespaceHost {
			errs.Addf("s3.supervisor", "systemd starts the daemons in the host's mount namespace: needs s3.namespace %s, got %q", MountNamespaceHost, o.Namespace)
		}
	default:
		errs.Addf("s3.supervisor", "must be %s, %s or %s, got %q", SupervisorAuto, SupervisorSystemd, SupervisorCgroup, o.Supervisor)
	}
	if !filepath.IsAbs(o.SystemdSocket) {
		errs.Addf("s3.systemdSocket", "must be an absolute path, got %q", o.SystemdSocket)
	}
	if o.CgroupRoot != "" && !filepath.IsAbs(o.CgroupRoot) {
		errs.Addf("s3.cgroupRoot", "must be an absolute path or empty, got %q", o.CgroupRoot)
	}
	if !filepath.IsAbs(o.RaidMount) || filepath.Clean(o.RaidMount) != o.RaidMount {
		errs.Addf("s3.raidMount", "must be a clean absolute path, got %q", o.RaidMount)
	}
	if o.CacheWait < 0 {
		errs.Addf("s3.cacheWait", "must be >= 0s, got %s", o.CacheWait)
	}
	if o.CheckInterval < 100*time.Millisecond {
		errs.Addf("s3.checkInterval", "must be >= 100ms, got %s", o.CheckInterval)
	}
	if o.StatTimeout <= 0 {
		errs.Addf("s3.statTimeout", "must be > 0s, got %s", o.StatTimeout)
	}
	if o.MountTimeout <= 0 {
		errs.Addf("s3.mountTimeout", "must be > 0s, got %s", o.MountTimeout)
	}
	if o.Retry.InitialBackoff <= 0 {
		errs.Addf("s3.retry.initialBackoff", "must be > 0s, got %s", o.Retry.InitialBackoff)
	}
	if o.Retry.MaxBackoff < o.Retry.InitialBackoff {
		errs.Addf("s3.retry.maxBackoff", "must be >= s3.retry.initialBackoff (%s), got %s", o.Retry.InitialBackoff, o.Retry.MaxBackoff)
	}
	names, paths := map[string]int{}, map[string]int{}
	for i := range c.S3Mounts {
		m := &c.S3Mounts[i]
		p := fmt.Sprintf("s3Mounts[%d]", i)
		if !mountName.MatchString(m.Name) {
			errs.Addf(config.JoinPath(p, "name"), "must be lower-case letters, digits and '-' (at most 63), got %q", m.Name)
		} else if j, dup := names[m.Name]; dup {
			errs.Addf(config.JoinPath(p, "name"), "duplicate of s3Mounts[%d]", j)
		} else {
			names[m.Name] = i
		}
		switch m.driver() {
		case DriverMountpoint:
			if !directoryBucket.MatchString(m.Bucket) {
				errs.Addf(config.JoinPath(p, "bucket"), "must be an S3 Express directory bucket name (base--azid--x-s3, e.g. libs--use1-az4--x-s3), got %q", m.Bucket)
			}
		case DriverS3fs, DriverRclone:
			if !generalBucket.MatchString(m.Bucket) {
				errs.Addf(config.JoinPath(p, "bucket"), "must be a bucket name (3-63 of a-z 0-9 . -), got %q", m.Bucket)
			}
		default:
			errs.Addf(config.JoinPath(p, "driver"), "must be %s, %s or %s, got %q", DriverMountpoint, DriverS3fs, DriverRclone, m.Driver)
		}
		if m.Prefix != "" && (!strings.HasSuffix(m.Prefix, "/") || strings.HasPrefix(m.Prefix, "/")) {
			errs.Addf(config.JoinPath(p, "prefix"), "must end in / and not start with one, got %q", m.Prefix)
		}
		switch mp := m.MountPath; {
		case !filepath.IsAbs(mp) || filepath.Clean(mp) != mp:
			errs.Addf(config.JoinPath(p, "mountPath"), "must be a clean absolute path, got %q", mp)
		case !slices.ContainsFunc(o.AllowedRoots, func(r string) bool { return strings.HasPrefix(mp, r+"/") }):
			errs.Addf(config.JoinPath(p, "mountPath"), "must be below one of s3.allowedRoots %v, got %q", o.AllowedRoots, mp)
		default:
			for q, j := range paths {
				if q == mp || strings.HasPrefix(mp, q+"/") || strings.HasPrefix(q, mp+"/") {
					errs.Addf(config.JoinPath(p, "mountPath"), "%q overlaps s3Mounts[%d] (%q)", mp, j, q)
				}
			}
			paths[mp] = i
		}
		if m.Cache != "" && m.Cache != CacheOnRaid && !filepath.IsAbs(m.Cache) {
			errs.Addf(config.JoinPath(p, "cache"), "must be an absolute path, %s or empty, got %q", CacheOnRaid, m.Cache)
		}
		if m.MetadataTTL != "" && !metadataTTL.MatchString(m.MetadataTTL) {
			errs.Addf(config.JoinPath(p, "metadataTTL"), "must be seconds, indefinite or minimal, got %q", m.MetadataTTL)
		}
		if m.UID != nil && *m.UID < 0 {
			errs.Addf(config.JoinPath(p, "uid"), "must be >= 0, got %d", *m.UID)
		}
		if m.GID != nil && *m.GID < 0 {
			errs.Addf(config.JoinPath(p, "gid"), "must be >= 0, got %d", *m.GID)
		}
		if m.EndpointURL != "" && !strings.HasPrefix(m.EndpointURL, "http://") && !strings.HasPrefix(m.EndpointURL, "https://") {
			errs.Addf(config.JoinPath(p, "endpointURL"), "must be an http(s) URL, got %q", m.EndpointURL)
		}
	}
}

func (m *S3MountConfig) driver() string {
	if m.Driver == "" {
		return DriverMountpoint
	}
	return m.Driver
}
