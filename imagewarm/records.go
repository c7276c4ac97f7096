package imagewarm

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The labels CRI puts on the image records it manages.
const (
	labelManaged      = "io.cri-containerd.image"
	labelManagedValue = "managed"
	// labelPinned keeps an image from kubelet's image GC (containerd >= 1.7.3
	// reports it as Image.pinned).
	labelPinned      = "io.cri-containerd.pinned"
	labelPinnedValue = "pinned"
)

// recordLabels are the labels on every record of an image.
func recordLabels(pin bool) map[string]string {
	l := map[string]string{labelManaged: labelManagedValue}
	if pin {
		l[labelPinned] = labelPinnedValue
	}
	return l
}

// recordNames are the names CRI's PullImage gives an image besides the
// reference pulled: the image ID (config digest), repo:tag when the
// reference has a tag, and repo@manifest-digest (what a pod naming
// image@sha256:... looks up). Order as CRI creates them.
func recordNames(named reference.Named, target, config digest.Digest) []string {
	names := []string{config.String()}
	if tagged, ok := named.(reference.Tagged); ok {
		names = append(names, tagged.String())
	}
	return append(names, named.Name()+"@"+target.String())
}

// ensureRecords creates or corrects each record as CRI's
// createImageReference does: same target, the managed label, and the
// pinned label when asked. A record that already says so is left alone.
func ensureRecords(ctx context.Context, store images.Store, names []string, target ocispec.Descriptor, pin bool) error {
	labels := recordLabels(pin)
	for _, name := range names {
		if err := ensureRecord(ctx, store, images.Image{Name: name, Target: target, Labels: labels}); err != nil {
			return fmt.Errorf("image record %s: %w", name, err)
		}
	}
	return nil
}

func ensureRecord(ctx context.Context, store images.Store, img images.Image) error {
	for {
		if _, err := store.Create(ctx, img); err == nil || !errdefs.IsAlreadyExists(err) {
			return err
		}
		old, err := store.Get(ctx, img.Name)
		if errdefs.IsNotFound(err) {
			continue // removed in between: create again
		}
		if err != nil {
			return err
		}
		paths := []string{}
		if old.Target.Digest != img.Target.Digest || old.Target.MediaType != img.Target.MediaType || old.Target.Size != img.Target.Size {
			paths = append(paths, "target")
		}
		for k, v := range img.Labels {
			if old.Labels[k] != v {
				paths = append(paths, "labels."+k)
			}
		}
		if len(paths) == 0 {
			return nil
		}
		_, err = store.Update(ctx, img, paths...)
		if errdefs.IsNotFound(err) {
			continue
		}
		return err
	}
}

// ensureRecordExact creates img or replaces the existing record's target
// and labels with img's, as client.Pull does for the reference pulled.
func ensureRecordExact(ctx context.Context, store images.Store, img images.Image) error {
	for {
		_, err := store.Create(ctx, img)
		if err == nil || !errdefs.IsAlreadyExists(err) {
			return err
		}
		_, err = store.Update(ctx, img)
		if !errdefs.IsNotFound(err) {
			return err
		}
	}
}
