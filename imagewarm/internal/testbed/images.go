package testbed

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RandomImage is an image of layers random layers of about layerBytes each
// (random data: compressed size ~ layerBytes), for os/arch.
func RandomImage(layerBytes int64, layers int64, os, arch string) (v1.Image, error) {
	img, err := random.Image(layerBytes, layers)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = os, arch
	cf.Config.Cmd = []string{"/bin/true"}
	return mutate.ConfigFile(img, cf)
}

// Index is a multi-arch index of one random image per platform ("os/arch").
func Index(layerBytes, layers int64, plats ...string) (v1.ImageIndex, error) {
	idx := v1.ImageIndex(empty.Index)
	for _, p := range plats {
		pl, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, err
		}
		img, err := RandomImage(layerBytes, layers, pl.OS, pl.Architecture)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: pl}})
	}
	return idx, nil
}

func opts(ctx context.Context, auth authn.Authenticator) []remote.Option {
	o := []remote.Option{remote.WithContext(ctx), remote.WithJobs(4)}
	if auth != nil {
		o = append(o, remote.WithAuth(auth))
	}
	return o
}

// Push writes img to ref (plain HTTP) and returns its manifest digest.
func Push(ctx context.Context, ref string, img v1.Image, auth authn.Authenticator) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img, opts(ctx, auth)...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	return d.String(), err
}

// PushIndex writes idx to ref and returns its digest.
func PushIndex(ctx context.Context, ref string, idx v1.ImageIndex, auth authn.Authenticator) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(r, idx, opts(ctx, auth)...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := idx.Digest()
	return d.String(), err
}
