package imagewarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criSettings is what the CRI plugin's config says about what a pull leaves
// behind, read from its runtime status (verbose info "config").
type criSettings struct {
	// Snapshotter CRI unpacks into ("overlayfs", "soci", ...).
	Snapshotter string
	// DiscardUnpackedLayers lets GC drop layer blobs once unpacked.
	DiscardUnpackedLayers bool
	// DisableSnapshotAnnotations: when false, CRI passes image info to the
	// snapshotter as snapshot labels (stargz, soci need them).
	DisableSnapshotAnnotations bool
	// RegistryConfigPath is CRI's registry.config_path (hosts.toml dirs).
	RegistryConfigPath string
	// RootDir is containerd's root (the content store is below it).
	RootDir string
}

// criConfigJSON is the part of the CRI plugin config the status shows.
// containerd 1.6/1.7 put the image settings under "containerd"; 2.x keeps
// a per-runtime snapshotter there too.
type criConfigJSON struct {
	Containerd struct {
		Snapshotter                string `json:"snapshotter"`
		DefaultRuntimeName         string `json:"defaultRuntimeName"`
		DiscardUnpackedLayers      bool   `json:"discardUnpackedLayers"`
		DisableSnapshotAnnotations bool   `json:"disableSnapshotAnnotations"`
		Runtimes                   map[string]struct {
			Snapshotter string `json:"snapshotter"`
		} `json:"runtimes"`
	} `json:"containerd"`
	Registry struct {
		ConfigPath string `json:"configPath"`
	} `json:"registry"`
	ContainerdRootDir string `json:"containerdRootDir"`
	// containerd 2.x image service settings, when shown.
	Snapshotter                *string `json:"snapshotter"`
	DiscardUnpackedLayers      *bool   `json:"discardUnpackedLayers"`
	DisableSnapshotAnnotations *bool   `json:"disableSnapshotAnnotations"`
}

// readCRISettings asks the CRI on conn for its runtime status.
func readCRISettings(ctx context.Context, conn grpc.ClientConnInterface) (criSettings, error) {
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		return criSettings{}, fmt.Errorf("CRI runtime status: %w", err)
	}
	return parseCRIConfig(resp.GetInfo()["config"])
}

// parseCRIConfig reads the settings out of the status's "config" JSON.
func parseCRIConfig(raw string) (criSettings, error) {
	if raw == "" {
		return criSettings{}, errors.New("CRI runtime status has no config in its info")
	}
	var c criConfigJSON
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return criSettings{}, fmt.Errorf("CRI runtime status config: %w", err)
	}
	s := criSettings{
		Snapshotter:                c.Containerd.Snapshotter,
		DiscardUnpackedLayers:      c.Containerd.DiscardUnpackedLayers,
		DisableSnapshotAnnotations: c.Containerd.DisableSnapshotAnnotations,
		RegistryConfigPath:         c.Registry.ConfigPath,
		RootDir:                    c.ContainerdRootDir,
	}
	if c.Snapshotter != nil && *c.Snapshotter != "" {
		s.Snapshotter = *c.Snapshotter
	}
	if c.DiscardUnpackedLayers != nil {
		s.DiscardUnpackedLayers = *c.DiscardUnpackedLayers
	}
	if c.DisableSnapshotAnnotations != nil {
		s.DisableSnapshotAnnotations = *c.DisableSnapshotAnnotations
	}
	if s.Snapshotter == "" {
		if rt, ok := c.Containerd.Runtimes[c.Containerd.DefaultRuntimeName]; ok {
			s.Snapshotter = rt.Snapshotter
		}
	}
	if s.Snapshotter == "" {
		return criSettings{}, errors.New("CRI runtime status config names no snapshotter; set imagewarm.snapshotter")
	}
	return s, nil
}
