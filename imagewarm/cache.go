package imagewarm

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// errCacheWait: a first mount with cache "raid" waits for the raid mount.
var errCacheWait = errors.New("waiting for the raid mount")

// cacheDir is the host directory mt's daemon caches in ("" = none): the
// configured one, or for "raid" <raidMount>/s3cache/<name> while raid's
// mount is there. A first mount waits up to cacheWait for it (raid may
// still be assembling the array); a heal or a changed option does not: the
// JARs are served without a cache rather than not at all.
func (s *s3Mounts) cacheDir(mt *s3Mount, first bool) (string, error) {
	c := &mt.cfg
	if c.Cache != CacheOnRaid {
		return c.Cache, nil
	}
	if e, err := s.mountEntry(s.o.RaidMount); err == nil && e != nil {
		return filepath.Join(s.o.RaidMount, "s3cache", c.Name), nil
	}
	if first {
		if mt.cacheWaitSince.IsZero() {
			mt.cacheWaitSince = time.Now()
		}
		if left := s.o.CacheWait - time.Since(mt.cacheWaitSince); left > 0 {
			return "", fmt.Errorf("%w at %s for its cache (%s left, then mounted without one)", errCacheWait, s.o.RaidMount, left.Round(time.Second))
		}
	}
	s.log.Warn("no raid mount: S3 mount made without a cache", "mount", c.Name, "raidMount", s.o.RaidMount)
	return "", nil
}

// wantCache is the cache rec's daemon should have: the configured one, or
// for "raid" the one it got (a raid mount that appears later changes
// nothing until the next heal: remounting would cut open files).
func wantCache(c *S3MountConfig, rec *mountRecord) string {
	if c.Cache == CacheOnRaid {
		return rec.Cache
	}
	return c.Cache
}
