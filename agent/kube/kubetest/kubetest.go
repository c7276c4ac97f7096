// Package kubetest is an in-process stand-in for the parts of the API server
// that package kube uses: one Node (GET, JSON/merge/strategic-merge PATCH of
// the object and its status, with resourceVersion bumps), Services (GET) and
// events.k8s.io/v1 Events (POST, LIST). Patches are applied with the same
// libraries the API server uses. It is for fast unit tests; e2e/ runs the real
// kube-apiserver.
package kubetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/rest"
)

// Server holds the objects; read them with Node and Events.
type Server struct {
	Config *rest.Config

	mu       sync.Mutex
	node     *corev1.Node
	services map[string]*corev1.Service // "ns/name"
	events   []eventsv1.Event
	// BeforePatch, if set, runs before each node patch is applied (e.g. to
	// change the node concurrently).
	BeforePatch func(*corev1.Node)
}

// New serves node (and services) until the test ends.
func New(t *testing.T, node *corev1.Node, services ...*corev1.Service) *Server {
	s := &Server{node: node.DeepCopy(), services: map[string]*corev1.Service{}}
	if s.node.ResourceVersion == "" {
		s.node.ResourceVersion = "1"
	}
	for _, svc := range services {
		s.services[svc.Namespace+"/"+svc.Name] = svc.DeepCopy()
	}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
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

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(p) >= 4 && p[0] == "api" && p[2] == "nodes" && p[3] == s.node.Name:
		status := len(p) == 5 && p[4] == "status"
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.node)
		case http.MethodPatch:
			s.patchNode(w, r, status)
		default:
			http.Error(w, "method", http.StatusMethodNotAllowed)
		}
	case len(p) == 6 && p[0] == "api" && p[2] == "namespaces" && p[4] == "services" && r.Method == http.MethodGet:
		if svc, ok := s.services[p[3]+"/"+p[5]]; ok {
			writeJSON(w, http.StatusOK, svc)
			return
		}
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("services %q not found", p[5]))
	case len(p) == 6 && p[1] == "events.k8s.io" && p[5] == "events" && r.Method == http.MethodPost:
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
	rv, _ := strconv.Atoi(s.node.ResourceVersion)
	s.node.ResourceVersion = strconv.Itoa(rv + 1)
	writeJSON(w, http.StatusOK, s.node)
}

// Bump changes the node's resourceVersion, as a concurrent writer would.
func Bump(n *corev1.Node) {
	rv, _ := strconv.Atoi(n.ResourceVersion)
	n.ResourceVersion = strconv.Itoa(rv + 1)
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
