package imagewarm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// contentDirName is containerd's local content store below its root.
const contentDirName = "io.containerd.content.v1.content"

// ingestDirName holds the agent's partial blobs inside the content store
// directory (the same filesystem, so a finished blob is linked into place).
// containerd reads only blobs/ and ingest/ there; nothing else uses it.
const ingestDirName = "nodeagent.ingest"

// contentDir writes fetched blobs straight into containerd's local content
// store directory and then registers them over gRPC, instead of streaming
// every byte through containerd's content API.
//
// Why: on a 2-core node the pull is CPU-bound, and containerd spends most
// of its CPU hashing what it is sent (a containerd built without SHA-NI
// hashes at ~350 MB/s) and decoding gRPC; written here, each blob is hashed
// once in the agent and never copied over the socket. containerd's own
// contract makes it safe: with the default "shared" content policy a writer
// opened for a digest whose blob file exists registers it in the namespace
// without data (metadata contentStore.Writer), exactly as when another
// namespace already has the blob. The content's metadata (labels set by the
// handlers, GC references, leases) is the same as a streamed pull's.
//
// A probe blob at start checks that the directory is containerd's and the
// policy shared; otherwise, and for any blob containerd does not see after
// the link, the bytes are streamed over gRPC as before.
type contentDir struct {
	dir string // the content store root, in the agent's mount namespace

	// writing holds the blobs being written by the agent's own writers
	// (closed when that writer is done): images that share a layer and
	// are pulled at once fetch it once, as containerd's ref lock makes
	// them do over gRPC.
	mu      sync.Mutex
	writing map[digest.Digest]chan struct{}
}

// claim makes the caller the one writer of dgst, or returns what to wait
// for: the current writer being done.
func (d *contentDir) claim(dgst digest.Digest) (wait <-chan struct{}, mine bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch, ok := d.writing[dgst]; ok {
		return ch, false
	}
	if d.writing == nil {
		d.writing = map[digest.Digest]chan struct{}{}
	}
	d.writing[dgst] = make(chan struct{})
	return nil, true
}

func (d *contentDir) release(dgst digest.Digest) {
	d.mu.Lock()
	ch := d.writing[dgst]
	delete(d.writing, dgst)
	d.mu.Unlock()
	close(ch)
}

// ingester is d in front of cs (containerd's content store on one of the
// agent's connections).
func (d *contentDir) ingester(cs content.Store) content.Ingester {
	if d == nil {
		return cs
	}
	return dirIngester{d, cs}
}

type dirIngester struct {
	d  *contentDir
	cs content.Store
}

// blobPath is where containerd's local store keeps dgst.
func (d *contentDir) blobPath(dgst digest.Digest) string {
	return filepath.Join(d.dir, "blobs", dgst.Algorithm().String(), dgst.Encoded())
}

// probe writes a small blob of its own, asks containerd whether it sees it
// as present, and removes it again. It returns why direct writes are not
// used, or nil.
func (d *contentDir) probe(ctx context.Context, cs content.Store) error {
	if err := os.MkdirAll(filepath.Join(d.dir, ingestDirName), 0o700); err != nil {
		return err
	}
	d.clean()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	data := []byte("nodeagent imagewarm content store probe " + hex.EncodeToString(nonce) + "\n")
	dgst := digest.FromBytes(data)
	desc := content.WithDescriptor(ocispec.Descriptor{Digest: dgst, Size: int64(len(data))})
	path := d.blobPath(dgst)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o444); err != nil {
		return err
	}
	defer os.Remove(path) // unreferenced: never registered (the writer is aborted)
	ref := "nodeagent-probe-" + dgst.Encoded()
	w, err := cs.Writer(ctx, content.WithRef(ref), desc)
	if err != nil {
		return fmt.Errorf("open writer: %w", err)
	}
	st, err := w.Status()
	w.Close()
	if aerr := cs.Abort(context.WithoutCancel(ctx), ref); aerr != nil && !errdefs.IsNotFound(aerr) && err == nil {
		err = aerr
	}
	if err != nil {
		return err
	}
	if st.Offset != int64(len(data)) {
		return fmt.Errorf("containerd does not see blobs written to %s (another directory, or content_sharing_policy isolated)", d.dir)
	}
	return nil
}

// clean removes partial blobs a previous run of the agent left.
func (d *contentDir) clean() {
	ents, _ := os.ReadDir(filepath.Join(d.dir, ingestDirName))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".partial") {
			os.Remove(filepath.Join(d.dir, ingestDirName, e.Name()))
		}
	}
}

// Writer implements content.Ingester: a file of its own for a blob
// containerd has in no namespace yet, containerd's writer otherwise.
func (i dirIngester) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	d := i.d
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	dg := wo.Desc.Digest
	if dg.Validate() != nil || dg.Algorithm() != digest.SHA256 || wo.Desc.Size <= 0 {
		return i.cs.Writer(ctx, opts...)
	}
	// Another pull writing the same blob: wait for it, then look again.
	for {
		wait, mine := d.claim(dg)
		if mine {
			break
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// In the store already: containerd's writer says AlreadyExists (and
	// leases it) when it is in the namespace, else registers it without data.
	if _, err := os.Stat(d.blobPath(dg)); err == nil {
		d.release(dg)
		return i.cs.Writer(ctx, opts...)
	}
	f, err := os.CreateTemp(filepath.Join(d.dir, ingestDirName), dg.Encoded()+"-*.partial")
	if err != nil {
		d.release(dg)
		return nil, fmt.Errorf("content store %s: %w", d.dir, err)
	}
	return &fileWriter{d: d, cs: i.cs, opts: opts, desc: wo, f: f, h: dg.Algorithm().Hash(), started: time.Now()}, nil
}

// fileWriter is one blob being written into the content store directory.
type fileWriter struct {
	d       *contentDir
	cs      content.Store
	opts    []content.WriterOpt // for containerd's writer at commit
	desc    content.WriterOpts
	f       *os.File
	h       hash.Hash
	n       int64
	started time.Time
	done    bool
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

func (w *fileWriter) Digest() digest.Digest { return digest.NewDigest(digest.SHA256, w.h) }

func (w *fileWriter) Status() (content.Status, error) {
	return content.Status{Ref: w.desc.Ref, Offset: w.n, Total: w.desc.Desc.Size, Expected: w.desc.Desc.Digest,
		StartedAt: w.started, UpdatedAt: time.Now()}, nil
}

// Truncate supports content.Copy's restart from 0 after a reset.
func (w *fileWriter) Truncate(size int64) error {
	if size != 0 {
		return fmt.Errorf("truncate to %d: %w", size, errdefs.ErrInvalidArgument)
	}
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	if _, err := w.f.Seek(0, 0); err != nil {
		return err
	}
	w.h.Reset()
	w.n = 0
	return nil
}

// Close drops an uncommitted blob: nothing half-written stays. A pull
// waiting for the same blob then finds it in the store, or writes it.
func (w *fileWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	defer w.d.release(w.desc.Desc.Digest)
	w.f.Close()
	return os.Remove(w.f.Name())
}

// Commit checks size and digest, makes the file durable, links it into
// place and has containerd register it (under the pull's lease).
func (w *fileWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if w.done {
		return fmt.Errorf("commit of %s on a closed writer: %w", w.desc.Ref, errdefs.ErrFailedPrecondition)
	}
	defer w.Close() // the link, once made, keeps the data
	if size > 0 && size != w.n {
		return fmt.Errorf("%s: unexpected commit size %d, expected %d: %w", w.desc.Ref, w.n, size, errdefs.ErrFailedPrecondition)
	}
	dg := w.Digest()
	if expected != "" && expected != dg {
		return fmt.Errorf("%s: unexpected commit digest %s, expected %s: %w", w.desc.Ref, dg, expected, errdefs.ErrFailedPrecondition)
	}
	if err := w.f.Sync(); err != nil { // as containerd's own writer before its rename
		return fmt.Errorf("content store %s: %w", w.d.dir, err)
	}
	if err := w.f.Chmod(0o444); err != nil {
		return err
	}
	target := w.d.blobPath(dg)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	if err := os.Link(w.f.Name(), target); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("content store %s: %w", w.d.dir, err)
	}
	cw, err := w.cs.Writer(ctx, w.opts...)
	if err != nil {
		return err // AlreadyExists: committed in the namespace meanwhile, which content.Copy accepts
	}
	defer cw.Close()
	st, err := cw.Status()
	if err != nil {
		return err
	}
	if st.Offset != w.n {
		// containerd did not find the linked file (GC removed it before
		// the writer held it): stream the bytes after all.
		if _, err := w.f.Seek(0, 0); err != nil {
			return err
		}
		return content.Copy(ctx, cw, w.f, w.n, dg, opts...)
	}
	return cw.Commit(ctx, size, dg, opts...)
}
