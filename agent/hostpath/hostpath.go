// Package hostpath locates host files below an injected root, so that the
// agent can run in a container with the host's / mounted at /host, and tests
// can point it at a fixture tree that mirrors /proc and /sys.
package hostpath

import "path/filepath"

// Paths resolves host paths below Root. The zero value resolves below "/".
type Paths struct {
	// Root is where the host's / is visible to the agent, e.g. "/host".
	Root string
}

// New returns Paths rooted at root ("" means "/").
func New(root string) Paths { return Paths{Root: root} }

// Path joins elem below the root: Path("etc", "resolv.conf").
func (p Paths) Path(elem ...string) string {
	root := p.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(append([]string{root}, elem...)...)
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
