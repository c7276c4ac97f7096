package interrupt

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// StateAnnotation on the Node remembers, across agent restarts, the notices
// handled and the executor containers already told, so that no container is
// signalled twice: a second SIGPWR kills a decommissioning Spark executor.
const StateAnnotation = "nodeagent.io/interruption-state"

// Bounds of the remembered lists (the oldest are forgotten first).
const (
	maxNotices    = 64
	maxContainers = 512
)

type stateDoc struct {
	Notices []string `json:"notices,omitempty"`
	// Told are the container IDs (signal) or pod UIDs (evict) already told.
	Told []string `json:"told,omitempty"`
}

// state is the in-memory copy of the annotation; save writes it back.
type state struct {
	mu  sync.Mutex
	doc stateDoc
}

func (s *state) load(raw string) error {
	if raw == "" {
		return nil
	}
	var d stateDoc
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		return fmt.Errorf("annotation %s: %w", StateAnnotation, err)
	}
	s.mu.Lock()
	s.doc = d
	s.mu.Unlock()
	return nil
}

func (s *state) handled(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.doc.Notices, id)
}

func (s *state) told(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.doc.Told, id)
}

// mark adds notice and told IDs; it reports whether anything was new.
func (s *state) mark(notice string, told ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	if notice != "" && !slices.Contains(s.doc.Notices, notice) {
		s.doc.Notices = append(s.doc.Notices, notice)
		changed = true
	}
	for _, t := range told {
		if !slices.Contains(s.doc.Told, t) {
			s.doc.Told = append(s.doc.Told, t)
			changed = true
		}
	}
	if n := len(s.doc.Notices); n > maxNotices {
		s.doc.Notices = s.doc.Notices[n-maxNotices:]
	}
	if n := len(s.doc.Told); n > maxContainers {
		s.doc.Told = s.doc.Told[n-maxContainers:]
	}
	return changed
}

func (s *state) encode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(s.doc)
	return string(b)
}

// save writes the state to the Node.
func (f *Interrupt) saveState(ctx context.Context) error {
	v := f.st.encode()
	return f.kube.SetAnnotation(ctx, StateAnnotation, &v)
}
