package interrupt

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sources of a notice.
const (
	SourceIMDS  = "imds"
	SourceTaint = "taint"
)

// The IMDS paths watched, below /latest/meta-data/.
const (
	pathSpot        = "spot/instance-action"
	pathRebalance   = "events/recommendations/rebalance"
	pathMaintenance = "events/maintenance/scheduled"
	pathASG         = "autoscaling/target-lifecycle-state"
)

var noticePaths = []string{pathSpot, pathRebalance, pathMaintenance, pathASG}

// A Notice is one interruption signal about this node.
type Notice struct {
	Kind   string
	Source string
	// ID identifies the notice: the same notice seen again (next poll, or
	// after an agent restart) has the same ID.
	ID string
	// Detail: the spot action, the maintenance code, or the taint key.
	Detail string
	// Time is when it takes effect (spot: the termination time;
	// maintenance: NotBefore); zero when the notice does not say.
	Time time.Time
	// Seen is when the agent first saw it.
	Seen time.Time
}

func (n Notice) String() string {
	s := n.Kind + " (" + n.Source + ": " + n.Detail
	if !n.Time.IsZero() {
		s += ", at " + n.Time.UTC().Format(time.RFC3339)
	}
	return s + ")"
}

// Reasons a notice body is rejected (the bad_notices_total reason label).
const (
	badJSON     = "malformed"
	badAction   = "unknown_action"
	badTime     = "bad_time"
	badPastTime = "past_time"
)

// A badNotice is a body that cannot be a real notice; it is counted and
// logged, and never decommissions anything.
type badNotice struct {
	reason string
	err    error
}

func (e *badNotice) Error() string { return e.reason + ": " + e.err.Error() }

func bad(reason, format string, args ...any) error {
	return &badNotice{reason: reason, err: fmt.Errorf(format, args...)}
}

// clockSkew is how far in the past a spot notice's time may be and still
// count: IMDS and the node's clock may differ by a little.
const clockSkew = 5 * time.Second

// parseSpot parses spot/instance-action:
// {"action": "terminate", "time": "2026-11-23T20:45:29Z"}. A time already
// past (beyond clockSkew) is rejected: the instance would be gone.
func parseSpot(body []byte, now time.Time) (Notice, error) {
	var v struct {
		Action string `json:"action"`
		Time   string `json:"time"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return Notice{}, bad(badJSON, "spot notice is not JSON: %v", err)
	}
	switch v.Action {
	case "terminate", "stop", "hibernate":
	default:
		return Notice{}, bad(badAction, "spot notice action must be terminate, stop or hibernate, got %q", v.Action)
	}
	t, err := time.Parse(time.RFC3339, v.Time)
	if err != nil {
		return Notice{}, bad(badTime, "spot notice time %q: %v", v.Time, err)
	}
	if t.Before(now.Add(-clockSkew)) {
		return Notice{}, bad(badPastTime, "spot notice time %s is %s in the past", v.Time, now.Sub(t).Round(time.Second))
	}
	// One instance is interrupted once; the time may be restated.
	return Notice{Kind: KindSpot, Source: SourceIMDS, ID: "spot/" + v.Action, Detail: v.Action, Time: t}, nil
}

// parseRebalance parses events/recommendations/rebalance:
// {"noticeTime": "2020-10-27T08:22:00Z"}.
func parseRebalance(body []byte) (Notice, error) {
	var v struct {
		NoticeTime string `json:"noticeTime"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return Notice{}, bad(badJSON, "rebalance recommendation is not JSON: %v", err)
	}
	if _, err := time.Parse(time.RFC3339, v.NoticeTime); err != nil {
		return Notice{}, bad(badTime, "rebalance noticeTime %q: %v", v.NoticeTime, err)
	}
	// One recommendation per instance; its time may be restated.
	return Notice{Kind: KindRebalance, Source: SourceIMDS, ID: "rebalance", Detail: "noticeTime " + v.NoticeTime}, nil
}

// maintenanceTime is the layout of NotBefore and NotAfter ("21 Jan 2019 09:00:43 GMT").
const maintenanceTime = "2 Jan 2006 15:04:05 MST"

// parseMaintenance parses events/maintenance/scheduled, a list of events.
// Only active events count; one whose NotAfter has passed is over.
func parseMaintenance(body []byte, now time.Time) ([]Notice, error) {
	var events []struct {
		Code      string `json:"Code"`
		State     string `json:"State"`
		EventID   string `json:"EventId"`
		NotBefore string `json:"NotBefore"`
		NotAfter  string `json:"NotAfter"`
	}
	if err := json.Unmarshal(body, &events); err != nil {
		return nil, bad(badJSON, "scheduled maintenance is not a JSON list: %v", err)
	}
	var out []Notice
	var errs []error
	for _, e := range events {
		if !strings.EqualFold(e.State, "active") {
			continue // completed or canceled
		}
		if e.EventID == "" {
			errs = append(errs, bad(badJSON, "scheduled maintenance event without EventId"))
			continue
		}
		nb, err := time.Parse(maintenanceTime, e.NotBefore)
		if err != nil {
			errs = append(errs, bad(badTime, "maintenance %s NotBefore %q: %v", e.EventID, e.NotBefore, err))
			continue
		}
		if na, err := time.Parse(maintenanceTime, e.NotAfter); err == nil && na.Before(now) {
			continue // its window is over
		}
		out = append(out, Notice{Kind: KindMaintenance, Source: SourceIMDS, ID: "maintenance/" + e.EventID, Detail: e.Code, Time: nb})
	}
	return out, errors.Join(errs...)
}

// parseASG parses autoscaling/target-lifecycle-state: a word such as
// InService or Terminated. Only Terminated is a notice.
func parseASG(body []byte) (Notice, bool) {
	if strings.TrimSpace(string(body)) != "Terminated" {
		return Notice{}, false
	}
	return Notice{Kind: KindASG, Source: SourceIMDS, ID: "asg/Terminated", Detail: "target-lifecycle-state Terminated"}, true
}
