package raid

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/nodeagent/nodeagent/agent/hostexec"
	"github.com/nodeagent/nodeagent/agent/hostpath"
)

// Disk is one selected block device, as discovery found it.
type Disk struct {
	// Name is the kernel name (nvme1n1): it changes across boots, so it is
	// only used to reach the device now, never to identify it.
	Name string `json:"name"`
	// Model and Serial are from /sys/block/NAME/device, trimmed.
	Model  string `json:"model,omitempty"`
	Serial string `json:"serial,omitempty"`
	// Dev is "major:minor".
	Dev       string `json:"dev"`
	SizeBytes uint64 `json:"sizeBytes"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
	// Partitions, Holders (md/dm devices on top of it) and MountedAt (its
	// mount points, or its partitions') are what makes a disk in use.
	Partitions []string  `json:"partitions,omitempty"`
	Holders    []string  `json:"holders,omitempty"`
	MountedAt  []string  `json:"mountedAt,omitempty"`
	Sig        Signature `json:"signature"`
}

// ID is the disk's stable identity: its serial, else its kernel name (loop
// devices and some virtual disks have no serial).
func (d Disk) ID() string {
	if d.Serial != "" {
		return d.Serial
	}
	return d.Name
}

// Signature is what blkid (and, for md members, mdadm --examine) found on a
// device. The zero value means nothing: a blank device.
type Signature struct {
	// Type is blkid's TYPE (xfs, ext4, linux_raid_member, ...) or, for a
	// partition table, "partition table <PTTYPE>".
	Type  string `json:"type,omitempty"`
	Label string `json:"label,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	// MD* describe an md superblock: the array's name without homehost,
	// its UUID, level and number of members.
	MDName    string `json:"mdName,omitempty"`
	MDUUID    string `json:"mdUUID,omitempty"`
	MDLevel   string `json:"mdLevel,omitempty"`
	MDDevices int    `json:"mdDevices,omitempty"`
}

// Blank reports whether nothing was found.
func (s Signature) Blank() bool { return s.Type == "" }

// IsMD reports an md superblock.
func (s Signature) IsMD() bool { return s.Type == "linux_raid_member" }

// Array is one md device.
type Array struct {
	Name string `json:"name"` // md127
	Dev  string `json:"dev"`
	// MDName is the array's name without homehost (from mdadm --detail).
	MDName    string    `json:"mdName,omitempty"`
	UUID      string    `json:"uuid,omitempty"`
	Level     string    `json:"level,omitempty"`
	State     string    `json:"state,omitempty"` // md/array_state: clean, active, inactive, ...
	RaidDisks int       `json:"raidDisks,omitempty"`
	Members   []string  `json:"members,omitempty"` // kernel names
	SizeBytes uint64    `json:"sizeBytes"`
	FS        Signature `json:"filesystem"`
	MountedAt []string  `json:"mountedAt,omitempty"`
}

// Running reports an array the kernel serves I/O on.
func (a Array) Running() bool {
	switch a.State {
	case "clean", "active", "active-idle", "write-pending", "read-auto", "readonly":
		return true
	}
	return false
}

// Mount is one mount in the namespace the feature mounts in; Point is the
// host path.
type Mount struct {
	Dev    string `json:"dev"`
	Point  string `json:"point"`
	FSType string `json:"fsType"`
	Source string `json:"source"`
}

// State is everything the decision is made from.
type State struct {
	// Disks are the selected disks, sorted by ID.
	Disks []Disk `json:"disks"`
	// Arrays are the md devices over selected disks or mounted at the mount
	// path.
	Arrays []Array `json:"arrays"`
	// AtPath is what is mounted at the configured path, if anything.
	AtPath *Mount `json:"atPath,omitempty"`
}

// sysBlock is one /sys/block entry as read from sysfs, before probing.
type sysBlock struct {
	name, dev, model, serial string
	size                     uint64
	ro                       bool
	partitions, holders      []string
	partDevs                 []string
	// md only
	md        bool
	state     string
	level     string
	raidDisks int
	uuid      string
	slaves    []string
}

// readSysBlock reads /sys/block below the host root.
func readSysBlock(host hostpath.Paths) ([]sysBlock, error) {
	dir := host.Sys("block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("raid: list block devices: %w", err)
	}
	var out []sysBlock
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(dir, name)
		b := sysBlock{name: name, dev: readTrim(p, "dev"), model: readTrim(p, "device", "model"), serial: readTrim(p, "device", "serial")}
		if sectors, err := strconv.ParseUint(readTrim(p, "size"), 10, 64); err == nil {
			b.size = sectors * 512
		}
		b.ro = readTrim(p, "ro") == "1"
		b.holders = listDir(filepath.Join(p, "holders"))
		if sub, err := os.ReadDir(p); err == nil {
			for _, s := range sub {
				if strings.HasPrefix(s.Name(), name) {
					if _, err := os.Stat(filepath.Join(p, s.Name(), "partition")); err == nil {
						b.partitions = append(b.partitions, s.Name())
						b.partDevs = append(b.partDevs, readTrim(p, s.Name(), "dev"))
						b.holders = append(b.holders, listDir(filepath.Join(p, s.Name(), "holders"))...)
					}
				}
			}
		}
		if _, err := os.Stat(filepath.Join(p, "md")); err == nil {
			b.md = true
			b.state = readTrim(p, "md", "array_state")
			b.level = readTrim(p, "md", "level")
			b.raidDisks, _ = strconv.Atoi(readTrim(p, "md", "raid_disks"))
			b.uuid = readTrim(p, "md", "uuid")
			b.slaves = listDir(filepath.Join(p, "slaves"))
		}
		out = append(out, b)
	}
	return out, nil
}

func readTrim(elem ...string) string {
	b, err := os.ReadFile(filepath.Join(elem...))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func listDir(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// selected reports whether the config picks this device.
func (c *DisksConfig) selected(b sysBlock) bool {
	if b.md {
		return false
	}
	for _, d := range c.Devices {
		if strings.TrimPrefix(d, "/dev/") == b.name {
			return true
		}
	}
	if b.model != "" && slices.Contains(c.Models, b.model) {
		return true
	}
	for _, p := range c.SerialPrefixes {
		if b.serial != "" && strings.HasPrefix(b.serial, p) {
			return true
		}
	}
	return false
}

// readMounts reads the mount table of the namespace the feature mounts in,
// with mount points as host paths.
func readMounts(host hostpath.Paths, ns string) ([]Mount, error) {
	fs, err := procfs.NewFS(host.Proc())
	if err != nil {
		return nil, fmt.Errorf("raid: %w", err)
	}
	var p procfs.Proc
	if ns == MountNamespaceHost {
		p, err = fs.Proc(1)
	} else {
		p, err = fs.Self()
	}
	if err != nil {
		return nil, fmt.Errorf("raid: read mounts: %w", err)
	}
	infos, err := p.MountInfo()
	if err != nil {
		return nil, fmt.Errorf("raid: read mounts: %w", err)
	}
	root := filepath.Clean(host.Path())
	out := make([]Mount, 0, len(infos))
	for _, mi := range infos {
		point := mi.MountPoint
		if ns != MountNamespaceHost && root != "/" {
			rel, ok := strings.CutPrefix(point, root)
			if !ok || (rel != "" && rel[0] != '/') {
				continue
			}
			point = "/" + strings.TrimPrefix(rel, "/")
		}
		out = append(out, Mount{Dev: mi.MajorMinorVer, Point: point, FSType: mi.FSType, Source: mi.Source})
	}
	return out, nil
}

// Discover reads sysfs and the mount table below the host root and probes
// the selected disks that are not in use (blkid -p, and mdadm --examine for
// md members) and the md arrays over them (mdadm --detail, blkid). It only
// reads: nothing it runs writes to a device.
func Discover(ctx context.Context, cfg *Config, host hostpath.Paths, run hostexec.Runner) (*State, error) {
	blocks, err := readSysBlock(host)
	if err != nil {
		return nil, err
	}
	mounts, err := readMounts(host, cfg.Mount.Namespace)
	if err != nil {
		return nil, err
	}
	mountedAt := func(devs ...string) []string {
		var pts []string
		for _, m := range mounts {
			if slices.Contains(devs, m.Dev) {
				pts = append(pts, m.Point)
			}
		}
		return pts
	}
	st := &State{}
	for i := len(mounts) - 1; i >= 0; i-- { // the last mount on a path is the one seen
		if mounts[i].Point == cfg.Mount.Path {
			m := mounts[i]
			st.AtPath = &m
			break
		}
	}
	p := prober{run: run, host: host, timeout: cfg.CommandTimeout}
	byName := map[string]sysBlock{}
	for _, b := range blocks {
		byName[b.name] = b
	}
	inUse := map[string]bool{}
	for _, b := range blocks {
		if !cfg.Disks.selected(b) {
			continue
		}
		d := Disk{Name: b.name, Model: b.model, Serial: b.serial, Dev: b.dev, SizeBytes: b.size, ReadOnly: b.ro,
			Partitions: b.partitions, Holders: b.holders, MountedAt: mountedAt(append([]string{b.dev}, b.partDevs...)...)}
		if len(d.Holders) == 0 && len(d.Partitions) == 0 {
			if d.Sig, err = p.signature(ctx, b.name); err != nil {
				return nil, err
			}
		}
		for _, h := range d.Holders {
			inUse[h] = true
		}
		st.Disks = append(st.Disks, d)
	}
	slices.SortFunc(st.Disks, func(a, b Disk) int { return strings.Compare(a.ID(), b.ID()) })
	for _, b := range blocks {
		if !b.md || !(inUse[b.name] || (st.AtPath != nil && st.AtPath.Dev == b.dev)) {
			continue
		}
		a := Array{Name: b.name, Dev: b.dev, UUID: b.uuid, Level: b.level, State: b.state, RaidDisks: b.raidDisks,
			Members: b.slaves, SizeBytes: b.size, MountedAt: mountedAt(b.dev)}
		if err := p.detail(ctx, &a); err != nil {
			return nil, err
		}
		if a.Running() {
			if a.FS, err = p.signature(ctx, b.name); err != nil {
				return nil, err
			}
		}
		st.Arrays = append(st.Arrays, a)
	}
	return st, nil
}

// prober runs the read-only probes.
type prober struct {
	run     hostexec.Runner
	host    hostpath.Paths
	timeout time.Duration
}

// signature runs blkid -p on a device, and mdadm --examine on md members.
func (p prober) signature(ctx context.Context, name string) (Signature, error) {
	dev := p.host.Dev(name)
	c := blkidCmd(dev)
	c.Timeout = p.timeout
	out, err := p.run.Run(ctx, c)
	var ee *hostexec.ExitError
	if errors.As(err, &ee) && ee.ExitCode == 2 { // blkid: nothing found
		return Signature{}, nil
	}
	if err != nil {
		return Signature{}, fmt.Errorf("raid: probe %s: %w", name, err)
	}
	sig := parseBlkid(out)
	if sig.IsMD() {
		c := examineCmd(dev)
		c.Timeout = p.timeout
		out, err := p.run.Run(ctx, c)
		if err != nil {
			return Signature{}, fmt.Errorf("raid: read the md superblock on %s: %w", name, err)
		}
		kv := parseExport(out)
		sig.MDName = stripHomehost(kv["MD_NAME"])
		sig.MDUUID = kv["MD_UUID"]
		sig.MDLevel = kv["MD_LEVEL"]
		sig.MDDevices, _ = strconv.Atoi(kv["MD_DEVICES"])
	}
	return sig, nil
}

// detail fills an array's name and UUID from mdadm --detail.
func (p prober) detail(ctx context.Context, a *Array) error {
	c := detailCmd(p.host.Dev(a.Name))
	c.Timeout = p.timeout
	out, err := p.run.Run(ctx, c)
	if err != nil {
		if !a.Running() {
			return nil // an inactive array may not answer; sysfs said enough
		}
		return fmt.Errorf("raid: read array %s: %w", a.Name, err)
	}
	kv := parseExport(out)
	a.MDName = stripHomehost(kv["MD_NAME"])
	if u := kv["MD_UUID"]; u != "" {
		a.UUID = u
	}
	if l := kv["MD_LEVEL"]; l != "" {
		a.Level = l
	}
	return nil
}

// parseExport parses KEY=value lines (blkid -o export, mdadm --export).
func parseExport(out []byte) map[string]string {
	kv := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			kv[k] = v
		}
	}
	return kv
}

func parseBlkid(out []byte) Signature {
	kv := parseExport(out)
	s := Signature{Type: kv["TYPE"], Label: kv["LABEL"], UUID: kv["UUID"]}
	if s.Type == "" && kv["PTTYPE"] != "" {
		s.Type = "partition table " + kv["PTTYPE"]
	}
	if s.Type == "" && len(kv) > 1 { // something blkid names without a TYPE
		s.Type = "unknown signature"
	}
	return s
}

// stripHomehost turns "any:nodeagent" or "ip-10-0-0-1:kubernetes" into the name.
func stripHomehost(n string) string {
	if _, name, ok := strings.Cut(n, ":"); ok {
		return name
	}
	return n
}
