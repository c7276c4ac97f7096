package imagewarm

import (
	"strconv"
	"strings"
)

// daemonArgv is the FUSE daemon's command line for m, run in the
// foreground (the agent detaches it and finds it again by its mount path).
func (o *S3Options) daemonArgv(m *S3MountConfig) []string {
	switch m.driver() {
	case DriverS3fs:
		return s3fsArgv(orDefault(o.S3fsPath, "s3fs"), m)
	case DriverRclone:
		return rcloneArgv(orDefault(o.RclonePath, "rclone"), m)
	default:
		return mountS3Argv(orDefault(o.MountS3Path, "mount-s3"), m)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// mountS3Argv: Mountpoint for S3. Read-only mounts of immutable JARs cache
// metadata forever (--metadata-ttl indefinite) unless metadataTTL is set.
// Credentials come from the environment (IRSA, Pod Identity) or the
// instance profile, as the AWS SDK finds them.
func mountS3Argv(bin string, m *S3MountConfig) []string {
	a := []string{bin, m.Bucket, m.MountPath, "--foreground"}
	if m.Prefix != "" {
		a = append(a, "--prefix", m.Prefix)
	}
	if m.Region != "" {
		a = append(a, "--region", m.Region)
	}
	if m.EndpointURL != "" {
		a = append(a, "--endpoint-url", m.EndpointURL)
	}
	if m.ReadOnly {
		a = append(a, "--read-only")
	}
	if ttl := m.MetadataTTL; ttl != "" {
		a = append(a, "--metadata-ttl", ttl)
	} else if m.ReadOnly {
		a = append(a, "--metadata-ttl", "indefinite")
	}
	if m.Cache != "" {
		a = append(a, "--cache", m.Cache)
	}
	return append(ownerFlags(a, m), m.ExtraArgs...)
}

// s3fsArgv: s3fs-fuse, path-style (S3-compatible stores); credentials from
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or its passwd file.
func s3fsArgv(bin string, m *S3MountConfig) []string {
	src := m.Bucket
	if m.Prefix != "" {
		src += ":/" + strings.TrimSuffix(m.Prefix, "/")
	}
	opts := []string{"use_path_request_style"}
	if m.EndpointURL != "" {
		opts = append(opts, "url="+m.EndpointURL)
	}
	if m.Region != "" {
		opts = append(opts, "endpoint="+m.Region)
	}
	if m.ReadOnly {
		opts = append(opts, "ro")
	}
	if m.Cache != "" {
		opts = append(opts, "use_cache="+m.Cache)
	}
	if m.AllowOther {
		opts = append(opts, "allow_other")
	}
	if m.UID != nil {
		opts = append(opts, "uid="+strconv.Itoa(*m.UID))
	}
	if m.GID != nil {
		opts = append(opts, "gid="+strconv.Itoa(*m.GID))
	}
	a := []string{bin, src, m.MountPath, "-f", "-o", strings.Join(opts, ",")}
	return append(a, m.ExtraArgs...)
}

// rcloneArgv: rclone mount of an on-the-fly S3 remote; credentials from the
// environment (env_auth).
func rcloneArgv(bin string, m *S3MountConfig) []string {
	remote := ":s3,provider=Other,env_auth=true"
	if m.EndpointURL != "" {
		remote += ",endpoint='" + m.EndpointURL + "'"
	}
	if m.Region != "" {
		remote += ",region=" + m.Region
	}
	remote += ":" + m.Bucket
	if m.Prefix != "" {
		remote += "/" + strings.TrimSuffix(m.Prefix, "/")
	}
	a := []string{bin, "mount", remote, m.MountPath}
	if m.ReadOnly {
		a = append(a, "--read-only")
	}
	if m.Cache != "" {
		a = append(a, "--vfs-cache-mode", "full", "--cache-dir", m.Cache)
	}
	return append(ownerFlags(a, m), m.ExtraArgs...)
}

// ownerFlags appends --allow-other, --uid and --gid (mount-s3 and rclone
// spell them alike).
func ownerFlags(a []string, m *S3MountConfig) []string {
	if m.AllowOther {
		a = append(a, "--allow-other")
	}
	if m.UID != nil {
		a = append(a, "--uid", strconv.Itoa(*m.UID))
	}
	if m.GID != nil {
		a = append(a, "--gid", strconv.Itoa(*m.GID))
	}
	return a
}
