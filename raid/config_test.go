package raid

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/nodeagent/nodeagent/agent/config"
	"github.com/nodeagent/nodeagent/agent/featuretest"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"defaults", "enabled: false", nil},
		{"no selection", "disks: {models: []}", []string{"disks: must select disks by models, serialPrefixes or devices"}},
		{"empty serial prefix", `disks: {serialPrefixes: [""]}`, []string{"disks.serialPrefixes[0]: must not be empty (it would select every disk)"}},
		{"bad device", `disks: {devices: ["/dev/disk/by-id/x"]}`, []string{`disks.devices[0]: must be a kernel device name or /dev/NAME, got "/dev/disk/by-id/x"`}},
		{"bad chunk", "array: {chunkKiB: 100}", []string{"array.chunkKiB: must be a power of two from 4 to 65536, got 100"}},
		{"bad name", "array: {name: 'my array'}", []string{`array.name: must be 1-32 letters, digits, '-' or '_', got "my array"`}},
		{"name of a host array", "array: {name: kubernetes}", []string{`array.name: "kubernetes" is also listed in hostArrays`}},
		{"bad enums", "singleDisk: raid\nonIncomplete: wipe\nfilesystem: {type: btrfs}\nmount: {namespace: pod}", []string{
			`singleDisk: must be format or array, got "raid"`, `onIncomplete: must be report or recreate, got "wipe"`,
			`filesystem.type: must be xfs or ext4, got "btrfs"`, `mount.namespace: must be host or agent, got "pod"`}},
		{"xfs label too long", "filesystem: {label: nodeagent-scratch}", []string{`filesystem.label: must be at most 12 characters for xfs`}},
		{"relative mount path", "mount: {path: mnt/x}", []string{`mount.path: must be a clean absolute path other than /, got "mnt/x"`}},
		{"option with comma", "mount: {options: ['noatime,nodev']}", []string{`mount.options[0]: must be one option without commas or spaces`}},
		{"bad directories", "directories: [{path: ../etc, mode: '0755'}, {path: spark, uid: -1, mode: '755x'}, {path: spark, mode: '0755'}]", []string{
			`directories[0].path: must be a clean relative path inside the mount, got "../etc"`, "directories[1].uid: must be >= 0, got -1",
			`directories[1].mode: must be an octal mode like "0755", got "755x"`, `directories[2].path: "spark" is listed twice`}},
		{"bad label key", "nodeLabel: 'a b'", []string{`nodeLabel: must be a Kubernetes label key`}},
		{"intervals", "reconcileInterval: 100ms\ncommandTimeout: 0s", []string{"reconcileInterval: must be >= 1s, got 100ms", "commandTimeout: must be >= 1s, got 0s"}},
		{"capacity resource without a domain", "capacityResource: scratch", []string{`capacityResource: must be an extended resource name with a domain of your own`}},
		{"capacity resource in kubernetes.io", "capacityResource: kubernetes.io/scratch", []string{`capacityResource: must be an extended resource name`}},
		{"unknown key", "mount: {pth: /x}", []string{"raid.mount.pth: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var node yaml.Node
			if err := yaml.Unmarshal([]byte(tc.yaml), &node); err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig()
			err := config.Decode(&node, cfg, "raid")
			if err == nil {
				err = cfg.Validate()
			}
			got := ""
			if err != nil {
				got = err.Error()
			}
			if tc.want == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("error does not say %q:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "\n") + 1; err != nil && n != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%s", n, len(tc.want), got)
			}
		})
	}
}

// TestShippedDefaults: the raid section of the chart's default config
// decodes to DefaultConfig().
func TestShippedDefaults(t *testing.T) {
	t.Parallel()
	got := DefaultConfig()
	got.Array.ChunkKiB = -1 // must be overwritten by the file
	featuretest.ShippedDefaults(t, "../deploy/helm/nodeagent/files/config.yaml", "raid", got, DefaultConfig())
}
