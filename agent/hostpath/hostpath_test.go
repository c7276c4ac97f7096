package hostpath

import "testing"

func TestPaths(t *testing.T) {
	for _, tc := range []struct{ root, got, want string }{
		{"", New("").Proc("mdstat"), "/proc/mdstat"},
		{"/host", New("/host").Sys("block", "nvme0n1"), "/host/sys/block/nvme0n1"},
		{"/host/", New("/host/").Etc("resolv.conf"), "/host/etc/resolv.conf"},
		{"/fixtures", New("/fixtures").Dev("md", "kubernetes"), "/fixtures/dev/md/kubernetes"},
		{"/", New("/").Run("containerd", "containerd.sock"), "/run/containerd/containerd.sock"},
	} {
		if tc.got != tc.want {
			t.Errorf("root %q: got %q, want %q", tc.root, tc.got, tc.want)
		}
	}
}
