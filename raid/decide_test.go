package raid

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestDecide runs discovery and the decision on one fixture tree per row of
// the decision table (README.md "Decisions").
func TestDecide(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, fixture string
		edit          func(*Config)
		action        Action
		layout        string
		members       []string // IDs
		excluded      []string // IDs
		reason        string   // a phrase of the reason
	}{
		{name: "our array running and mounted: nothing to do", fixture: "running_mounted",
			action: ActionNone, layout: LayoutRAID0, members: []string{"AWS11", "AWS12"}, reason: "is mounted at /mnt/k8s-disks/0"},
		{name: "our array running, not mounted: mount it", fixture: "running_unmounted",
			action: ActionMount, layout: LayoutRAID0, members: []string{"AWS11", "AWS12"}, reason: "mounting it at"},
		{name: "our superblocks on every member, not running (reboot): assemble", fixture: "reboot_superblocks",
			action: ActionAssemble, layout: LayoutRAID0, members: []string{"AWS11", "AWS12"}, reason: "assembling it, never creating"},
		{name: "no superblock, no filesystem (fresh or stop/start): create", fixture: "fresh_blank",
			action: ActionCreate, layout: LayoutRAID0, members: []string{"AWS11", "AWS12", "AWS13", "AWS14"}, reason: "creating a RAID0 array"},
		{name: "superblocks on some members only: nothing destructive", fixture: "partial_superblocks",
			action: ActionBlocked, reason: "has 1 of its 2 members here (AWS11=nvme1n1), and 1 blank disk(s) (AWS12=nvme2n1)"},
		{name: "a member missing: nothing destructive", fixture: "member_missing",
			action: ActionBlocked, reason: "has 2 of its 3 members here (AWS11=nvme1n1, AWS12=nvme2n1): a member is missing; RAID0 cannot run"},
		{name: "a member missing with onIncomplete recreate: recreate", fixture: "member_missing",
			edit: func(c *Config) { c.OnIncomplete = OnIncompleteRecreate }, action: ActionRecreate, layout: LayoutRAID0,
			members: []string{"AWS11", "AWS12"}, reason: "onIncomplete is recreate"},
		{name: "superblocks on some members only with recreate: recreate over ours and the blank one", fixture: "partial_superblocks",
			edit: func(c *Config) { c.OnIncomplete = OnIncompleteRecreate }, action: ActionRecreate, layout: LayoutRAID0,
			members: []string{"AWS11", "AWS12"}},
		{name: "a foreign filesystem on a candidate: never touched, reported", fixture: "foreign_filesystem",
			action: ActionCreate, layout: LayoutRAID0, members: []string{"AWS11", "AWS13"}, excluded: []string{"AWS12"},
			reason: `AWS12 (nvme2n1) carries a ext4 filesystem labelled "data" that nodeagent did not make`},
		{name: "a foreign array, running or not, on the candidates: never touched, reported", fixture: "foreign_array",
			action: ActionNoDisks, excluded: []string{"AWS11", "AWS12"}, reason: `member of another array, md0 (scratch)`},
		{name: "mounted or partitioned disks are left alone", fixture: "in_use",
			action: ActionNoDisks, excluded: []string{"AWS11", "AWS12"}, reason: "partitioned (nvme1n1p1)"},
		{name: "one disk: formatted directly", fixture: "single_disk",
			action: ActionFormat, layout: LayoutDisk, members: []string{"AWS11"}, reason: "one blank disk"},
		{name: "one disk with singleDisk array: a one-member array", fixture: "single_disk",
			edit: func(c *Config) { c.SingleDisk = SingleDiskArray }, action: ActionCreate, layout: LayoutRAID0, members: []string{"AWS11"}},
		{name: "one disk with our filesystem, mounted: nothing to do", fixture: "single_disk_mounted",
			action: ActionNone, layout: LayoutDisk, members: []string{"AWS11"}, reason: "nodeagent's filesystem on disk AWS11"},
		{name: "the EKS AMI's array, mounted: adopted as is", fixture: "host_array_eks",
			action: ActionAdopt, layout: LayoutRAID0, members: []string{"AWS11", "AWS12"}, reason: `the host's array "kubernetes" md127 (2 disks, xfs) is mounted`},
		{name: "Bottlerocket's array, not mounted: adopted and mounted", fixture: "host_array_bottlerocket",
			action: ActionAdopt, layout: LayoutRAID0, members: []string{"AWS11", "AWS12"}, reason: `the host's array "ephemeral" md127 (2 disks, xfs) is running: mounting it`},
		{name: "no instance-store disk (EBS only): not ready", fixture: "no_disks",
			action: ActionNoDisks, reason: `no disk matches the selection (models ["Amazon EC2 NVMe Instance Storage"])`},
		{name: "the mount path holds something else: nothing touched", fixture: "mount_path_taken",
			action: ActionBlocked, reason: "/mnt/k8s-disks/0 already has tmpfs (tmpfs) mounted"},
		{name: "selected by serial prefix", fixture: "fresh_blank",
			edit: func(c *Config) { c.Disks.Models = nil; c.Disks.SerialPrefixes = []string{"AWS13", "AWS14"} }, action: ActionCreate, members: []string{"AWS13", "AWS14"}},
		{name: "selected by device list", fixture: "fresh_blank",
			edit: func(c *Config) { c.Disks.Models = nil; c.Disks.Devices = []string{"/dev/nvme4n1"} }, action: ActionFormat, members: []string{"AWS11"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			host := fixture(t, tc.fixture)
			cfg := DefaultConfig()
			if tc.edit != nil {
				tc.edit(cfg)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			run := &fakeHost{t: t, host: host}
			st, err := Discover(context.Background(), cfg, host, run)
			if err != nil {
				t.Fatal(err)
			}
			d := Decide(cfg, st)
			if d.Action != tc.action {
				t.Errorf("action %s, want %s; reason: %s", d.Action, tc.action, d.Reason)
			}
			if tc.layout != "" && d.Layout != tc.layout {
				t.Errorf("layout %q, want %q", d.Layout, tc.layout)
			}
			if tc.members != nil && !slices.Equal(ids(d.Members), tc.members) {
				t.Errorf("members %v, want %v", ids(d.Members), tc.members)
			}
			var ex []string
			for _, e := range d.Excluded {
				ex = append(ex, e.Disk.ID())
			}
			if !slices.Equal(ex, tc.excluded) {
				t.Errorf("excluded %v, want %v (%s)", ex, tc.excluded, d.Reason)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q does not say %q", d.Reason, tc.reason)
			}
			// Discovery only reads.
			for _, c := range run.cmds {
				if !strings.HasPrefix(c, "blkid -p") && !strings.HasPrefix(c, "mdadm --examine") && !strings.HasPrefix(c, "mdadm --detail") {
					t.Errorf("discovery ran %q", c)
				}
			}
		})
	}
}

func ids(ds []Disk) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID())
	}
	return out
}
