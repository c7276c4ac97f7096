package image

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/nodeagent/nodeagent/deploy"
)

// basePackages stand in for debian:bookworm-slim, the base of
// deploy/Dockerfile: a shell, coreutils, the loader's tools, and
// usr-is-merged so that apt picks it over usrmerge (as on slim).
var basePackages = []string{"base-files", "dash", "coreutils", "libc-bin", "usr-is-merged"}

// AgentPackages are the Debian packages of the agent image's root
// filesystem layer: a slim-like base and deploy.ImagePackages().
func AgentPackages() []string {
	return append(append([]string(nil), basePackages...), deploy.ImagePackages()...)
}

// NodeagentOptions configure Nodeagent.
type NodeagentOptions struct {
	RepoDir  string // repository root (holds cmd/nodeagent and deploy/)
	CacheDir string // where the Debian root filesystem layer is cached
	Version  string // -X main.version; default "e2e"
	WorkDir  string // scratch directory (the agent binary is built here)
	Logf     func(format string, args ...any)
}

// Nodeagent assembles the agent image the way deploy/Dockerfile does, with
// no container engine: one layer with the Debian packages of
// deploy.ImagePackages() and everything they depend on (resolved by apt
// against an empty system, fetched with apt-get download, unpacked with
// dpkg-deb), and one layer with the agent built from cmd/nodeagent
// (CGO_ENABLED=0) at /usr/local/bin/nodeagent, its entrypoint.
//
// Unlike the Dockerfile it cannot add Mountpoint for S3 (not in Debian, and
// nothing else can be downloaded here), and maintainer scripts do not run.
func Nodeagent(ctx context.Context, o NodeagentOptions) (v1.Image, error) {
	if o.Version == "" {
		o.Version = "e2e"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	rootfs, err := DebianLayer(ctx, AgentPackages(), o.CacheDir, o.Logf)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(o.WorkDir, "nodeagent")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+o.Version, "-o", bin, "./cmd/nodeagent")
	cmd.Dir = o.RepoDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/nodeagent: %w\n%s", err, out)
	}
	agent, err := Layer([]File{{Path: "/usr/local/bin/nodeagent", Mode: 0o755, Source: bin}})
	if err != nil {
		return nil, err
	}
	return FromLayers(Config{
		Entrypoint: []string{"/usr/local/bin/nodeagent"},
		Labels:     map[string]string{"org.opencontainers.image.title": "nodeagent", "org.opencontainers.image.version": o.Version},
	}, rootfs, agent)
}

// debPackage is one resolved package.
type debPackage struct{ Name, Version string }

// resolvePackages lists pkgs and their dependency closure as apt would
// install them on an empty system (no recommends).
func resolvePackages(ctx context.Context, pkgs []string) ([]debPackage, error) {
	args := append([]string{"install", "-s", "-q", "--no-install-recommends",
		"-o", "Dir::State::status=/dev/null", "-o", "APT::Get::Show-Versions=false"}, pkgs...)
	out, err := exec.CommandContext(ctx, "apt-get", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("apt-get %s: %w\n%s (run apt-get update?)", strings.Join(args, " "), err, out)
	}
	var res []debPackage
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		// Inst libc6 (2.36-9+deb12u10 Debian:12.11/stable [amd64])
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "Inst" || !strings.HasPrefix(f[2], "(") {
			continue
		}
		res = append(res, debPackage{Name: f[1], Version: strings.TrimPrefix(f[2], "(")})
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("apt-get resolved no packages for %v:\n%s", pkgs, out)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Name < res[j].Name })
	return res, nil
}

// debianLayerLayout is part of the cache key: bump it when the way the
// layer is assembled changes (finishRootfs, alternatives).
const debianLayerLayout = 3

// DebianLayer returns a layer holding pkgs and their dependencies unpacked
// into one root filesystem. The gzipped layer is cached in cacheDir under
// a key made of the exact package versions, so a warm run only resolves.
func DebianLayer(ctx context.Context, pkgs []string, cacheDir string, logf func(string, ...any)) (v1.Layer, error) {
	resolved, err := resolvePackages(ctx, pkgs)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "layout %d\n", debianLayerLayout)
	for _, p := range resolved {
		fmt.Fprintf(h, "%s=%s\n", p.Name, p.Version)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(cacheDir, "image-layers")
	cached := filepath.Join(dir, "debian-rootfs-"+key+".tar.gz")
	if _, err := os.Stat(cached); err == nil {
		logf("debian layer: cached %s (%d packages)", cached, len(resolved))
		return tarball.LayerFromFile(cached)
	}
	logf("debian layer: building %s from %d packages", cached, len(resolved))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	debs := filepath.Join(work, "debs")
	root := filepath.Join(work, "rootfs")
	for _, d := range []string{debs, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	args := []string{"download", "-q"}
	for _, p := range resolved {
		args = append(args, p.Name+"="+p.Version)
	}
	dl := exec.CommandContext(ctx, "apt-get", args...)
	dl.Dir = debs
	if out, err := dl.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download: %w\n%s", err, out)
	}
	files, err := filepath.Glob(filepath.Join(debs, "*.deb"))
	if err != nil {
		return nil, err
	}
	if len(files) != len(resolved) {
		return nil, fmt.Errorf("apt-get download gave %d .deb files for %d packages", len(files), len(resolved))
	}
	sort.Strings(files)
	for _, f := range files {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", f, root).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg-deb -x %s: %w\n%s", f, err, out)
		}
	}
	if err := finishRootfs(ctx, root); err != nil {
		return nil, err
	}
	entries, err := TreeFiles(root, "/")
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(work, "layer.tar.gz")
	f, err := os.Create(tmp)
	if err != nil {
		return nil, err
	}
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := WriteTar(zw, entries); err != nil {
		f.Close()
		return nil, err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, cached); err != nil {
		return nil, err
	}
	// Older layers (other package versions) are not needed any more.
	if old, err := filepath.Glob(filepath.Join(dir, "debian-rootfs-*.tar.gz")); err == nil {
		for _, o := range old {
			if o != cached {
				_ = os.Remove(o)
			}
		}
	}
	return tarball.LayerFromFile(cached)
}

// alternatives are the update-alternatives links the maintainer scripts
// of the image's packages would create (Debian's defaults: iptables-nft).
var alternatives = map[string]string{
	"/bin/sh":                     "dash",
	"/usr/bin/awk":                "mawk",
	"/usr/sbin/iptables":          "iptables-nft",
	"/usr/sbin/iptables-save":     "iptables-nft-save",
	"/usr/sbin/iptables-restore":  "iptables-nft-restore",
	"/usr/sbin/ip6tables":         "ip6tables-nft",
	"/usr/sbin/ip6tables-save":    "ip6tables-nft-save",
	"/usr/sbin/ip6tables-restore": "ip6tables-nft-restore",
}

// finishRootfs does what maintainer scripts would have done and the image
// needs: /bin/sh and the other alternatives, the dynamic loader's cache,
// the CA bundle.
func finishRootfs(ctx context.Context, root string) error {
	for link, target := range alternatives {
		p := filepath.Join(root, link)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), target)); err != nil {
			continue // the package providing it is not in the image
		}
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	conf := filepath.Join(root, "etc", "ld.so.conf")
	if _, err := os.Stat(conf); err != nil {
		if err := os.WriteFile(conf, []byte("include /etc/ld.so.conf.d/*.conf\n"), 0o644); err != nil {
			return err
		}
	}
	if out, err := exec.CommandContext(ctx, "ldconfig", "-r", root).CombinedOutput(); err != nil {
		return fmt.Errorf("ldconfig -r: %w\n%s", err, out)
	}
	// update-ca-certificates: concatenate the certificates it would enable.
	var bundle []byte
	err := filepath.WalkDir(filepath.Join(root, "usr", "share", "ca-certificates"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".crt") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		bundle = append(bundle, b...)
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if len(bundle) > 0 {
		if err := os.MkdirAll(filepath.Join(root, "etc", "ssl", "certs"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, "etc", "ssl", "certs", "ca-certificates.crt"), bundle, 0o644); err != nil {
			return err
		}
	}
	return nil
}
