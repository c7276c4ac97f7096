package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// auditPolicy logs every request of a ServiceAccount (the agent's among
// them) at Metadata level, and nothing else: the API server's own count of
// what the agent asks of it.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
`

func (c *Cluster) auditFlags() ([]string, error) {
	policy := filepath.Join(c.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	c.AuditLog = filepath.Join(c.Dir, "logs", "audit.log")
	return []string{"--audit-policy-file=" + policy, "--audit-log-path=" + c.AuditLog}, nil
}

// AuditEvent is the part of an audit.k8s.io/v1 Event that counting needs.
type AuditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
	StageTimestamp  time.Time `json:"stageTimestamp"`
}

// Key is "verb resource[/subresource]", e.g. "watch nodes".
func (e AuditEvent) Key() string {
	if e.ObjectRef == nil {
		return e.Verb + " " + e.RequestURI
	}
	r := e.ObjectRef.Resource
	if e.ObjectRef.Subresource != "" {
		r += "/" + e.ObjectRef.Subresource
	}
	return e.Verb + " " + r
}

// AuditRequests returns the requests of user that the API server served
// in [from, to), one per request, read from its audit log: those received
// then, and the watches received before that were still open at from (each
// counts once: a window shorter than a watch's life still pays for it).
func (c *Cluster) AuditRequests(user string, from, to time.Time) ([]AuditEvent, error) {
	f, err := os.Open(c.AuditLog)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	first := map[string]AuditEvent{} // by auditID: its first stage
	ended := map[string]time.Time{}  // by auditID: when it completed
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("audit log %s: %w", c.AuditLog, err)
		}
		if e.User.Username != user {
			continue
		}
		if _, ok := first[e.AuditID]; !ok {
			first[e.AuditID] = e
			order = append(order, e.AuditID)
		}
		if e.Stage == "ResponseComplete" || e.Stage == "Panic" {
			ended[e.AuditID] = e.StageTimestamp
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []AuditEvent
	for _, id := range order {
		e := first[id]
		end, done := ended[id]
		inWindow := !e.RequestReceived.Before(from) && e.RequestReceived.Before(to)
		openAtFrom := e.RequestReceived.Before(from) && (!done || !end.Before(from))
		if inWindow || openAtFrom {
			out = append(out, e)
		}
	}
	return out, nil
}

// CountByKey sums requests by Key, as "watch nodes=2, ..." sorted.
func CountByKey(evs []AuditEvent) string {
	n := map[string]int{}
	for _, e := range evs {
		n[e.Key()]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, n[k])
	}
	return strings.Join(parts, ", ")
}
