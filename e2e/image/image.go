// Package image assembles OCI images in Go, without a container engine,
// and pushes them to the e2e cluster's plain-HTTP registry.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// GoBuild builds the Go main package pkg (a path relative to dir, such as
// "./images/pause") as a static linux/amd64 binary at out.
func GoBuild(ctx context.Context, dir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, dir, err, b)
	}
	return nil
}

// File is one entry of a layer.
type File struct {
	Path     string // absolute path in the image
	Mode     fs.FileMode
	Data     []byte // regular file contents
	Source   string // or: read contents from this host file
	Linkname string // for symlinks (Mode has fs.ModeSymlink)
}

// Layer builds a layer from files. Parent directories are added as needed;
// timestamps are zero so that equal input gives an equal digest.
func Layer(files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := WriteTar(&buf, files); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// WriteTar writes files as a tar stream (see Layer).
func WriteTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	var addDir func(d string) error
	addDir = func(d string) error {
		d = strings.TrimPrefix(path.Clean(d), "/")
		if d == "." || d == "" || dirs[d] {
			return nil
		}
		if err := addDir(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
	}
	sorted := append([]File(nil), files...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		p := strings.TrimPrefix(path.Clean(f.Path), "/")
		if err := addDir(path.Dir(p)); err != nil {
			return err
		}
		hdr := &tar.Header{Name: p, Mode: int64(f.Mode.Perm()), ModTime: time.Unix(0, 0)}
		switch {
		case f.Mode&fs.ModeSymlink != 0:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = f.Linkname
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		case f.Mode.IsDir():
			if dirs[p] {
				continue
			}
			if err := addDir(path.Dir(p)); err != nil {
				return err
			}
			dirs[p] = true
			mode := int64(f.Mode.Perm())
			if f.Mode&fs.ModeSticky != 0 {
				mode |= 0o1000
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, ModTime: time.Unix(0, 0)}); err != nil {
				return err
			}
		default:
			data := f.Data
			if f.Source != "" {
				b, err := os.ReadFile(f.Source)
				if err != nil {
					return err
				}
				data = b
			}
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(data))
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// TreeFiles lists the regular files, directories and symlinks under root as
// layer entries placed at the same relative paths under dest.
func TreeFiles(root, dest string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		target := path.Join(dest, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			files = append(files, File{Path: target, Mode: fs.ModeSymlink | 0o777, Linkname: l})
		case info.IsDir():
			files = append(files, File{Path: target, Mode: fs.ModeDir | info.Mode()&(fs.ModePerm|fs.ModeSticky)})
		case info.Mode().IsRegular():
			files = append(files, File{Path: target, Mode: info.Mode().Perm(), Source: p})
		}
		return nil
	})
	return files, err
}

// Config is the runtime configuration of an image.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
}

// FromLayers makes a linux/amd64 OCI image from layers.
func FromLayers(cfg Config, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range layers {
		var err error
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer})
		if err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = "amd64"
	cf.Config.Entrypoint = cfg.Entrypoint
	cf.Config.Cmd = cfg.Cmd
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, cfg.Env...)
	cf.Config.Labels = cfg.Labels
	return mutate.ConfigFile(img, cf)
}

// StaticBinary makes an image holding one static binary at /NAME that is
// also its entrypoint, and an empty /tmp.
func StaticBinary(binPath, name string) (v1.Image, error) {
	l, err := Layer([]File{
		{Path: "/" + name, Mode: 0o755, Source: binPath},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	})
	if err != nil {
		return nil, err
	}
	return FromLayers(Config{Entrypoint: []string{"/" + name}}, l)
}

// Push pushes img to ref (a plain-HTTP registry such as 127.0.0.1:5000/x:tag)
// and returns the reference pinned by digest.
func Push(ctx context.Context, img v1.Image, ref string) (string, error) {
	return push(ctx, img, ref, remote.WithContext(ctx))
}

// PushAuth is Push to a registry that wants basic auth.
func PushAuth(ctx context.Context, img v1.Image, ref, user, password string) (string, error) {
	return push(ctx, img, ref, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: user, Password: password}))
}

func push(ctx context.Context, img v1.Image, ref string, opts ...remote.Option) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img, opts...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return r.Context().Digest(d.String()).String(), nil
}
