package imagewarm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/transfer"
	"github.com/containerd/containerd/v2/core/unpack"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// matcher is the platform an image is pulled for: its own, else the node's
// (the same default containerd's CRI uses).
func (s *imageState) matcher() platforms.MatchComparer {
	if s.cfg.Platform == "" {
		return platforms.Default()
	}
	return platforms.Only(platforms.MustParse(s.cfg.Platform))
}

// present reports whether the image is complete in containerd as CRI would
// have left it: the pulled reference's record, its content (unless CRI
// discards unpacked layers) and its unpacked snapshot chain. It then makes
// sure the other records exist with the right labels.
func (w *Warmer) present(ctx context.Context, c *ctrd, s *imageState) (bool, error) {
	rec, err := c.images.Get(ctx, s.ref)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if rec.Labels[labelManaged] != labelManagedValue {
		return false, nil // not CRI's: a pull makes it so, as CRI's would
	}
	match := s.matcher()
	if !w.cri.DiscardUnpackedLayers {
		ok, _, _, missing, err := images.Check(ctx, c.content, rec.Target, match)
		if err != nil || !ok || len(missing) > 0 {
			return false, nil
		}
	}
	cfg, err := images.Config(ctx, c.content, rec.Target, match)
	if err != nil {
		return false, nil
	}
	diffIDs, err := images.RootFS(ctx, c.content, cfg)
	if err != nil {
		return false, nil
	}
	if _, err := c.snapshot.Stat(ctx, identity.ChainID(diffIDs).String()); err != nil {
		return false, nil
	}
	if err := ensureRecords(ctx, c.images, recordNames(s.named, rec.Target.Digest, cfg.Digest), rec.Target, s.cfg.Pin); err != nil {
		return false, err
	}
	s.set(func(s *imageState) { s.imageID = cfg.Digest.String() })
	return true, nil
}

// pull fetches and unpacks the image as containerd's CRI PullImage does
// (client.Pull with CRI's options: the same handlers, content labels, GC
// references, snapshot labels), then creates the records CRI creates.
func (w *Warmer) pull(ctx context.Context, c *ctrd, s *imageState, slot int) error {
	ctx, done, err := c.withLease(ctx)
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	defer done()
	r := resolver(ctx, w.regDirs, w.creds.forImage(ctx, s.ref))
	if ro, ok := r.(remotes.ResolverWithOptions); ok {
		ro.SetOptions(transfer.WithMaxConcurrentDownloads(w.cfg.MaxConcurrentDownloads), transfer.WithDownloadLimiter(w.downloads))
	}
	name, desc, err := r.Resolve(ctx, s.ref)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", s.ref, err)
	}
	if desc.MediaType == images.MediaTypeDockerSchema1Manifest {
		return fmt.Errorf("%w: %s is a Docker schema 1 image, which containerd 2 no longer pulls", errdefs.ErrNotImplemented, s.ref)
	}
	fetcher, err := r.Fetcher(ctx, name)
	if err != nil {
		return err
	}
	match := s.matcher()
	cs := c.contentFor(slot)
	var childLabels func(ocispec.Descriptor) []string // nil = images.ChildGCLabels
	if w.cri.DiscardUnpackedLayers {
		childLabels = images.ChildGCLabelsFilterLayers // as CRI: GC may drop unpacked layer blobs
	}
	children := images.SetChildrenMappedLabels(cs, images.ChildrenHandler(cs), childLabels)
	children = images.LimitManifests(images.FilterPlatforms(children, match), match, 1)
	distSrc, err := docker.AppendDistributionSourceLabel(cs, s.ref)
	if err != nil {
		return err
	}
	var h images.Handler = images.Handlers(remotes.FetchHandler(w.blobs.ingester(cs), fetcher), children, distSrc)
	if !w.cri.DisableSnapshotAnnotations {
		h = snapshotters.AppendInfoHandlerWrapper(s.ref)(h)
	}
	h = w.progress(s)(h)

	caps, err := c.snapshotterCapabilities(ctx, w.cri.Snapshotter)
	if err != nil {
		return err
	}
	unpacker, err := unpack.NewUnpacker(ctx, cs, unpack.WithUnpackPlatform(unpack.Platform{
		Platform:                platforms.All,
		SnapshotterKey:          w.cri.Snapshotter,
		Snapshotter:             c.snapshot,
		Applier:                 c.applier,
		SnapshotterCapabilities: caps,
	}))
	if err != nil {
		return fmt.Errorf("unpacker: %w", err)
	}
	dispatchErr := images.Dispatch(ctx, unpacker.Unpack(h), nil, desc)
	if _, err := unpacker.Wait(); err != nil && dispatchErr == nil {
		dispatchErr = fmt.Errorf("unpack: %w", err)
	}
	if dispatchErr != nil {
		return dispatchErr
	}
	// The reference's own record, as client.Pull creates it.
	if err := ensureRecordExact(ctx, c.images, images.Image{Name: name, Target: desc, Labels: recordLabels(s.cfg.Pin)}); err != nil {
		return fmt.Errorf("image record %s: %w", name, err)
	}
	cfg, err := images.Config(ctx, cs, desc, match)
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	if err := ensureRecords(ctx, c.images, recordNames(s.named, desc.Digest, cfg.Digest), desc, s.cfg.Pin); err != nil {
		return err
	}
	s.set(func(s *imageState) { s.imageID = cfg.Digest.String() })
	return nil
}

// progress counts what the pull fetches: a descriptor's bytes once its
// handler returned, and the children's sizes as they become known.
func (w *Warmer) progress(s *imageState) func(images.Handler) images.Handler {
	return func(h images.Handler) images.Handler {
		return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			children, err := h.Handle(ctx, desc)
			if err != nil {
				return children, err
			}
			var more int64
			for _, ch := range children {
				more += ch.Size
			}
			s.set(func(s *imageState) {
				s.done += desc.Size
				s.total += more
			})
			w.m.fetched.Add(float64(desc.Size))
			return children, nil
		})
	}
}

// classify names the reason of a failed pull for the metric label.
func classify(err error) string {
	var ne net.Error
	msg := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return reasonTimeout
	case errors.Is(err, syscall.ENOSPC) || strings.Contains(msg, "no space left on device"):
		return reasonDiskFull
	case errors.Is(err, errCredentials):
		return reasonCredentials
	case errors.Is(err, docker.ErrInvalidAuthorization) || errdefs.IsUnauthorized(err) || errdefs.IsPermissionDenied(err) ||
		strings.Contains(msg, "401 Unauthorized") || strings.Contains(msg, "403 Forbidden"):
		return reasonUnauthorized
	case strings.Contains(msg, "no match for platform"):
		return reasonPlatform
	case errdefs.IsNotFound(err) || strings.Contains(msg, "not found"):
		return reasonNotFound
	case errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "unexpected EOF") || strings.Contains(msg, "503 Service Unavailable") ||
		strings.Contains(msg, "502 Bad Gateway"):
		return reasonUnavailable
	case errdefs.IsUnavailable(err) || strings.Contains(msg, "containerd"):
		return reasonContainerd
	}
	return reasonOther
}

// errCredentials marks failures of a credential source.
var errCredentials = errors.New("credentials")
