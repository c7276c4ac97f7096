package imagewarm

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
)

// Image states, also the values of the metric's state label.
const (
	statePending = "pending" // not checked yet
	statePulling = "pulling"
	statePresent = "present" // records, content and snapshots in place
	stateFailed  = "failed"  // the last attempt failed; retrying
)

var allStates = []string{statePending, statePulling, statePresent, stateFailed}

// imageState is one configured image and what the agent knows of it.
type imageState struct {
	cfg   ImageConfig
	named reference.Named // normalized, as kubelet names it
	ref   string          // named.String()

	mu         sync.Mutex
	state      string
	reason     string // failure class (metric label) when failed
	err        error  // the last failure
	done       int64  // bytes fetched by the current attempt
	total      int64  // bytes the current attempt needs (grows as manifests are read)
	started    time.Time
	retryAt    time.Time
	warmed     bool // present at least once in this process
	attempts   int  // failed attempts since the last success
	imageID    string
	lastPull   time.Duration
	lastNotice string // last reason an Event was sent for
}

func newImageState(cfg ImageConfig) (*imageState, error) {
	named, err := reference.ParseDockerRef(cfg.Ref)
	if err != nil {
		return nil, err
	}
	return &imageState{cfg: cfg, named: named, ref: named.String(), state: statePending}, nil
}

// label is the image's metric label and name in messages.
func (s *imageState) label() string {
	if s.cfg.Platform != "" {
		return s.ref + " (" + s.cfg.Platform + ")"
	}
	return s.ref
}

func (s *imageState) set(f func(s *imageState)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

// describe says where the image stands, for /readyz.
func (s *imageState) describe(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case statePulling:
		return fmt.Sprintf("%s pulling %s of %s for %s", s.label(), mb(s.done), mb(s.total), now.Sub(s.started).Round(time.Second))
	case stateFailed:
		return fmt.Sprintf("%s failed (%s, %d attempts, retry in %s): %v", s.label(), s.reason, s.attempts, s.retryAt.Sub(now).Round(time.Second), s.err)
	default:
		return s.label() + " " + s.state
	}
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// notReady lists the required images not yet warmed in this process.
func notReady(images []*imageState, now time.Time) string {
	var missing []string
	for _, s := range images {
		s.mu.Lock()
		warmed := s.warmed
		s.mu.Unlock()
		if s.cfg.Required && !warmed {
			missing = append(missing, s.describe(now))
		}
	}
	return strings.Join(missing, "; ")
}
