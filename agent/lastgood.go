package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// The last good config is a copy of the config file kept on the host
// (Options.LastGoodPath, below a host path the agent owns). Every config
// put in force is written there; when the mounted file is invalid at start,
// which would otherwise crash-loop the agent on every node a bad ConfigMap
// reaches, the agent starts from the copy instead, and says so loudly.

// loadConfigFile reads and loads the mounted config file. When it is
// unreadable or invalid and a valid last good copy exists, it returns the
// copy's config, with fallback set to what was wrong with the file. data is
// what was read from the mounted file (nil if unreadable).
func loadConfigFile(opts Options) (fc *FileConfig, data []byte, fallback error, err error) {
	data, err = os.ReadFile(opts.ConfigPath)
	if err == nil {
		fc, err = LoadConfig(data, opts.Specs)
	}
	if err == nil {
		return fc, data, nil, nil
	}
	err = fmt.Errorf("config %s:\n%w", opts.ConfigPath, err)
	if opts.LastGoodPath == "" {
		return nil, nil, nil, err
	}
	good, gerr := os.ReadFile(opts.LastGoodPath)
	if errors.Is(gerr, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("%w\n(no last good config at %s yet: this node never ran a valid one)", err, opts.LastGoodPath)
	}
	if gerr == nil {
		fc, gerr = LoadConfig(good, opts.Specs)
	}
	if gerr != nil {
		return nil, nil, nil, fmt.Errorf("%w\nlast good config %s unusable too:\n%w", err, opts.LastGoodPath, gerr)
	}
	return fc, data, err, nil
}

// startFromLastGood reports, once the agent runs, that it started from the
// host's copy: a log line, nodeagent_config_last_good_in_use 1,
// last_reload_successful 0 and a Warning Event ConfigRejected.
func (a *Agent) startFromLastGood(why error) {
	fc := a.cfg.Load()
	a.metrics.lastGoodInUse.Set(1)
	a.metrics.lastReloadOK.Set(0)
	a.metrics.reloadFailures.Inc()
	a.log.Error("config rejected at start; running from the last good config kept on the host",
		"config", a.opts.ConfigPath, "lastGood", a.opts.LastGoodPath, "hash", fc.Hash, "err", why)
	if k := a.opts.Kube; k != nil && fc.Agent.Events.Enabled {
		k.Event(corev1.EventTypeWarning, "ConfigRejected", "Start",
			"config %s rejected at start, running from the last good config %s (%s): %s", a.opts.ConfigPath, a.opts.LastGoodPath, fc.Hash, why)
	}
}

// saveLastGood keeps data, the config now in force, as the last good copy.
// It writes only when the copy differs, atomically (a temporary file
// renamed over it), so a crash mid-write never leaves a truncated copy.
func (a *Agent) saveLastGood(data []byte) {
	path := a.opts.LastGoodPath
	if path == "" {
		return
	}
	a.metrics.lastGoodInUse.Set(0)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return
	}
	if err := writeAtomic(path, data); err != nil {
		a.log.Warn("last good config not kept on the host", "path", path, "err", err)
	}
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename, nothing to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
