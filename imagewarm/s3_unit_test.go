package imagewarm

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func intp(i int) *int { return &i }

// TestMountS3Argv golden-tests mount-s3's command line for each option.
func TestMountS3Argv(t *testing.T) {
	t.Parallel()
	base := S3MountConfig{Name: "libs", Bucket: "libs--use1-az4--x-s3", MountPath: "/mnt/s3/libs"}
	head := "mount-s3 libs--use1-az4--x-s3 /mnt/s3/libs --foreground"
	for _, tc := range []struct {
		name string
		edit func(*S3MountConfig)
		want string
	}{
		{"plain", func(*S3MountConfig) {}, head},
		{"read-only caches metadata forever", func(m *S3MountConfig) { m.ReadOnly = true }, head + " --read-only --metadata-ttl indefinite"},
		{"read-only with its own ttl", func(m *S3MountConfig) { m.ReadOnly, m.MetadataTTL = true, "300" }, head + " --read-only --metadata-ttl 300"},
		{"metadata ttl", func(m *S3MountConfig) { m.MetadataTTL = "minimal" }, head + " --metadata-ttl minimal"},
		{"prefix", func(m *S3MountConfig) { m.Prefix = "jars/" }, head + " --prefix jars/"},
		{"region", func(m *S3MountConfig) { m.Region = "us-east-1" }, head + " --region us-east-1"},
		{"endpoint", func(m *S3MountConfig) { m.EndpointURL = "http://127.0.0.1:7070" }, head + " --endpoint-url http://127.0.0.1:7070"},
		{"cache", func(m *S3MountConfig) { m.Cache = "/mnt/k8s-disks/0/s3cache" }, head + " --cache /mnt/k8s-disks/0/s3cache"},
		{"allow other", func(m *S3MountConfig) { m.AllowOther = true }, head + " --allow-other"},
		{"uid gid", func(m *S3MountConfig) { m.UID, m.GID = intp(185), intp(0) }, head + " --uid 185 --gid 0"},
		{"extra args last", func(m *S3MountConfig) { m.ReadOnly, m.ExtraArgs = true, []string{"--max-threads", "64"} },
			head + " --read-only --metadata-ttl indefinite --max-threads 64"},
		{"all", func(m *S3MountConfig) {
			m.Prefix, m.Region, m.ReadOnly, m.Cache, m.AllowOther, m.UID, m.GID = "jars/", "us-east-1", true, "/c", true, intp(1), intp(2)
		}, head + " --prefix jars/ --region us-east-1 --read-only --metadata-ttl indefinite --cache /c --allow-other --uid 1 --gid 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base
			tc.edit(&m)
			o := defaultS3Config().S3
			if got := strings.Join(o.daemonArgv(&m), " "); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestS3fsAndRcloneArgv(t *testing.T) {
	t.Parallel()
	m := S3MountConfig{Name: "libs", Bucket: "libs", Prefix: "jars/", MountPath: "/mnt/s3/libs", EndpointURL: "http://127.0.0.1:7070",
		ReadOnly: true, AllowOther: true, UID: intp(185), GID: intp(185), ExtraArgs: []string{"-x"}}
	o := S3Options{S3fsPath: "/usr/bin/s3fs"}
	m.Driver = DriverS3fs
	if got, want := strings.Join(o.daemonArgv(&m), " "),
		"/usr/bin/s3fs libs:/jars /mnt/s3/libs -f -o use_path_request_style,url=http://127.0.0.1:7070,ro,allow_other,uid=185,gid=185 -x"; got != want {
		t.Errorf("s3fs:\ngot  %s\nwant %s", got, want)
	}
	m.Driver = DriverRclone
	if got, want := strings.Join(o.daemonArgv(&m), " "),
		"rclone mount :s3,provider=Other,env_auth=true,endpoint='http://127.0.0.1:7070':libs/jars /mnt/s3/libs --read-only --allow-other --uid 185 --gid 185 -x"; got != want {
		t.Errorf("rclone:\ngot  %s\nwant %s", got, want)
	}
}

func TestS3ConfigValidate(t *testing.T) {
	t.Parallel()
	good := S3MountConfig{Name: "libs", Bucket: "libs--use1-az4--x-s3", Prefix: "jars/", MountPath: "/mnt/s3/libs"}
	for _, tc := range []struct {
		name   string
		mounts []S3MountConfig
		want   []string
	}{
		{"good", []S3MountConfig{good}, nil},
		{"general bucket for mountpoint", []S3MountConfig{{Name: "a", Bucket: "libs", MountPath: "/mnt/s3/a"}},
			[]string{`s3Mounts[0].bucket: must be an S3 Express directory bucket name`}},
		{"general bucket for s3fs", []S3MountConfig{{Name: "a", Bucket: "libs", MountPath: "/mnt/s3/a", Driver: DriverS3fs}}, nil},
		{"cache on raid", []S3MountConfig{{Name: "a", Bucket: good.Bucket, MountPath: "/mnt/s3/a", Cache: CacheOnRaid}}, nil},
		{"relative cache", []S3MountConfig{{Name: "a", Bucket: good.Bucket, MountPath: "/mnt/s3/a", Cache: "nvme"}},
			[]string{`s3Mounts[0].cache: must be an absolute path, raid or empty, got "nvme"`}},
		{"prefix without slash", []S3MountConfig{{Name: "a", Bucket: good.Bucket, Prefix: "jars", MountPath: "/mnt/s3/a"}},
			[]string{`s3Mounts[0].prefix: must end in /`}},
		{"relative path", []S3MountConfig{{Name: "a", Bucket: good.Bucket, MountPath: "mnt/s3/a"}},
			[]string{`s3Mounts[0].mountPath: must be a clean absolute path`}},
		{"outside the roots", []S3MountConfig{{Name: "a", Bucket: good.Bucket, MountPath: "/var/lib/kubelet"}},
			[]string{`s3Mounts[0].mountPath: must be below one of s3.allowedRoots`}},
		{"the root itself", []S3MountConfig{{Name: "a", Bucket: good.Bucket, MountPath: "/mnt/s3"}},
			[]string{`s3Mounts[0].mountPath: must be below one of s3.allowedRoots`}},
		{"two on one path", []S3MountConfig{good, {Name: "b", Bucket: good.Bucket, MountPath: "/mnt/s3/libs"}},
			[]string{`s3Mounts[1].mountPath: "/mnt/s3/libs" overlaps s3Mounts[0]`}},
		{"nested", []S3MountConfig{good, {Name: "b", Bucket: good.Bucket, MountPath: "/mnt/s3/libs/x"}},
			[]string{`s3Mounts[1].mountPath: "/mnt/s3/libs/x" overlaps s3Mounts[0]`}},
		{"duplicate name", []S3MountConfig{good, {Name: "libs", Bucket: good.Bucket, MountPath: "/mnt/s3/b"}},
			[]string{`s3Mounts[1].name: duplicate of s3Mounts[0]`}},
		{"bad driver, ttl, uid", []S3MountConfig{{Name: "a", Bucket: good.Bucket, MountPath: "/mnt/s3/a", Driver: "goofys", MetadataTTL: "1h", UID: intp(-1)}},
			[]string{`s3Mounts[0].driver: must be mountpoint, s3fs or rclone`, `s3Mounts[0].metadataTTL:`, `s3Mounts[0].uid: must be >= 0`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.S3Mounts = tc.mounts
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

// touchS3Metrics registers the S3 metrics on reg and gives each vector a
// child, for TestMetricsREADME.
func touchS3Metrics(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	m, err := newS3Metrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.up.WithLabelValues("libs").Set(1)
	m.heals.WithLabelValues("libs", healENOTCONN).Inc()
	m.failures.WithLabelValues("libs").Inc()
	m.rss.WithLabelValues("libs").Set(1)
	m.healTime.Observe(1)
	m.check.Observe(1)
}

func TestIsDaemonOf(t *testing.T) {
	t.Parallel()
	want := []string{"/usr/bin/s3fs", "b", "/mnt/s3/a", "-f"}
	for _, tc := range []struct {
		argv []string
		ok   bool
	}{
		{[]string{"s3fs", "b", "/mnt/s3/a", "-f"}, true},
		{[]string{"/usr/bin/s3fs", "b", "/mnt/s3/ab", "-f"}, false},
		{[]string{"bash", "/mnt/s3/a"}, false},
		{nil, false},
	} {
		if got := isDaemonOf(tc.argv, want, "/mnt/s3/a"); got != tc.ok {
			t.Errorf("isDaemonOf(%q) = %v", tc.argv, got)
		}
	}
}

func TestS3SupervisorValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                        string
		supervisor, namespace, sock string
		want                        []string
	}{
		{"auto", SupervisorAuto, MountNamespaceHost, "/run/systemd/private", nil},
		{"cgroup in the agent's namespace", SupervisorCgroup, MountNamespaceAgent, "/run/systemd/private", nil},
		{"systemd in the agent's namespace", SupervisorSystemd, MountNamespaceAgent, "/run/systemd/private",
			[]string{`s3.supervisor: systemd starts the daemons in the host's mount namespace: needs s3.namespace host, got "agent"`}},
		{"unknown, relative socket", "runit", MountNamespaceHost, "private",
			[]string{`s3.supervisor: must be auto, systemd or cgroup, got "runit"`, `s3.systemdSocket: must be an absolute path, got "private"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.S3.Supervisor, c.S3.Namespace, c.S3.SystemdSocket = tc.supervisor, tc.namespace, tc.sock
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v\nlacks %q", err, w)
				}
			}
		})
	}
}
