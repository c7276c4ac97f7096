package imagewarm

import (
	"context"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
)

// defaultRegistryConfigPath is where containerd's hosts.toml directories
// live when neither the config nor the CRI names a path.
const defaultRegistryConfigPath = "/etc/containerd/certs.d"

// resolver resolves and fetches as containerd's CRI would: hosts, mirrors,
// CA and client certificates from the hosts.toml directories in dirs (the
// first that has one for a host wins, as CRI's config_path list), with
// credentials from creds.
func resolver(ctx context.Context, dirs []string, creds func(host string) (string, string, error)) remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: config.ConfigureHosts(ctx, config.HostOptions{
			HostDir:     hostDirFromRoots(dirs),
			Credentials: creds,
		}),
	})
}

func hostDirFromRoots(roots []string) func(string) (string, error) {
	fns := make([]func(string) (string, error), 0, len(roots))
	for _, r := range roots {
		fns = append(fns, config.HostDirFromRoot(r))
	}
	return func(host string) (string, error) {
		for _, fn := range fns {
			dir, err := fn(host)
			if err != nil && !errdefs.IsNotFound(err) {
				return "", err
			}
			if dir != "" {
				return dir, nil
			}
		}
		return "", errdefs.ErrNotFound
	}
}

// registryDirs lists the hosts.toml roots below the host root: the
// config's path, else the CRI's config_path (a list like $PATH), else the
// default. Roots that do not exist are kept: containerd treats them as empty.
func (w *Warmer) registryDirs(cri criSettings) []string {
	p := w.cfg.RegistryConfigPath
	if p == "" {
		p = cri.RegistryConfigPath
	}
	if p == "" {
		p = defaultRegistryConfigPath
	}
	var dirs []string
	for _, d := range filepath.SplitList(p) {
		dirs = append(dirs, w.deps.Host.Path(d))
	}
	return dirs
}
