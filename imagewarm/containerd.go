package imagewarm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	introspectionapi "github.com/containerd/containerd/api/services/introspection/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/content"
	contentproxy "github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/core/diff"
	diffproxy "github.com/containerd/containerd/v2/core/diff/proxy"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	leasesproxy "github.com/containerd/containerd/v2/core/leases/proxy"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs/pkg/errgrpc"
	clog "github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// ctrd is the part of containerd's API a pull needs, over one gRPC
// connection: content, images, leases, one snapshotter, the diff applier.
// It uses containerd's own proxies (core/*/proxy) rather than the full
// client package, which also links containers, tasks, sandboxes, transfer
// and OCI spec generation (about 3 MB of idle RSS more).
type ctrd struct {
	conn    *grpc.ClientConn
	content content.Store
	// streams are content stores on connections of their own, one per
	// image pulled at once: blobs stream into containerd over gRPC, and on
	// one connection every stream goes through one HTTP/2 writer and one
	// server reader goroutine (measured: the pulls then use one core of two).
	streams  []content.Store
	conns    []*grpc.ClientConn
	images   images.Store
	leases   leases.Manager
	applier  diff.Applier
	snapshot snapshots.Snapshotter
	intro    introspectionapi.IntrospectionClient
}

// maxMsgSize is containerd's own client limit (16 MiB).
const maxMsgSize = 16 << 20

func dial(socket string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", socket, err)
	}
	return conn, nil
}

// dialContainerd connects to containerd: one connection for everything
// but blob streams, and streams more for those (0 = none of their own).
func dialContainerd(socket string, streams int) (*ctrd, error) {
	conn, err := dial(socket)
	if err != nil {
		return nil, err
	}
	c := &ctrd{
		conn:    conn,
		content: contentproxy.NewContentStore(conn),
		images:  imageStore{imagesapi.NewImagesClient(conn)},
		leases:  leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn)),
		applier: diffproxy.NewDiffApplier(diffapi.NewDiffClient(conn)).(diff.Applier),
		intro:   introspectionapi.NewIntrospectionClient(conn),
	}
	for range streams {
		sc, err := dial(socket)
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns = append(c.conns, sc)
		c.streams = append(c.streams, contentproxy.NewContentStore(sc))
	}
	return c, nil
}

// contentFor is the content store for the pull in slot (any int).
func (c *ctrd) contentFor(slot int) content.Store {
	if len(c.streams) == 0 {
		return c.content
	}
	return c.streams[slot%len(c.streams)]
}

func (c *ctrd) useSnapshotter(name string) {
	c.snapshot = snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(c.conn), name)
}

// snapshotterCapabilities asks containerd what the snapshotter can do
// (the unpacker uses "rebase" where offered), as the client's Pull does.
func (c *ctrd) snapshotterCapabilities(ctx context.Context, name string) ([]string, error) {
	resp, err := c.intro.Plugins(ctx, &introspectionapi.PluginsRequest{
		Filters: []string{fmt.Sprintf("type==io.containerd.snapshotter.v1, id==%s", name)},
	})
	if err != nil {
		return nil, errgrpc.ToNative(err)
	}
	if len(resp.Plugins) == 0 {
		return nil, fmt.Errorf("containerd has no snapshotter %q", name)
	}
	return resp.Plugins[0].Capabilities, nil
}

// withLease holds what a pull writes until its records exist, as the
// client's Pull does; the lease is deleted when done, so a failed pull
// leaves nothing referenced for GC to keep.
func (c *ctrd) withLease(ctx context.Context) (context.Context, func(), error) {
	l, err := c.leases.Create(ctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour))
	if err != nil {
		return ctx, func() {}, err
	}
	return leases.WithLease(ctx, l.ID), func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = c.leases.Delete(dctx, l)
	}, nil
}

func (c *ctrd) close() error {
	for _, sc := range c.conns {
		sc.Close()
	}
	return c.conn.Close()
}

// imageStore is containerd's images service as an images.Store (Get,
// Create, Update are what the warmer uses).
type imageStore struct{ c imagesapi.ImagesClient }

func (s imageStore) Get(ctx context.Context, name string) (images.Image, error) {
	resp, err := s.c.Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil {
		return images.Image{}, errgrpc.ToNative(err)
	}
	return imageFromProto(resp.Image), nil
}

func (s imageStore) List(ctx context.Context, filters ...string) ([]images.Image, error) {
	resp, err := s.c.List(ctx, &imagesapi.ListImagesRequest{Filters: filters})
	if err != nil {
		return nil, errgrpc.ToNative(err)
	}
	out := make([]images.Image, 0, len(resp.Images))
	for _, i := range resp.Images {
		out = append(out, imageFromProto(i))
	}
	return out, nil
}

func (s imageStore) Create(ctx context.Context, img images.Image) (images.Image, error) {
	resp, err := s.c.Create(ctx, &imagesapi.CreateImageRequest{Image: imageToProto(img)})
	if err != nil {
		return images.Image{}, errgrpc.ToNative(err)
	}
	return imageFromProto(resp.Image), nil
}

func (s imageStore) Update(ctx context.Context, img images.Image, fieldpaths ...string) (images.Image, error) {
	req := &imagesapi.UpdateImageRequest{Image: imageToProto(img)}
	if len(fieldpaths) > 0 {
		req.UpdateMask = &fieldmaskpb.FieldMask{Paths: fieldpaths}
	}
	resp, err := s.c.Update(ctx, req)
	if err != nil {
		return images.Image{}, errgrpc.ToNative(err)
	}
	return imageFromProto(resp.Image), nil
}

func (s imageStore) Delete(ctx context.Context, name string, _ ...images.DeleteOpt) error {
	_, err := s.c.Delete(ctx, &imagesapi.DeleteImageRequest{Name: name})
	return errgrpc.ToNative(err)
}

func imageToProto(i images.Image) *imagesapi.Image {
	return &imagesapi.Image{Name: i.Name, Labels: i.Labels, Target: &types.Descriptor{
		MediaType: i.Target.MediaType, Digest: i.Target.Digest.String(), Size: i.Target.Size, Annotations: i.Target.Annotations,
	}}
}

func imageFromProto(p *imagesapi.Image) images.Image {
	img := images.Image{Name: p.GetName(), Labels: p.GetLabels()}
	if t := p.GetTarget(); t != nil {
		img.Target = ocispec.Descriptor{MediaType: t.MediaType, Digest: digest.Digest(t.Digest), Size: t.Size, Annotations: t.Annotations}
	}
	if ts := p.GetCreatedAt(); ts != nil {
		img.CreatedAt = ts.AsTime()
	}
	if ts := p.GetUpdatedAt(); ts != nil {
		img.UpdatedAt = ts.AsTime()
	}
	return img
}

// withContainerdLog routes the log lines containerd's libraries write
// (through github.com/containerd/log, logrus) to the feature's slog logger
// at debug level, instead of logrus's own text on stderr.
func withContainerdLog(ctx context.Context, l *slog.Logger) context.Context {
	lr := logrus.New()
	lr.SetOutput(io.Discard)
	lr.SetLevel(logrus.DebugLevel)
	lr.AddHook(slogHook{l})
	return clog.WithLogger(ctx, logrus.NewEntry(lr))
}

type slogHook struct{ l *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	args := make([]any, 0, 2*len(e.Data))
	for k, v := range e.Data {
		args = append(args, k, v)
	}
	h.l.Debug("containerd library", append([]any{"message", e.Message}, args...)...)
	return nil
}
