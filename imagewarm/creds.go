package imagewarm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodeagent/nodeagent/agent/hostexec"
)

// The kubelet credential provider API (kubelet.config.k8s.io
// CredentialProviderConfig, credentialprovider.kubelet.k8s.io
// CredentialProviderResponse), the fields kubelet uses. These few structs
// are written here rather than imported from k8s.io/kubelet, whose packages
// added 2 MB to the agent's idle RSS (scheme and model registration).
type providerConfig struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Providers  []provider `json:"providers"`
}

type provider struct {
	Name                 string           `json:"name"`
	MatchImages          []string         `json:"matchImages"`
	DefaultCacheDuration *metav1.Duration `json:"defaultCacheDuration"`
	APIVersion           string           `json:"apiVersion"`
	Args                 []string         `json:"args,omitempty"`
	Env                  []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env,omitempty"`
	// Service-account token providers (kubelet 1.33+) are not supported:
	// the agent pulls for no pod.
	TokenAttributes map[string]any `json:"tokenAttributes,omitempty"`
}

type providerResponse struct {
	Kind          string           `json:"kind"`
	APIVersion    string           `json:"apiVersion"`
	CacheKeyType  string           `json:"cacheKeyType"`
	CacheDuration *metav1.Duration `json:"cacheDuration,omitempty"`
	Auth          map[string]struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"auth,omitempty"`
}

// cred is a username and password (or token) for one registry.
type cred struct {
	User, Secret string
}

// creds finds the credentials for an image's registry: kubelet's image
// credential providers first (exec'd as kubelet would, cached for the
// duration they answer), then the dockerconfigjson Secret.
type creds struct {
	providers []provider
	binDir    string
	exec      hostexec.Runner
	secret    func(ctx context.Context) (map[string]cred, error) // nil = none
	now       func() time.Time

	mu    sync.Mutex
	cache map[string]cachedAuth // by provider name + cache key
}

type cachedAuth struct {
	auth    map[string]cred
	expires time.Time
}

// loadProviderConfig reads kubelet's CredentialProviderConfig (YAML or
// JSON, kubelet.config.k8s.io v1, v1beta1 or v1alpha1: the fields used here
// are the same).
func loadProviderConfig(file string) ([]provider, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("credential provider config: %w", err)
	}
	var c providerConfig
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("credential provider config %s: %w", file, err)
	}
	if c.Kind != "" && c.Kind != "CredentialProviderConfig" {
		return nil, fmt.Errorf("credential provider config %s: kind is %q, want CredentialProviderConfig", file, c.Kind)
	}
	for i, p := range c.Providers {
		if p.Name == "" || strings.ContainsAny(p.Name, "/\\") || p.Name == "." || p.Name == ".." {
			return nil, fmt.Errorf("credential provider config %s: providers[%d].name %q must be a plain file name", file, i, p.Name)
		}
		if len(p.MatchImages) == 0 {
			return nil, fmt.Errorf("credential provider config %s: providers[%d].matchImages must not be empty", file, i)
		}
	}
	return c.Providers, nil
}

// forImage returns the credentials function the resolver calls per host,
// for pulls of image (a normalized reference). Errors from a source are
// returned by the function, so that the pull fails with them.
func (c *creds) forImage(ctx context.Context, image string) func(host string) (string, string, error) {
	if c == nil {
		return nil
	}
	return func(host string) (string, string, error) {
		var errs []error
		for _, p := range c.providers {
			if !matchAny(p.MatchImages, image) {
				continue
			}
			auth, err := c.provide(ctx, p, image)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if cr, ok := lookup(auth, image, host); ok {
				return cr.User, cr.Secret, nil
			}
		}
		if c.secret != nil {
			auth, err := c.secret(ctx)
			if err != nil {
				errs = append(errs, err)
			} else if cr, ok := lookup(auth, image, host); ok {
				return cr.User, cr.Secret, nil
			}
		}
		if len(errs) > 0 {
			return "", "", fmt.Errorf("%w: %w", errCredentials, errors.Join(errs...))
		}
		return "", "", nil // anonymous
	}
}

// provide execs provider p for image, or answers from the cache.
func (c *creds) provide(ctx context.Context, p provider, image string) (map[string]cred, error) {
	now := c.now()
	c.mu.Lock()
	for _, key := range cacheKeys(p.Name, image) {
		if e, ok := c.cache[key]; ok {
			if now.Before(e.expires) {
				c.mu.Unlock()
				return e.auth, nil
			}
			delete(c.cache, key)
		}
	}
	c.mu.Unlock()

	req, err := json.Marshal(map[string]string{
		"apiVersion": p.APIVersion, "kind": "CredentialProviderRequest", "image": image,
	})
	if err != nil {
		return nil, err
	}
	env := make([]string, 0, len(p.Env))
	for _, e := range p.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	out, err := c.exec.Run(ctx, hostexec.Cmd{
		Name: filepath.Join(c.binDir, p.Name), Args: p.Args, Stdin: req, Env: env, Timeout: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("credential provider %s: %w", p.Name, err)
	}
	var resp providerResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("credential provider %s: bad response: %w", p.Name, err)
	}
	if resp.Kind != "CredentialProviderResponse" {
		return nil, fmt.Errorf("credential provider %s: response kind %q, want CredentialProviderResponse", p.Name, resp.Kind)
	}
	if resp.APIVersion != p.APIVersion {
		return nil, fmt.Errorf("credential provider %s: response apiVersion %q, want %q", p.Name, resp.APIVersion, p.APIVersion)
	}
	auth := make(map[string]cred, len(resp.Auth))
	for k, a := range resp.Auth {
		auth[k] = cred{User: a.Username, Secret: a.Password}
	}
	ttl := time.Duration(0)
	if p.DefaultCacheDuration != nil {
		ttl = p.DefaultCacheDuration.Duration
	}
	if resp.CacheDuration != nil {
		ttl = resp.CacheDuration.Duration
	}
	if ttl > 0 {
		var key string
		switch resp.CacheKeyType {
		case "Global":
			key = p.Name + " global"
		case "Registry":
			key = p.Name + " registry " + registryOf(image)
		default:
			key = p.Name + " image " + image
		}
		c.mu.Lock()
		c.cache[key] = cachedAuth{auth: auth, expires: now.Add(ttl)}
		c.mu.Unlock()
	}
	return auth, nil
}

func cacheKeys(provider, image string) []string {
	return []string{provider + " image " + image, provider + " registry " + registryOf(image), provider + " global"}
}

func registryOf(image string) string {
	host, _, _ := strings.Cut(image, "/")
	return host
}

// lookup picks the credential for host from auth, whose keys are image
// patterns ("registry/path", globs allowed as in matchImages): the longest
// key matching image whose host part matches host; else the longest key
// whose host part matches host.
func lookup(auth map[string]cred, image, host string) (cred, bool) {
	keys := make([]string, 0, len(auth))
	for k := range auth {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return len(keys[i]) > len(keys[j]) || len(keys[i]) == len(keys[j]) && keys[i] < keys[j]
	})
	host = normalizeAuthKey(host)
	hostOK := func(k string) bool { return urlsMatch(normalizeAuthKey(hostOfPattern(k)), host) }
	for _, k := range keys {
		if hostOK(k) && urlsMatch(k, image) {
			return auth[k], true
		}
	}
	for _, k := range keys {
		if hostOK(k) {
			return auth[k], true
		}
	}
	return cred{}, false
}

func hostOfPattern(p string) string {
	u, err := parseSchemeless(p)
	if err != nil {
		return ""
	}
	return u.Host
}

func matchAny(patterns []string, image string) bool {
	for _, p := range patterns {
		if urlsMatch(p, image) {
			return true
		}
	}
	return false
}

// urlsMatch reports whether image matches glob the way kubelet matches
// matchImages: the same number of host labels, each matching (path.Match),
// the same port, and the glob's path a prefix of the image's.
func urlsMatch(glob, image string) bool {
	g, err := parseSchemeless(glob)
	if err != nil {
		return false
	}
	t, err := parseSchemeless(image)
	if err != nil {
		return false
	}
	gh, gp := splitPort(g.Host)
	th, tp := splitPort(t.Host)
	if gp != tp {
		return false
	}
	gparts, tparts := strings.Split(gh, "."), strings.Split(th, ".")
	if len(gparts) != len(tparts) {
		return false
	}
	for i := range gparts {
		if ok, err := path.Match(gparts[i], tparts[i]); err != nil || !ok {
			return false
		}
	}
	return strings.HasPrefix(t.Path, g.Path)
}

func parseSchemeless(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	return url.Parse(s)
}

func splitPort(hostport string) (host, port string) {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.Contains(hostport[i:], "]") {
		return hostport[:i], hostport[i+1:]
	}
	return hostport, ""
}

// parseDockerConfigJSON reads a kubernetes.io/dockerconfigjson payload
// ({"auths": {"host": {"auth": base64(user:pass)} or username/password}}).
// Keys are normalized to "host[/path]" (scheme dropped; Docker Hub's
// index.docker.io/v1/ becomes docker.io's registry host).
func parseDockerConfigJSON(data []byte) (map[string]cred, error) {
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("dockerconfigjson: %w", err)
	}
	out := make(map[string]cred, len(cfg.Auths))
	for k, a := range cfg.Auths {
		c := cred{User: a.Username, Secret: a.Password}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("dockerconfigjson: auths[%q].auth is not base64", k)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("dockerconfigjson: auths[%q].auth is not user:password", k)
			}
			c = cred{User: user, Secret: pass}
		}
		if a.IdentityToken != "" {
			c = cred{Secret: a.IdentityToken}
		}
		out[normalizeAuthKey(k)] = c
	}
	return out, nil
}

func normalizeAuthKey(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	k = strings.TrimSuffix(k, "/")
	switch k {
	case "index.docker.io/v1", "index.docker.io", "docker.io", "registry-1.docker.io":
		return "registry-1.docker.io"
	}
	return k
}
