package imagewarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeagent/nodeagent/imagewarm/internal/testbed"
)

// pushTestImages pushes a multi-layer image by tag, a multi-arch index by
// tag, and a third image to be named by digest; it returns the refs.
func (e *env) pushTestImages() []string {
	e.t.Helper()
	multi, err := testbed.RandomImage(1<<20, 5, "linux", "amd64")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := testbed.Push(e.ctx, e.reg.Addr+"/spark/executor:3.5", multi, nil); err != nil {
		e.t.Fatal(err)
	}
	idx, err := testbed.Index(512<<10, 3, "linux/amd64", "linux/arm64")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := testbed.PushIndex(e.ctx, e.reg.Addr+"/spark/multiarch:v1", idx, nil); err != nil {
		e.t.Fatal(err)
	}
	byDigest, err := testbed.RandomImage(256<<10, 2, "linux", "amd64")
	if err != nil {
		e.t.Fatal(err)
	}
	dg, err := testbed.Push(e.ctx, e.reg.Addr+"/spark/pinned:latest", byDigest, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return []string{e.reg.Addr + "/spark/executor:3.5", e.reg.Addr + "/spark/multiarch:v1", e.reg.Addr + "/spark/pinned@" + dg}
}

func imageConfigs(refs []string, required bool) []ImageConfig {
	out := make([]ImageConfig, len(refs))
	for i, r := range refs {
		out[i] = ImageConfig{Ref: r, Required: required}
	}
	return out
}

// TestRootRecordsMatchCRI is the record-identity requirement: for the same
// refs, the image records, snapshots and content labels the warmer leaves
// equal those a real CRI PullImage leaves, field by field; and the CRI of
// the warmed containerd reports every ref present, as kubelet asks it.
func TestRootRecordsMatchCRI(t *testing.T) {
	for _, tc := range []struct {
		discard   bool
		blobWrite string
	}{{false, blobWriteDirect}, {true, blobWriteDirect}, {false, blobWriteGRPC}, {true, blobWriteGRPC}} {
		discard := tc.discard
		t.Run(fmt.Sprintf("discard=%t/%s", discard, tc.blobWrite), func(t *testing.T) {
			e := newEnv(t, "")
			refs := e.pushTestImages()
			warmed := e.containerd("warmed", discard)
			viaCRI := e.containerd("cri", discard)

			r := e.warm(warmed, imageConfigs(refs, true), func(c *Config) { c.BlobWrite = tc.blobWrite })
			for i := range refs {
				waitState(t, r.w, i, statePresent, 2*time.Minute)
			}
			if direct := testutil.ToFloat64(r.w.m.direct); (direct == 1) != (tc.blobWrite == blobWriteDirect) {
				t.Errorf("direct_blob_write = %v with blobWrite %s", direct, tc.blobWrite)
			}
			noPartialBlobs(t, warmed)
			if err := r.w.Ready(); err != nil {
				t.Fatalf("Ready after every image is present: %v", err)
			}
			if got := r.w.cri.Snapshotter; got != "overlayfs" {
				t.Errorf("snapshotter read from the CRI status = %q, want overlayfs", got)
			}
			if r.w.cri.DiscardUnpackedLayers != discard {
				t.Errorf("discard_unpacked_layers read from the CRI status = %t, want %t", r.w.cri.DiscardUnpackedLayers, discard)
			}
			r.stop()

			conn, err := viaCRI.Dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			is := runtimeapi.NewImageServiceClient(conn)
			for _, ref := range refs {
				if _, err := is.PullImage(e.ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
					t.Fatalf("CRI PullImage %s: %v\n%s", ref, err, viaCRI.Log())
				}
			}
			if discard {
				gc(t, warmed)
				gc(t, viaCRI)
			}
			got, want := dumpContainerd(t, warmed, "overlayfs"), dumpContainerd(t, viaCRI, "overlayfs")
			if len(got.Snapshots) == 0 || len(got.Content) == 0 {
				t.Fatalf("nothing to compare: %+v", got)
			}
			t.Logf("records:\n%s\nsnapshots:\n%s\ncontent:\n%s", strings.Join(got.Images, "\n"), strings.Join(got.Snapshots, "\n"), strings.Join(got.Content, "\n"))
			compareLines(t, "image records", got.Images, want.Images)
			compareLines(t, "snapshots", got.Snapshots, want.Snapshots)
			compareLines(t, "content", got.Content, want.Content)
			if len(got.Images) != 3*len(refs)-1 { // the digest ref has no tag record
				t.Errorf("%d image records, want %d:\n%s", len(got.Images), 3*len(refs)-1, strings.Join(got.Images, "\n"))
			}

			// What kubelet asks before it pulls: the warmed containerd's CRI
			// knows every ref, by tag and by digest.
			wconn, err := warmed.Dial()
			if err != nil {
				t.Fatal(err)
			}
			defer wconn.Close()
			wis := runtimeapi.NewImageServiceClient(wconn)
			for _, ref := range refs {
				st, err := wis.ImageStatus(e.ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
				if err != nil || st.GetImage() == nil {
					t.Errorf("CRI ImageStatus %s on the warmed containerd: %v %v", ref, st, err)
				}
			}
		})
	}
}

// gc makes containerd collect garbage now (a lease create/delete with
// SynchronousDelete triggers a collection), so discarded layers are gone
// in both containerds before they are compared.
// noPartialBlobs fails when a blob the agent was writing into containerd's
// content store directory is left behind.
func noPartialBlobs(t *testing.T, c *testbed.Containerd) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(c.Dir, "root", contentDirName, ingestDirName, "*"))
	if len(left) > 0 {
		t.Errorf("partial blobs left in the content store: %v", left)
	}
}

func gc(t *testing.T, c *testbed.Containerd) {
	t.Helper()
	cd, err := dialContainerd(c.Socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	ctx := namespaces.WithNamespace(t.Context(), "k8s.io")
	l, err := cd.leases.Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := cd.leases.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
}

func compareLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	var b strings.Builder
	for _, l := range want {
		if !slices.Contains(got, l) {
			fmt.Fprintf(&b, "  only CRI:    %s\n", l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			fmt.Fprintf(&b, "  only warmer: %s\n", l)
		}
	}
	t.Errorf("%s differ from CRI PullImage's:\n%s", what, b.String())
}

// TestRootRepullAfterDelete: image GC (here: deleting the records and
// collecting) removes a warmed image; the periodic re-check pulls it again.
func TestRootRepullAfterDelete(t *testing.T) {
	e := newEnv(t, "")
	refs := e.pushTestImages()[:1]
	c := e.containerd("ctrd", false)
	r := e.warm(c, imageConfigs(refs, true), func(c *Config) { c.RecheckInterval = time.Second })
	waitState(t, r.w, 0, statePresent, time.Minute)
	before := dumpContainerd(t, c, "overlayfs")

	cd, err := dialContainerd(c.Socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	ctx := namespaces.WithNamespace(e.ctx, "k8s.io")
	names, _ := cd.images.(imageStore).List(ctx)
	for i, img := range names {
		var opts []images.DeleteOpt
		if i == len(names)-1 {
			opts = append(opts, images.SynchronousDelete())
		}
		if err := cd.images.Delete(ctx, img.Name, opts...); err != nil {
			t.Fatal(err)
		}
	}
	gc(t, c)
	label := r.w.images[0].label()
	deadline := time.Now().Add(time.Minute)
	for testutil.ToFloat64(r.w.m.repulls.WithLabelValues(label)) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no re-pull after the image was deleted: %s", r.w.images[0].describe(time.Now()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitState(t, r.w, 0, statePresent, time.Minute)
	after := dumpContainerd(t, c, "overlayfs")
	compareLines(t, "image records after the re-pull", after.Images, before.Images)
	compareLines(t, "snapshots after the re-pull", after.Snapshots, before.Snapshots)
	if err := r.w.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// TestRootRegistryStoppedMidPull: the registry dies while layers stream in.
// The failure is reported with its reason, no record names the half-pulled
// image, the pull's lease is gone, and once the registry is back the retry
// completes.
func TestRootRegistryStoppedMidPull(t *testing.T) {
	e := newEnv(t, "")
	img, err := testbed.RandomImage(8<<20, 4, "linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Push(e.ctx, e.reg.Addr+"/big/image:1", img, nil); err != nil {
		t.Fatal(err)
	}
	proxy := newThrottle(t, e.reg.Addr, 4<<20) // 32 MB at 4 MB/s: about 8 s
	if err := testbed.WriteHosts(e.certsD, proxy.Addr(), "http://"+proxy.Addr()); err != nil {
		t.Fatal(err)
	}
	ref := proxy.Addr() + "/big/image:1"
	c := e.containerd("ctrd", false)
	r := e.warm(c, []ImageConfig{{Ref: ref, Required: true}}, func(c *Config) {
		c.Retry.InitialBackoff, c.Retry.MaxBackoff = 500*time.Millisecond, 500*time.Millisecond
	})
	deadline := time.Now().Add(time.Minute)
	for proxy.sent.Load() < 6<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("pull did not start: %s", r.w.images[0].describe(time.Now()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.reg.Stop()
	proxy.Cut()
	waitState(t, r.w, 0, stateFailed, time.Minute)
	noPartialBlobs(t, c)
	wantReason(t, r.w, 0, reasonUnavailable)
	s := r.w.images[0]
	if err := r.w.Ready(); err == nil || !strings.Contains(err.Error(), "failed (unavailable") {
		t.Errorf("Ready = %v, want it to name the failure", err)
	}
	cd, err := dialContainerd(c.Socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	ctx := namespaces.WithNamespace(e.ctx, "k8s.io")
	if _, err := cd.images.Get(ctx, r.w.images[0].ref); !errdefs.IsNotFound(err) {
		t.Errorf("a record names the half-pulled image: %v", err)
	}
	if n := testutil.ToFloat64(r.w.m.failures.WithLabelValues(s.label(), reasonUnavailable)); n < 1 {
		t.Errorf("pull_failures_total{reason=unavailable} = %v", n)
	}
	if err := e.reg.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, r.w, 0, statePresent, 2*time.Minute)
	ls, err := cd.leases.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 0 {
		t.Errorf("leases left behind: %v", ls)
	}
}

// TestRootBadCredential: the kubelet credential provider (a real exec'd
// plugin) first answers an expired password: the pull fails as
// unauthorized and says so; after the rotation, once the provider's cache
// duration passed, the pull succeeds. The request it got is kubelet's.
func TestRootBadCredential(t *testing.T) {
	needRealComponents(t)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("puller:"+string(hash)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, htpasswd)
	img, err := testbed.RandomImage(256<<10, 2, "linux", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref := e.reg.Addr + "/private/app:1"
	if _, err := testbed.Push(e.ctx, ref, img, &authn.Basic{Username: "puller", Password: "s3cret"}); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	pwFile := filepath.Join(dir, "password")
	os.WriteFile(pwFile, []byte("expired"), 0o644)
	reqLog := filepath.Join(dir, "requests")
	script := fmt.Sprintf(`#!/bin/sh
cat >> %[1]s; echo >> %[1]s
printf '{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"1s","auth":{"%[2]s":{"username":"puller","password":"%%s"}}}' "$(cat %[3]s)"
`, reqLog, e.reg.Addr, pwFile)
	if err := os.WriteFile(filepath.Join(bin, "test-provider"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	provCfg := filepath.Join(dir, "providers.yaml")
	os.WriteFile(provCfg, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: test-provider
  matchImages: ["%s"]
  defaultCacheDuration: 10m
  apiVersion: credentialprovider.kubelet.k8s.io/v1
`, e.reg.Addr)), 0o644)

	c := e.containerd("ctrd", false)
	r := e.warm(c, []ImageConfig{{Ref: ref, Required: true}}, func(c *Config) {
		c.Credentials.ProviderConfig, c.Credentials.ProviderBinDir = provCfg, bin
		c.Retry.InitialBackoff, c.Retry.MaxBackoff = 300*time.Millisecond, 300*time.Millisecond
	})
	waitState(t, r.w, 0, stateFailed, time.Minute)
	if err := r.w.Ready(); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("Ready = %v, want the unauthorized failure named", err)
	}
	os.WriteFile(pwFile, []byte("s3cret"), 0o644)
	waitState(t, r.w, 0, statePresent, time.Minute)

	data, _ := os.ReadFile(reqLog)
	first, _, _ := strings.Cut(string(data), "\n")
	var req map[string]string
	if err := json.Unmarshal([]byte(first), &req); err != nil {
		t.Fatalf("provider stdin %q: %v", first, err)
	}
	if req["kind"] != "CredentialProviderRequest" || req["apiVersion"] != "credentialprovider.kubelet.k8s.io/v1" || req["image"] != ref {
		t.Errorf("provider got %v", req)
	}
}

// TestRootBadImagesOthersProceed: an unknown tag and a platform the image
// lacks fail with their reasons; the good image next to them is pulled,
// and only the required failures keep Ready from passing.
func TestRootBadImagesOthersProceed(t *testing.T) {
	e := newEnv(t, "")
	refs := e.pushTestImages()
	c := e.containerd("ctrd", false)
	imgs := []ImageConfig{
		{Ref: refs[0], Required: true},
		{Ref: e.reg.Addr + "/spark/executor:no-such-tag", Required: true},
		{Ref: refs[1], Platform: "linux/s390x"},
	}
	r := e.warm(c, imgs, nil)
	waitState(t, r.w, 0, statePresent, time.Minute)
	waitState(t, r.w, 1, stateFailed, time.Minute)
	waitState(t, r.w, 2, stateFailed, time.Minute)
	for i, want := range map[int]string{1: reasonNotFound, 2: reasonPlatform} {
		wantReason(t, r.w, i, want)
	}
	err := r.w.Ready()
	if err == nil || !strings.Contains(err.Error(), "no-such-tag") || strings.Contains(err.Error(), "s390x") {
		t.Errorf("Ready = %v, want only the required unknown tag named", err)
	}
}

// TestRootParallelPullsShareTheDownloadBound: several images pull at once
// and every one completes (the global download limiter is shared).
func TestRootParallelPulls(t *testing.T) {
	e := newEnv(t, "")
	var refs []string
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i := range 4 {
		wg.Go(func() {
			img, err := testbed.RandomImage(1<<20, 6, "linux", "amd64")
			if err == nil {
				ref := fmt.Sprintf("%s/par/img%d:1", e.reg.Addr, i)
				_, err = testbed.Push(e.ctx, ref, img, nil)
				mu.Lock()
				refs = append(refs, ref)
				mu.Unlock()
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	c := e.containerd("ctrd", false)
	r := e.warm(c, imageConfigs(refs, true), func(c *Config) { c.MaxConcurrentDownloads = 3; c.MaxConcurrentImages = 4 })
	for i := range refs {
		waitState(t, r.w, i, statePresent, 2*time.Minute)
	}
	for i := range refs {
		l := r.w.images[i].label()
		if got := testutil.ToFloat64(r.w.m.bytes.WithLabelValues(l)); got < 6<<20 {
			t.Errorf("%s: image_fetched_bytes = %v, want >= 6 MiB", l, got)
		}
	}
	_ = context.Background
}

// TestRootDiskFull: containerd's content store fills up mid-pull (a 20 MiB
// tmpfs under a 32 MiB image). The reason is disk_full, other state is
// clean: no record names the image, no partial blob of the agent's is left,
// and once the pull's lease is gone GC leaves no content, snapshot or
// ingest behind, so nothing half-written looks complete.
func TestRootDiskFull(t *testing.T) {
	for _, blobWrite := range []string{blobWriteDirect, blobWriteGRPC} {
		t.Run(blobWrite, func(t *testing.T) {
			e := newEnv(t, "")
			img, err := testbed.RandomImage(8<<20, 4, "linux", "amd64")
			if err != nil {
				t.Fatal(err)
			}
			ref := e.reg.Addr + "/full/image:1"
			if _, err := testbed.Push(e.ctx, ref, img, nil); err != nil {
				t.Fatal(err)
			}
			c := testbed.NewContainerd(filepath.Join(e.dir, "ctrd"), e.certsD)
			store := filepath.Join(c.Dir, "root", contentDirName)
			if err := os.MkdirAll(store, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mount("tmpfs", store, "tmpfs", 0, "size=20m"); err != nil {
				t.Fatalf("tmpfs for the content store: %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(store, syscall.MNT_DETACH) })
			if err := c.Start(e.ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Stop)

			r := e.warm(c, []ImageConfig{{Ref: ref, Required: true}}, func(c *Config) { c.BlobWrite = blobWrite })
			waitState(t, r.w, 0, stateFailed, time.Minute)
			r.stop()
			wantReason(t, r.w, 0, reasonDiskFull)
			s := r.w.images[0]
			if n := testutil.ToFloat64(r.w.m.failures.WithLabelValues(s.label(), reasonDiskFull)); n < 1 {
				t.Errorf("pull_failures_total{reason=disk_full} = %v", n)
			}
			noPartialBlobs(t, c)
			cd, err := dialContainerd(c.Socket, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer cd.close()
			ctx := namespaces.WithNamespace(e.ctx, "k8s.io")
			if _, err := cd.images.Get(ctx, s.ref); !errdefs.IsNotFound(err) {
				t.Errorf("a record names the image that did not fit: %v", err)
			}
			if ls, err := cd.leases.List(ctx); err != nil || len(ls) != 0 {
				t.Errorf("leases left behind: %v %v", ls, err)
			}
			gc(t, c)
			if d := dumpContainerd(t, c, "overlayfs"); len(d.Content)+len(d.Snapshots)+len(d.Images) > 0 {
				t.Errorf("left after GC: %+v", d)
			}
			if st, err := cd.content.ListStatuses(ctx); err != nil || len(st) != 0 {
				t.Errorf("ingests left after GC: %v %v", st, err)
			}
		})
	}
}

// TestRootDirectOneWriterPerBlob: with blobWrite direct, two pulls that
// need the same blob at once (images sharing a layer) fetch it once: the
// second writer waits for the first, then finds the blob committed
// (AlreadyExists, which the fetch handler takes as done), as containerd's
// ref lock makes it over gRPC. When the first gives up, the second writes
// the blob itself.
func TestRootDirectOneWriterPerBlob(t *testing.T) {
	e := newEnv(t, "")
	c := e.containerd("ctrd", false)
	cd, err := dialContainerd(c.Socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	ctx := namespaces.WithNamespace(e.ctx, "k8s.io")
	l, err := cd.leases.Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	defer cd.leases.Delete(context.WithoutCancel(ctx), l)
	ctx = leases.WithLease(ctx, l.ID) // no GC between the commit and the second writer
	d := &contentDir{dir: filepath.Join(c.Dir, "root", contentDirName)}
	if err := d.probe(ctx, cd.content); err != nil {
		t.Fatal(err)
	}
	ing := d.ingester(cd.content)
	type opened struct {
		w   content.Writer
		err error
	}
	second := func(ref string, data []byte) <-chan opened {
		ch := make(chan opened, 1)
		go func() {
			w, err := ing.Writer(ctx, content.WithRef(ref), content.WithDescriptor(ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}))
			ch <- opened{w, err}
		}()
		return ch
	}
	open := func(ref string, data []byte) content.Writer {
		r := <-second(ref, data)
		if r.err != nil {
			t.Fatalf("writer %s: %v", ref, r.err)
		}
		return r.w
	}
	write := func(w content.Writer, data []byte) {
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx, int64(len(data)), digest.FromBytes(data)); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}

	shared := []byte("a layer two images share\n")
	w1 := open("layer-a", shared)
	got := second("layer-b", shared)
	write(w1, shared)
	if r := <-got; !errdefs.IsAlreadyExists(r.err) {
		if r.w != nil {
			r.w.Close()
		}
		t.Errorf("second writer of a blob written meanwhile: %v, want AlreadyExists (no second download)", r.err)
	}

	other := []byte("a layer whose first writer gives up\n")
	w1 = open("layer-c", other)
	got = second("layer-d", other)
	w1.Close()
	r := <-got
	if r.err != nil {
		t.Fatalf("second writer after the first gave up: %v", r.err)
	}
	write(r.w, other)
	if _, err := cd.content.Info(ctx, digest.FromBytes(other)); err != nil {
		t.Errorf("blob written by the second writer: %v", err)
	}
	noPartialBlobs(t, c)
}
