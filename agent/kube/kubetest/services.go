package kubetest

import (
	"net/http"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// SetService creates or replaces a Service (nil spec: deletes namespace/name)
// as another writer would; its watchers hear of it.
func (s *Server) SetService(namespace, name string, svc *corev1.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svcVersion++
	key := namespace + "/" + name
	if svc == nil {
		delete(s.services, key)
	} else {
		svc = svc.DeepCopy()
		svc.Namespace, svc.Name = namespace, name
		svc.ResourceVersion = strconv.Itoa(s.svcVersion)
		s.services[key] = svc
	}
	close(s.svcChanged)
	s.svcChanged = make(chan struct{})
}

// listOrWatchServices serves GET /api/v1/namespaces/NS/services: a list, or
// with watch=true a stream of watch events, of the Services matching the
// field selector (metadata.name=NAME is what package kube sends).
func (s *Server) listOrWatchServices(w http.ResponseWriter, r *http.Request, namespace string) {
	q := r.URL.Query()
	sel, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	matching := func() []corev1.Service {
		var out []corev1.Service
		for _, svc := range s.services {
			if svc.Namespace == namespace && sel.Matches(fields.Set{"metadata.name": svc.Name}) {
				c := svc.DeepCopy()
				c.TypeMeta = metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}
				out = append(out, *c)
			}
		}
		return out
	}
	s.mu.Lock()
	if q.Get("watch") != "true" {
		s.count("LIST", "services")
		list := &corev1.ServiceList{TypeMeta: metav1.TypeMeta{Kind: "ServiceList", APIVersion: "v1"}, Items: matching()}
		list.ResourceVersion = strconv.Itoa(s.svcVersion)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, list)
		return
	}
	s.count("WATCH", "services")
	sent, _ := strconv.Atoi(q.Get("resourceVersion"))
	initial := q.Get("sendInitialEvents") == "true"
	s.mu.Unlock()

	send, deadline := watchStream(w, q)
	defer deadline.Stop()
	seen := map[string]bool{}
	s.mu.Lock()
	if initial { // a watch-list (client-go's WatchListClient): the state, then a bookmark
		for _, svc := range matching() {
			if !send(watch.Added, &svc) {
				s.mu.Unlock()
				return
			}
			seen[svc.Name] = true
		}
		bookmark := &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}}
		bookmark.ResourceVersion = strconv.Itoa(s.svcVersion)
		bookmark.Annotations = map[string]string{metav1.InitialEventsAnnotationKey: "true"}
		if !send(watch.Bookmark, bookmark) {
			s.mu.Unlock()
			return
		}
		sent = s.svcVersion
	}
	for _, svc := range matching() {
		seen[svc.Name] = true
	}
	for {
		now, changed, version := matching(), s.svcChanged, s.svcVersion
		s.mu.Unlock()
		if version > sent {
			present := map[string]bool{}
			for _, svc := range now {
				present[svc.Name] = true
				if rv, _ := strconv.Atoi(svc.ResourceVersion); rv > sent {
					typ := watch.Modified
					if !seen[svc.Name] {
						typ = watch.Added
					}
					if !send(typ, &svc) {
						return
					}
				}
			}
			for name := range seen {
				if !present[name] {
					gone := &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}}
					gone.Namespace, gone.Name, gone.ResourceVersion = namespace, name, strconv.Itoa(version)
					if !send(watch.Deleted, gone) {
						return
					}
				}
			}
			seen, sent = present, version
		}
		select {
		case <-r.Context().Done():
			return
		case <-deadline.C:
			return
		case <-changed:
		}
		s.mu.Lock()
	}
}
