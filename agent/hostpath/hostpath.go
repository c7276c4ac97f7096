// Package hostpath locates host files below an injected root, so that the
// agent can run in a container with the host's / mounted at /host, and tests
// can point it at a fixture tree that mirrors /proc and /sys.
//
// Paths resolve symlinks below the root, as the host would see them: on the
// host /etc/resolv.conf is often an absolute symlink to
// /run/systemd/resolve/stub-resolv.conf. Joined lexically, /host/etc/resolv.conf
// would follow it to the container's own /run; resolved here it stays at
// /host/run/systemd/resolve/stub-resolv.conf. A link that climbs above the
// host's / ("../../..") stops at the root, as it would on the host.
// github.com/cyphar/filepath-securejoin does the resolving (runc, containerd
// and Kubernetes use it for the same job).
package hostpath

import (
	"path/filepath"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// Paths resolves host paths below Root. The zero value resolves below "/".
type Paths struct {
	// Root is where the host's / is visible to the agent, e.g. "/host".
	Root string
}

// New returns Paths rooted at root ("" means "/").
func New(root string) Paths { return Paths{Root: root} }

func (p Paths) root() string {
	if p.Root == "" {
		return "/"
	}
	return p.Root
}

// Resolve joins elem below the root and resolves every symlink on the way
// as the host would, never leaving the root. A missing file is fine: the
// path is what it would be once created. The answer describes the tree at
// the time of the call.
func (p Paths) Resolve(elem ...string) (string, error) {
	return securejoin.SecureJoin(p.root(), filepath.Join(append([]string{"/"}, elem...)...))
}

// Path is Resolve without the error: should resolving fail (a symlink loop),
// it returns the path joined below the root, whose open then fails alike.
// Path("etc", "resolv.conf").
func (p Paths) Path(elem ...string) string {
	if path, err := p.Resolve(elem...); err == nil {
		return path
	}
	return filepath.Join(append([]string{p.root()}, elem...)...)
}

// Proc is Path("proc", elem...).
func (p Paths) Proc(elem ...string) string { return p.Path(append([]string{"proc"}, elem...)...) }

// Sys is Path("sys", elem...).
func (p Paths) Sys(elem ...string) string { return p.Path(append([]string{"sys"}, elem...)...) }

// Dev is Path("dev", elem...).
func (p Paths) Dev(elem ...string) string { return p.Path(append([]string{"dev"}, elem...)...) }

// Run is Path("run", elem...).
func (p Paths) Run(elem ...string) string { return p.Path(append([]string{"run"}, elem...)...) }

// Etc is Path("etc", elem...).
func (p Paths) Etc(elem ...string) string { return p.Path(append([]string{"etc"}, elem...)...) }
