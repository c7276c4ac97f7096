package image

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLayerIsReproducibleWithParents(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(bin, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := []File{
		{Path: "/usr/local/bin/x", Mode: 0o755, Source: bin},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "/bin/sh", Mode: fs.ModeSymlink | 0o777, Linkname: "dash"},
	}
	l1, err := Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := l1.Digest()
	d2, _ := l2.Digest()
	if d1 != d2 {
		t.Errorf("same input, different digests %s %s", d1, d2)
	}
	rc, err := l1.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
	}
	for name, typ := range map[string]byte{
		"usr/": tar.TypeDir, "usr/local/": tar.TypeDir, "usr/local/bin/": tar.TypeDir,
		"usr/local/bin/x": tar.TypeReg, "tmp/": tar.TypeDir, "bin/sh": tar.TypeSymlink,
	} {
		h, ok := got[name]
		if !ok {
			t.Errorf("layer has no %s; has %v", name, keys(got))
			continue
		}
		if h.Typeflag != typ {
			t.Errorf("%s: type %c, want %c", name, h.Typeflag, typ)
		}
	}
	if h := got["tmp/"]; h != nil && h.Mode != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", h.Mode)
	}
	if h := got["bin/sh"]; h != nil && h.Linkname != "dash" {
		t.Errorf("/bin/sh -> %q, want dash", h.Linkname)
	}
}

func keys(m map[string]*tar.Header) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
