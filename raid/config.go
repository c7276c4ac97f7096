package raid

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodeagent/nodeagent/agent/config"
)

// Filesystems.
const (
	FSXFS  = "xfs"
	FSExt4 = "ext4"
)

// What to do when some members of our array are missing or blank.
const (
	OnIncompleteReport   = "report"   // touch nothing, not ready, say why
	OnIncompleteRecreate = "recreate" // wipe our superblocks and create again (RAID0 data is gone anyway)
)

// What to do with a single disk.
const (
	SingleDiskFormat = "format" // a filesystem on the disk itself, no md device
	SingleDiskArray  = "array"  // a one-member RAID0, like the EKS AMI
)

// Where mounts are made.
const (
	// MountNamespaceHost runs mkdir and mount in PID 1's mount namespace
	// (nsenter --mount=<host root>/proc/1/ns/mnt; needs hostPID): the mount
	// is the host's own, seen by kubelet and pods, and outlives the agent.
	MountNamespaceHost = "host"
	// MountNamespaceAgent mounts in the agent's own namespace below the
	// host root; on a DaemonSet that reaches the host only below a host path
	// with Bidirectional propagation. For an agent running on the host itself.
	MountNamespaceAgent = "agent"
)

// Config is the raid section of the agent config.
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Disks selects the candidate disks.
	Disks DisksConfig `yaml:"disks"`
	// Array is the md RAID0 made from two or more disks.
	Array ArrayConfig `yaml:"array"`
	// SingleDisk: format (a filesystem on the disk itself) or array.
	SingleDisk string `yaml:"singleDisk"`
	// OnIncomplete: report (default) or recreate, when some members of our
	// array are missing or blank. recreate destroys what the remaining
	// members hold (a RAID0 with a member gone has lost its data already).
	OnIncomplete string           `yaml:"onIncomplete"`
	Filesystem   FilesystemConfig `yaml:"filesystem"`
	Mount        MountConfig      `yaml:"mount"`
	// Directories are made on the filesystem after every mount, with owner and mode.
	Directories []DirectoryConfig `yaml:"directories"`
	// HostArrays are md names (without homehost) of arrays an AMI makes at
	// boot: nodeadm's "kubernetes", Bottlerocket's "ephemeral". Such an
	// array over the selected disks is used as it is, never replaced.
	HostArrays []string `yaml:"hostArrays"`
	// NodeLabel is set on the Node once the mount is ready, to the layout
	// ("raid0" or "disk"); "" = off.
	NodeLabel string `yaml:"nodeLabel"`
	// CapacityResource, when set (e.g. nodeagent.io/local-scratch), is an
	// extended resource on the Node whose capacity is the mounted
	// filesystem's size in bytes (0 while not ready), so executors can
	// request scratch space and the scheduler counts it. "" = off.
	CapacityResource string `yaml:"capacityResource"`
	// AllowNoDisks makes a node without any selected disk ready (nothing to
	// do) instead of not ready.
	AllowNoDisks bool `yaml:"allowNoDisks"`
	// ReconcileInterval is how often disks, array and mount are checked again.
	ReconcileInterval time.Duration `yaml:"reconcileInterval"`
	// CommandTimeout bounds each mdadm, mkfs or mount.
	CommandTimeout time.Duration `yaml:"commandTimeout"`
}

// DisksConfig selects disks. A disk is a candidate when it matches any of
// the three lists.
type DisksConfig struct {
	// Models are matched against /sys/block/*/device/model, trimmed of padding.
	Models []string `yaml:"models"`
	// SerialPrefixes are matched against /sys/block/*/device/serial.
	SerialPrefixes []string `yaml:"serialPrefixes"`
	// Devices are kernel names or /dev paths ("nvme1n1", "/dev/loop3").
	Devices []string `yaml:"devices"`
}

// ArrayConfig shapes the md array.
type ArrayConfig struct {
	// Name is the md array name (superblock and /dev/md/<name>). With
	// --homehost=any it does not drift to md127 or <name>_0.
	Name string `yaml:"name"`
	// ChunkKiB is the stripe chunk in KiB.
	ChunkKiB int `yaml:"chunkKiB"`
}

// FilesystemConfig is the filesystem made on a new array or disk.
type FilesystemConfig struct {
	// Type is xfs or ext4.
	Type string `yaml:"type"`
	// Label marks the filesystem as nodeagent's (at most 12 characters for xfs).
	Label string `yaml:"label"`
}

// MountConfig is where and how the filesystem is mounted.
type MountConfig struct {
	// Path on the host.
	Path string `yaml:"path"`
	// Options are mount options; "noatime" by default.
	Options []string `yaml:"options"`
	// Discard mounts with online discard (TRIM on every delete).
	Discard bool `yaml:"discard"`
	// Namespace is host (nsenter into PID 1's mount namespace) or agent.
	Namespace string `yaml:"namespace"`
}

// DirectoryConfig is one directory on the mounted filesystem.
type DirectoryConfig struct {
	// Path is relative to the mount ("spark").
	Path string `yaml:"path"`
	UID  int    `yaml:"uid"`
	GID  int    `yaml:"gid"`
	// Mode is octal, as a string ("0755").
	Mode string `yaml:"mode"`
}

// DefaultModel is what EC2 instance-store NVMe disks report.
const DefaultModel = "Amazon EC2 NVMe Instance Storage"

// DefaultConfig is raid disabled, set up for EC2 instance store like the
// EKS AMI (same mount path), with a name of its own.
func DefaultConfig() *Config {
	return &Config{
		Enabled:           false,
		Disks:             DisksConfig{Models: []string{DefaultModel}, SerialPrefixes: []string{}, Devices: []string{}},
		Array:             ArrayConfig{Name: "nodeagent", ChunkKiB: 256},
		SingleDisk:        SingleDiskFormat,
		OnIncomplete:      OnIncompleteReport,
		Filesystem:        FilesystemConfig{Type: FSXFS, Label: "nodeagent"},
		Mount:             MountConfig{Path: "/mnt/k8s-disks/0", Options: []string{"noatime"}, Discard: false, Namespace: MountNamespaceHost},
		Directories:       []DirectoryConfig{},
		HostArrays:        []string{"kubernetes", "ephemeral"},
		NodeLabel:         "nodeagent.io/local-nvme",
		CapacityResource:  "",
		AllowNoDisks:      false,
		ReconcileInterval: time.Minute,
		CommandTimeout:    10 * time.Minute,
	}
}

// IsEnabled implements agent.Config.
func (c *Config) IsEnabled() bool { return c.Enabled }

// Validate reports every problem with its key path.
func (c *Config) Validate() error {
	var errs config.Errors
	if len(c.Disks.Models) == 0 && len(c.Disks.SerialPrefixes) == 0 && len(c.Disks.Devices) == 0 {
		errs.Addf("disks", "must select disks by models, serialPrefixes or devices")
	}
	for i, m := range c.Disks.Models {
		if strings.TrimSpace(m) == "" {
			errs.Addf(fmt.Sprintf("disks.models[%d]", i), "must not be empty")
		}
	}
	for i, p := range c.Disks.SerialPrefixes {
		if strings.TrimSpace(p) == "" {
			errs.Addf(fmt.Sprintf("disks.serialPrefixes[%d]", i), "must not be empty (it would select every disk)")
		}
	}
	for i, d := range c.Disks.Devices {
		n := strings.TrimPrefix(d, "/dev/")
		if n == "" || strings.Contains(n, "/") {
			errs.Addf(fmt.Sprintf("disks.devices[%d]", i), "must be a kernel device name or /dev/NAME, got %q", d)
		}
	}
	if !validMDName(c.Array.Name) {
		errs.Addf("array.name", "must be 1-32 letters, digits, '-' or '_', got %q", c.Array.Name)
	}
	if slices.Contains(c.HostArrays, c.Array.Name) {
		errs.Addf("array.name", "%q is also listed in hostArrays", c.Array.Name)
	}
	if k := c.Array.ChunkKiB; k < 4 || k > 65536 || k&(k-1) != 0 {
		errs.Addf("array.chunkKiB", "must be a power of two from 4 to 65536, got %d", k)
	}
	if c.SingleDisk != SingleDiskFormat && c.SingleDisk != SingleDiskArray {
		errs.Addf("singleDisk", "must be %s or %s, got %q", SingleDiskFormat, SingleDiskArray, c.SingleDisk)
	}
	if c.OnIncomplete != OnIncompleteReport && c.OnIncomplete != OnIncompleteRecreate {
		errs.Addf("onIncomplete", "must be %s or %s, got %q", OnIncompleteReport, OnIncompleteRecreate, c.OnIncomplete)
	}
	switch c.Filesystem.Type {
	case FSXFS:
		if len(c.Filesystem.Label) > 12 {
			errs.Addf("filesystem.label", "must be at most 12 characters for xfs, got %q", c.Filesystem.Label)
		}
	case FSExt4:
		if len(c.Filesystem.Label) > 16 {
			errs.Addf("filesystem.label", "must be at most 16 characters for ext4, got %q", c.Filesystem.Label)
		}
	default:
		errs.Addf("filesystem.type", "must be xfs or ext4, got %q", c.Filesystem.Type)
	}
	if c.Filesystem.Label == "" || strings.ContainsAny(c.Filesystem.Label, " \t\n\"'/") {
		errs.Addf("filesystem.label", "must be a label without spaces, quotes or '/', got %q (it is how nodeagent knows its own filesystem)", c.Filesystem.Label)
	}
	if p := c.Mount.Path; !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		errs.Addf("mount.path", "must be a clean absolute path other than /, got %q", p)
	}
	for i, o := range c.Mount.Options {
		if o == "" || strings.ContainsAny(o, ", \t") {
			errs.Addf(fmt.Sprintf("mount.options[%d]", i), "must be one option without commas or spaces, got %q", o)
		}
	}
	if c.Mount.Namespace != MountNamespaceHost && c.Mount.Namespace != MountNamespaceAgent {
		errs.Addf("mount.namespace", "must be %s or %s, got %q", MountNamespaceHost, MountNamespaceAgent, c.Mount.Namespace)
	}
	seen := map[string]bool{}
	for i, d := range c.Directories {
		p := fmt.Sprintf("directories[%d]", i)
		if d.Path == "" || path.IsAbs(d.Path) || path.Clean(d.Path) != d.Path || d.Path == "." || strings.HasPrefix(d.Path, "..") {
			errs.Addf(p+".path", "must be a clean relative path inside the mount, got %q", d.Path)
		} else if seen[d.Path] {
			errs.Addf(p+".path", "%q is listed twice", d.Path)
		}
		seen[d.Path] = true
		if d.UID < 0 {
			errs.Addf(p+".uid", "must be >= 0, got %d", d.UID)
		}
		if d.GID < 0 {
			errs.Addf(p+".gid", "must be >= 0, got %d", d.GID)
		}
		if _, err := parseMode(d.Mode); err != nil {
			errs.Addf(p+".mode", "%v", err)
		}
	}
	for i, n := range c.HostArrays {
		if !validMDName(n) {
			errs.Addf(fmt.Sprintf("hostArrays[%d]", i), "must be an md array name, got %q", n)
		}
	}
	if c.NodeLabel != "" && len(validation.IsQualifiedName(c.NodeLabel)) > 0 {
		errs.Addf("nodeLabel", "must be a Kubernetes label key like nodeagent.io/local-nvme, got %q: %s", c.NodeLabel, strings.Join(validation.IsQualifiedName(c.NodeLabel), "; "))
	}
	if r := c.CapacityResource; r != "" {
		if p, _, ok := strings.Cut(r, "/"); !ok || len(validation.IsQualifiedName(r)) > 0 || p == "kubernetes.io" || strings.HasSuffix(p, ".kubernetes.io") {
			errs.Addf("capacityResource", "must be an extended resource name with a domain of your own, like nodeagent.io/local-scratch, got %q", r)
		}
	}
	if c.ReconcileInterval < time.Second {
		errs.Addf("reconcileInterval", "must be >= 1s, got %s", c.ReconcileInterval)
	}
	if c.CommandTimeout < time.Second {
		errs.Addf("commandTimeout", "must be >= 1s, got %s", c.CommandTimeout)
	}
	return errs.Err()
}

func validMDName(n string) bool {
	if n == "" || len(n) > 32 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// parseMode parses an octal permission string like "0755".
func parseMode(s string) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("must be an octal mode like \"0755\", got %q", s)
	}
	return uint32(m), nil
}

// mountOptions is the -o argument.
func (c *Config) mountOptions() string {
	opts := slices.Clone(c.Mount.Options)
	if c.Mount.Discard && !slices.Contains(opts, "discard") {
		opts = append(opts, "discard")
	}
	if len(opts) == 0 {
		return "defaults"
	}
	return strings.Join(opts, ",")
}
