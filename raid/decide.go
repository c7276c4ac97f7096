package raid

import (
	"fmt"
	"slices"
	"strings"
)

// Action is what Ensure does about what Discover found.
type Action string

// Actions, from the decision table in README.md.
const (
	// ActionNone: our array (or disk) is there and mounted.
	ActionNone Action = "none"
	// ActionMount: our array or disk is there but not mounted at the path.
	ActionMount Action = "mount"
	// ActionAssemble: every member carries our superblock, the array is not
	// running (a reboot): assemble it, never create.
	ActionAssemble Action = "assemble"
	// ActionCreate: every candidate is blank (a new node, or stop/start gave
	// blank disks): create the array, make the filesystem, mount.
	ActionCreate Action = "create"
	// ActionRecreate: our array is incomplete and onIncomplete is recreate.
	ActionRecreate Action = "recreate"
	// ActionFormat: one blank disk: a filesystem on it directly.
	ActionFormat Action = "format"
	// ActionAdopt: an array the AMI made (nodeadm, Bottlerocket) is there:
	// used as it is, mounted at the path if it is not.
	ActionAdopt Action = "adopt"
	// ActionBlocked: something is wrong that only a person should fix;
	// nothing is touched.
	ActionBlocked Action = "blocked"
	// ActionNoDisks: no selected disk is usable.
	ActionNoDisks Action = "no_disks"
)

// Actions lists every action (metric label values).
var Actions = []Action{ActionNone, ActionMount, ActionAssemble, ActionCreate, ActionRecreate, ActionFormat, ActionAdopt, ActionBlocked, ActionNoDisks}

// Layouts, the Node label's value.
const (
	LayoutRAID0 = "raid0"
	LayoutDisk  = "disk"
)

// Decision is what to do, and why, in words an SRE reads at 3 a.m.
type Decision struct {
	Action Action `json:"action"`
	Reason string `json:"reason"`
	// Layout is raid0 or disk (what will be, or is, mounted).
	Layout string `json:"layout,omitempty"`
	// Members are the disks the array is made of or assembled from (or the
	// one disk), sorted by ID.
	Members []Disk `json:"members,omitempty"`
	// Array is the existing array used (none, mount, adopt).
	Array *Array `json:"array,omitempty"`
	// Device is the kernel name to mount, when already known.
	Device string `json:"device,omitempty"`
	// UUID is the array to assemble.
	UUID string `json:"uuid,omitempty"`
	// Excluded are selected disks left alone, each with the reason.
	Excluded []Excluded `json:"excluded,omitempty"`
	// Unused are blank disks not needed by the decision (e.g. a disk next
	// to a complete array).
	Unused []Disk `json:"unused,omitempty"`
}

// Excluded is a selected disk left alone.
type Excluded struct {
	Disk Disk   `json:"disk"`
	Why  string `json:"why"`
}

// Ready reports whether the decision means the mount is usable once done.
func (d Decision) Ready() bool {
	switch d.Action {
	case ActionBlocked, ActionNoDisks:
		return false
	}
	return true
}

// Decide is the decision table: a pure function of the config and what is
// on the disks. It never depends on a marker file, so a stop/start (blank
// disks under an old root volume) and a reboot (our superblocks, nothing
// running) are told apart by the disks themselves.
func Decide(cfg *Config, st *State) Decision {
	name := cfg.Array.Name
	byName := map[string]*Array{}
	for i := range st.Arrays {
		byName[st.Arrays[i].Name] = &st.Arrays[i]
	}

	atPath := func(dev string) bool { return st.AtPath != nil && st.AtPath.Dev == dev }
	var d Decision
	var blank, ourSB, ourFS []Disk
	ourArrays := map[string]*Array{}
	hostArrays := map[string]*Array{}
	for _, disk := range st.Disks {
		why := ""
		switch {
		case len(disk.Holders) > 0:
			a := arrayOf(disk, byName)
			switch {
			case a != nil && a.MDName == name:
				ourArrays[a.Name] = a
				continue
			case a != nil && slices.Contains(cfg.HostArrays, a.MDName):
				hostArrays[a.Name] = a
				continue
			case a != nil:
				why = fmt.Sprintf("member of another array, %s (%s), which nodeagent did not make", a.Name, orUnnamed(a.MDName))
			default:
				why = fmt.Sprintf("in use by %s", strings.Join(disk.Holders, ", "))
			}
		case len(disk.MountedAt) > 0 && isOurFS(cfg, disk.Sig) && atPath(disk.Dev):
			ourFS = append(ourFS, disk) // our disk, mounted already
			continue
		case len(disk.MountedAt) > 0:
			why = fmt.Sprintf("mounted at %s", strings.Join(disk.MountedAt, ", "))
		case len(disk.Partitions) > 0:
			why = fmt.Sprintf("partitioned (%s)", strings.Join(disk.Partitions, ", "))
		case disk.ReadOnly:
			why = "read-only"
		case disk.Sig.Blank():
			blank = append(blank, disk)
			continue
		case disk.Sig.IsMD() && disk.Sig.MDName == name:
			ourSB = append(ourSB, disk)
			continue
		case disk.Sig.IsMD():
			why = fmt.Sprintf("carries the superblock of another md array, %q (%s, %d disks), which nodeagent did not make", orUnnamed(disk.Sig.MDName), disk.Sig.MDLevel, disk.Sig.MDDevices)
		case isOurFS(cfg, disk.Sig):
			ourFS = append(ourFS, disk)
			continue
		default:
			why = fmt.Sprintf("carries %s%s that nodeagent did not make", article(disk.Sig.Type), labelled(disk.Sig.Label))
		}
		d.Excluded = append(d.Excluded, Excluded{Disk: disk, Why: why})
	}
	excludedNote := ""
	if len(d.Excluded) > 0 {
		var parts []string
		for _, e := range d.Excluded {
			parts = append(parts, fmt.Sprintf("%s (%s) %s", e.Disk.ID(), e.Disk.Name, e.Why))
		}
		excludedNote = "; left alone: " + strings.Join(parts, "; ")
	}
	members := func(a *Array) []Disk {
		var out []Disk
		for _, disk := range st.Disks {
			if slices.Contains(a.Members, disk.Name) {
				out = append(out, disk)
			}
		}
		return out
	}
	used := func(a *Array, what string, action Action) Decision {
		d.Array, d.Device, d.Layout, d.Members = a, a.Name, LayoutRAID0, members(a)
		d.Unused = blank
		switch {
		case !a.Running():
			d.Action = ActionBlocked
			d.Reason = fmt.Sprintf("%s %s is %s, not running (a member missing?); nothing was changed", what, a.Name, orUnnamed(a.State))
		case a.FS.Blank():
			d.Action = ActionBlocked
			d.Reason = fmt.Sprintf("%s %s has no filesystem; nodeagent formats only arrays it has just created, so nothing was changed", what, a.Name)
		case atPath(a.Dev):
			d.Action = ActionNone
			if action == ActionAdopt {
				d.Action = ActionAdopt
			}
			d.Reason = fmt.Sprintf("%s %s (%d disks, %s) is mounted at %s", what, a.Name, len(a.Members), a.FS.Type, cfg.Mount.Path)
		case st.AtPath != nil:
			d.Action = ActionBlocked
			d.Reason = fmt.Sprintf("%s %s is running, but %s already has %s (%s) mounted; nothing was changed", what, a.Name, cfg.Mount.Path, st.AtPath.Source, st.AtPath.FSType)
		default:
			d.Action = action
			d.Reason = fmt.Sprintf("%s %s (%d disks, %s) is running: mounting it at %s", what, a.Name, len(a.Members), a.FS.Type, cfg.Mount.Path)
		}
		d.Reason += excludedNote
		return d
	}

	// 1. Our array is running: use it.
	if len(ourArrays) > 1 {
		return blocked(d, fmt.Sprintf("%d arrays named %q are running (%s); nothing was changed", len(ourArrays), name, strings.Join(sortedKeys(ourArrays), ", "))+excludedNote)
	}
	for _, a := range ourArrays {
		return used(a, "nodeagent's array", ActionMount)
	}
	// 2. An array the AMI made (nodeadm's kubernetes, Bottlerocket's
	// ephemeral), or any array already mounted at our path: provided by
	// the host, used as is.
	if len(hostArrays) > 1 {
		return blocked(d, fmt.Sprintf("%d host arrays over the selected disks (%s); nothing was changed", len(hostArrays), strings.Join(sortedKeys(hostArrays), ", "))+excludedNote)
	}
	for _, a := range hostArrays {
		return used(a, fmt.Sprintf("the host's array %q", a.MDName), ActionAdopt)
	}
	if st.AtPath != nil {
		for i := range st.Arrays {
			if a := &st.Arrays[i]; a.Dev == st.AtPath.Dev {
				return used(a, fmt.Sprintf("the host's array %q", orUnnamed(a.MDName)), ActionAdopt)
			}
		}
	}
	// 3. Our filesystem on a single disk.
	if len(ourFS) > 1 {
		return blocked(d, fmt.Sprintf("%d disks carry a %s filesystem labelled %q; nothing was changed", len(ourFS), cfg.Filesystem.Type, cfg.Filesystem.Label)+excludedNote)
	}
	if len(ourFS) == 1 {
		disk := ourFS[0]
		d.Members, d.Device, d.Layout, d.Unused = ourFS, disk.Name, LayoutDisk, blank
		switch {
		case atPath(disk.Dev):
			d.Action, d.Reason = ActionNone, fmt.Sprintf("nodeagent's filesystem on disk %s (%s) is mounted at %s", disk.ID(), disk.Name, cfg.Mount.Path)
		case st.AtPath != nil:
			return blocked(d, fmt.Sprintf("%s already has %s (%s) mounted; nothing was changed", cfg.Mount.Path, st.AtPath.Source, st.AtPath.FSType)+excludedNote)
		default:
			d.Action, d.Reason = ActionMount, fmt.Sprintf("disk %s (%s) carries nodeagent's %s filesystem: mounting it at %s", disk.ID(), disk.Name, cfg.Filesystem.Type, cfg.Mount.Path)
		}
		d.Reason += excludedNote
		return d
	}
	if st.AtPath != nil {
		return blocked(d, fmt.Sprintf("%s already has %s (%s) mounted, which is not over the selected disks; nothing was changed", cfg.Mount.Path, st.AtPath.Source, st.AtPath.FSType)+excludedNote)
	}
	// 4. Our superblocks on disks, no array running: a reboot.
	if len(ourSB) > 0 {
		uuids := map[string]bool{}
		for _, disk := range ourSB {
			uuids[disk.Sig.MDUUID] = true
		}
		if len(uuids) > 1 {
			return blocked(d, fmt.Sprintf("the disks carry superblocks of %d different arrays named %q (%s); nothing was changed", len(uuids), name, diskList(ourSB))+excludedNote)
		}
		want := ourSB[0].Sig.MDDevices
		if len(ourSB) == want {
			d.Action, d.Layout, d.Members, d.UUID, d.Unused = ActionAssemble, LayoutRAID0, ourSB, ourSB[0].Sig.MDUUID, blank
			d.Reason = fmt.Sprintf("all %d members of nodeagent's array carry its superblock and it is not running (a reboot): assembling it, never creating (%s)", want, diskList(ourSB)) + excludedNote
			return d
		}
		missing := fmt.Sprintf("nodeagent's array %s has %d of its %d members here (%s)", ourSB[0].Sig.MDUUID, len(ourSB), want, diskList(ourSB))
		if len(blank) > 0 {
			missing += fmt.Sprintf(", and %d blank disk(s) (%s): disks were replaced or wiped", len(blank), diskList(blank))
		} else {
			missing += ": a member is missing"
		}
		if cfg.OnIncomplete == OnIncompleteRecreate {
			d.Action, d.Members = ActionRecreate, sortedDisks(append(slices.Clone(ourSB), blank...))
			d.Layout = layoutFor(cfg, len(d.Members))
			d.Reason = missing + "; a RAID0 without all members has lost its data, and onIncomplete is recreate: wiping nodeagent's superblocks and creating the array again" + excludedNote
			return d
		}
		return blocked(d, missing+"; RAID0 cannot run without every member, and nothing was changed (the other members' data is kept). Bring the disk back, or set onIncomplete: recreate to start over"+excludedNote)
	}
	// 5. Only blank disks: a new node, or a stop/start.
	if len(blank) == 0 {
		d.Action = ActionNoDisks
		if len(st.Disks) == 0 {
			d.Reason = "no disk matches the selection (" + selection(cfg) + ")"
		} else {
			d.Reason = "no usable disk" + strings.Replace(excludedNote, "; left alone: ", ": left alone: ", 1)
		}
		return d
	}
	d.Members, d.Layout = blank, layoutFor(cfg, len(blank))
	if d.Layout == LayoutDisk {
		d.Action = ActionFormat
		d.Reason = fmt.Sprintf("one blank disk (%s): making a %s filesystem on it directly and mounting it at %s", diskList(blank), cfg.Filesystem.Type, cfg.Mount.Path) + excludedNote
		return d
	}
	d.Action = ActionCreate
	d.Reason = fmt.Sprintf("%d blank disks, no superblock and no filesystem on any (a new node, or a stop/start gave blank disks): creating a RAID0 array, %s, mounting it at %s (%s)", len(blank), cfg.Filesystem.Type, cfg.Mount.Path, diskList(blank)) + excludedNote
	return d
}

func blocked(d Decision, reason string) Decision {
	d.Action, d.Reason = ActionBlocked, reason
	return d
}

func layoutFor(cfg *Config, n int) string {
	if n == 1 && cfg.SingleDisk == SingleDiskFormat {
		return LayoutDisk
	}
	return LayoutRAID0
}

// arrayOf returns the md array holding the disk.
func arrayOf(d Disk, arrays map[string]*Array) *Array {
	for _, h := range d.Holders {
		if a, ok := arrays[h]; ok {
			return a
		}
	}
	return nil
}

func isOurFS(cfg *Config, s Signature) bool {
	return s.Type == cfg.Filesystem.Type && s.Label == cfg.Filesystem.Label
}

func diskList(ds []Disk) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.ID() + "=" + d.Name
	}
	return strings.Join(parts, ", ")
}

func sortedDisks(ds []Disk) []Disk {
	slices.SortFunc(ds, func(a, b Disk) int { return strings.Compare(a.ID(), b.ID()) })
	return ds
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func orUnnamed(s string) string {
	if s == "" {
		return "unnamed"
	}
	return s
}

func article(t string) string {
	if t == "" {
		return "a signature"
	}
	if strings.HasPrefix(t, "partition table") || strings.HasPrefix(t, "unknown") {
		return "a " + t
	}
	return "a " + t + " filesystem"
}

func labelled(l string) string {
	if l == "" {
		return ""
	}
	return fmt.Sprintf(" labelled %q", l)
}

func selection(cfg *Config) string {
	var parts []string
	if len(cfg.Disks.Models) > 0 {
		parts = append(parts, fmt.Sprintf("models %q", cfg.Disks.Models))
	}
	if len(cfg.Disks.SerialPrefixes) > 0 {
		parts = append(parts, fmt.Sprintf("serial prefixes %q", cfg.Disks.SerialPrefixes))
	}
	if len(cfg.Disks.Devices) > 0 {
		parts = append(parts, fmt.Sprintf("devices %q", cfg.Disks.Devices))
	}
	return strings.Join(parts, ", ")
}
