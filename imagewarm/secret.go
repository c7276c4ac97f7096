package imagewarm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// secretSource reads the dockerconfigjson Secret by name, keeping what it
// read for credentials.secretRefresh; a failed read keeps the last good one.
func (w *Warmer) secretSource(namespace, name string) func(ctx context.Context) (map[string]cred, error) {
	var mu sync.Mutex
	var last map[string]cred
	var read time.Time
	return func(ctx context.Context) (map[string]cred, error) {
		mu.Lock()
		defer mu.Unlock()
		if last != nil && time.Since(read) < w.cfg.Credentials.SecretRefresh {
			return last, nil
		}
		k := w.deps.Kube
		if k == nil {
			return nil, errors.New("secret " + namespace + "/" + name + ": the agent runs without a cluster")
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		sec, err := k.Secret(sctx, namespace, name)
		if err == nil && sec.Type != corev1.SecretTypeDockerConfigJson {
			err = fmt.Errorf("type is %q, want %s", sec.Type, corev1.SecretTypeDockerConfigJson)
		}
		var auth map[string]cred
		if err == nil {
			auth, err = parseDockerConfigJSON(sec.Data[corev1.DockerConfigJsonKey])
		}
		if err != nil {
			if last != nil {
				w.log.Warn("image pull secret not read; keeping the last one", "secret", namespace+"/"+name, "err", err)
				return last, nil
			}
			return nil, fmt.Errorf("secret %s/%s: %w", namespace, name, err)
		}
		last, read = auth, time.Now()
		return last, nil
	}
}
