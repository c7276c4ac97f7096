// Package kubetest is an in-process stand-in for the parts of the API server
// that package kube uses: one Node (GET, LIST and WATCH with a field
// selector, JSON/merge/strategic-merge PATCH of the object and its status,
// with resourceVersion bumps), Services (GET, LIST and WATCH) and events.k8s.io/v1 Events
// (POST, LIST). It counts the requests it serves, by verb and resource. Patches are applied with the same
// libraries the API server uses. It is for fast unit tests; e2e/ runs the real
// kube-apiserver.
package kubetest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// Server holds the objects; read them with Node and Events.
type Server struct {
	Config *rest.Config

	mu       sync.Mutex
	node     *corev1.Node
	services map[string]*corev1.Service // "ns/name"
	// svcVersion is the Services' resourceVersion; svcChanged is closed and
	// replaced on each Service change.
	svcVersion int
	svcChanged chan struct{}
	events     []eventsv1.Event
	requests   map[string]int // "VERB resource", e.g. "WATCH nodes"
	changed    chan struct{}  // closed and replaced on each node change
	expired    int            // watches from a resourceVersion at or below it get 410 Gone
	down       bool           // every request fails with 500 while set
	// BeforePatch, if set, runs before each node patch is applied (e.g. to
	// change the node concurrently).
	BeforePatch func(*corev1.Node)
	// NoWatchList answers watch-list requests (sendInitialEvents=true) with
	// 422, as an API server without the WatchList feature does; client-go
	// then lists. BeforeList, if set, runs before each list is served.
	// Set both before the first request.
	NoWatchList bool
	BeforeList  func(resource string)
}

// New serves node (and services) until the test ends.
func New(t *testing.T, node *corev1.Node, services ...*corev1.Service) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{node: node.DeepCopy(), services: map[string]*corev1.Service{}, requests: map[string]int{}, changed: make(chan struct{}), svcChanged: make(chan struct{})}
	if s.node.ResourceVersion == "" {
		s.node.ResourceVersion = "1"
	}
	for _, svc := range services {
		s.SetService(svc.Namespace, svc.Name, svc)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(func() {
		cancel() // ends open watches, which Close would wait for
		srv.Close()
	})
	s.Config = &rest.Config{Host: srv.URL}
	return s
}

// Node returns a copy of the node.
func (s *Server) Node() *corev1.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.DeepCopy()
}

// Events returns the Events recorded so far.
func (s *Server) Events() []eventsv1.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]eventsv1.Event(nil), s.events...)
}

// Requests returns how many requests were served, by "VERB resource":
// "GET nodes", "LIST nodes", "WATCH nodes", "PATCH nodes", "PATCH
// nodes/status", "GET services", "LIST services", "WATCH services", "POST
// events".
func (s *Server) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// Update changes the node as another writer would (kubelet, an admin): fn
// edits it, its resourceVersion moves on and watchers hear of it.
func (s *Server) Update(fn func(*corev1.Node)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.node)
	s.bumpLocked()
}

// Expire forgets the node's history, as etcd compaction does: open watches
// end, and a watch from a resourceVersion before now gets 410 Gone, so the
// client must list again.
func (s *Server) Expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bumpLocked()
	s.expired, _ = strconv.Atoi(s.node.ResourceVersion)
}

func (s *Server) bumpLocked() {
	Bump(s.node)
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) count(verb, resource string) {
	s.requests[verb+" "+resource]++
}

// Down makes every request fail with 500 Internal Server Error (down) or
// be served again.
func (s *Server) Down(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "the API server is down")
		return
	}
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if q := r.URL.Query(); r.Method == http.MethodGet && (len(p) == 3 || len(p) == 5) {
		switch {
		case s.NoWatchList && q.Get("sendInitialEvents") == "true":
			writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid,
				"sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")
			return
		case s.BeforeList != nil && q.Get("watch") != "true":
			s.BeforeList(p[len(p)-1])
		}
	}
	if len(p) == 3 && p[0] == "api" && p[2] == "nodes" && r.Method == http.MethodGet {
		s.listOrWatch(w, r)
		return
	}
	if len(p) == 5 && p[0] == "api" && p[2] == "namespaces" && p[4] == "services" && r.Method == http.MethodGet {
		s.listOrWatchServices(w, r, p[3])
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(p) >= 4 && p[0] == "api" && p[2] == "nodes" && p[3] == s.node.Name:
		status := len(p) == 5 && p[4] == "status"
		resource := "nodes"
		if status {
			resource = "nodes/status"
		}
		s.count(r.Method, resource)
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.node)
		case http.MethodPatch:
			s.patchNode(w, r, status)
		default:
			http.Error(w, "method", http.StatusMethodNotAllowed)
		}
	case len(p) == 6 && p[0] == "api" && p[2] == "namespaces" && p[4] == "services" && r.Method == http.MethodGet:
		s.count(r.Method, "services")
		if svc, ok := s.services[p[3]+"/"+p[5]]; ok {
			writeJSON(w, http.StatusOK, svc)
			return
		}
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("services %q not found", p[5]))
	case len(p) == 6 && p[1] == "events.k8s.io" && p[5] == "events" && r.Method == http.MethodPost:
		s.count(r.Method, "events")
		var ev eventsv1.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		s.events = append(s.events, ev)
		writeJSON(w, http.StatusCreated, &ev)
	default:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, r.Method+" "+r.URL.Path)
	}
}

func (s *Server) patchNode(w http.ResponseWriter, r *http.Request, status bool) {
	body, _ := io.ReadAll(r.Body)
	if s.BeforePatch != nil {
		s.BeforePatch(s.node)
	}
	orig, _ := json.Marshal(s.node)
	var out []byte
	var err error
	switch types.PatchType(r.Header.Get("Content-Type")) {
	case types.JSONPatchType:
		var p jsonpatch.Patch
		if p, err = jsonpatch.DecodePatch(body); err == nil {
			out, err = p.Apply(orig)
		}
	case types.MergePatchType:
		out, err = jsonpatch.MergePatch(orig, body)
	case types.StrategicMergePatchType:
		out, err = strategicpatch.StrategicMergePatch(orig, body, corev1.Node{})
	default:
		writeStatus(w, http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType, r.Header.Get("Content-Type"))
		return
	}
	if err != nil {
		// As the API server: a failed "test" op is 422 Invalid.
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, err.Error())
		return
	}
	var n corev1.Node
	if err := json.Unmarshal(out, &n); err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	if status { // the status subresource changes only the status
		s.node.Status = n.Status
	} else {
		n.Status = s.node.Status
		s.node = &n
	}
	s.bumpLocked()
	writeJSON(w, http.StatusOK, s.node)
}

// listOrWatch serves GET /api/v1/nodes: a list, or with watch=true a
// stream of watch events, of the node if it matches the field selector.
func (s *Server) listOrWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sel, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	matches := sel.Matches(fields.Set{"metadata.name": s.node.Name})
	if q.Get("watch") != "true" {
		s.count("LIST", "nodes")
		list := &corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}}
		list.ResourceVersion = s.node.ResourceVersion
		if matches {
			list.Items = []corev1.Node{*s.node.DeepCopy()}
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, list)
		return
	}
	s.count("WATCH", "nodes")
	from, _ := strconv.Atoi(q.Get("resourceVersion"))
	initial := q.Get("sendInitialEvents") == "true"
	gone := !initial && from != 0 && from < s.expired
	s.mu.Unlock()

	send, deadline := watchStream(w, q)
	defer deadline.Stop()
	if gone {
		send(watch.Error, &metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired,
			Message: fmt.Sprintf("too old resource version: %d (%d)", from, s.expired),
		})
		return
	}
	sent := from
	for first := true; ; first = false {
		s.mu.Lock()
		node, changed, expired := s.node.DeepCopy(), s.changed, s.expired
		s.mu.Unlock()
		node.TypeMeta = metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}
		if !first && sent < expired {
			return // history compacted: the watch ends, as etcd's would
		}
		rv, _ := strconv.Atoi(node.ResourceVersion)
		switch {
		case first && initial:
			if matches && !send(watch.Added, node) {
				return
			}
			bookmark := &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}}
			bookmark.ResourceVersion = node.ResourceVersion
			bookmark.Annotations = map[string]string{metav1.InitialEventsAnnotationKey: "true"}
			if !send(watch.Bookmark, bookmark) {
				return
			}
		case rv > sent && matches:
			if !send(watch.Modified, node) {
				return
			}
		}
		sent = rv
		select {
		case <-r.Context().Done():
			return
		case <-deadline.C:
			return
		case <-changed:
		}
	}
}

// Bump changes the node's resourceVersion, as a concurrent writer would.
func Bump(n *corev1.Node) {
	rv, _ := strconv.Atoi(n.ResourceVersion)
	n.ResourceVersion = strconv.Itoa(rv + 1)
}

// watchStream starts a watch response on w: send writes one event and
// flushes it (false once the client is gone); deadline fires at the
// request's timeoutSeconds (30 minutes without), when the watch ends as
// the API server's would.
func watchStream(w http.ResponseWriter, q url.Values) (send func(watch.EventType, any) bool, deadline *time.Timer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	enc := json.NewEncoder(w)
	send = func(typ watch.EventType, obj any) bool {
		raw, _ := json.Marshal(obj)
		if err := enc.Encode(metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw}}); err != nil {
			return false
		}
		w.(http.Flusher).Flush()
		return true
	}
	timeout := 30 * time.Minute
	if sec, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && sec > 0 {
		timeout = time.Duration(sec) * time.Second
	}
	return send, time.NewTimer(timeout)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
	})
}
