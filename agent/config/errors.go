// Package config holds what every feature's configuration shares: strict YAML
// decoding that names the key path of every problem, and the error list that
// Validate methods return.
//
// A feature's config is a struct with yaml tags, written "camelCase" like
// Kubernetes objects; durations are time.Duration and written "30s". The
// agent fills the struct with the feature's defaults, decodes the feature's
// section over it strictly (an unknown key is an error), then calls its
// Validate method, which reports every problem with its key path relative to
// the section:
//
//	func (c *Config) Validate() error {
//		var errs config.Errors
//		if c.Cache.DenialTTL <= 0 {
//			errs.Addf("cache.denialTTL", "must be > 0s, got %s", c.Cache.DenialTTL)
//		}
//		return errs.Err()
//	}
//
// The agent prefixes the section name, so a user reads
// "dnscache.cache.denialTTL: must be > 0s, got 0s".
package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem at one key path.
type FieldError struct {
	Path string // e.g. "dnscache.cache.denialTTL"
	Msg  string // e.g. "must be > 0s"
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors is every problem found in a config. Its zero value is empty and ready to use.
type Errors []FieldError

// Addf records a problem at path.
func (e *Errors) Addf(path, format string, args ...any) {
	*e = append(*e, FieldError{Path: path, Msg: sprintf(format, args...)})
}

// Add appends err under prefix: the paths of an Errors are prefixed, any other
// error becomes one problem at prefix.
func (e *Errors) Add(prefix string, err error) {
	if err == nil {
		return
	}
	var list Errors
	if errors.As(err, &list) {
		for _, fe := range list {
			*e = append(*e, FieldError{Path: JoinPath(prefix, fe.Path), Msg: fe.Msg})
		}
		return
	}
	*e = append(*e, FieldError{Path: prefix, Msg: err.Error()})
}

// Err returns nil when there is no problem, and the list otherwise.
func (e Errors) Err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// MaxListed is how many problems Error lists before "...and N more": a
// file that is wrong throughout (a wrong file pasted, every key misspelt)
// still reads as a short message in a log line or an Event.
const MaxListed = 20

// Error lists the problems one per line, at most MaxListed of them.
func (e Errors) Error() string {
	n := min(len(e), MaxListed)
	lines := make([]string, n, n+1)
	for i, fe := range e[:n] {
		lines[i] = fe.Error()
	}
	if len(e) > n {
		lines = append(lines, fmt.Sprintf("...and %d more", len(e)-n))
	}
	return strings.Join(lines, "\n")
}

// JoinPath joins key path parts with dots, skipping empty ones.
func JoinPath(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 && !strings.HasPrefix(p, "[") {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}
