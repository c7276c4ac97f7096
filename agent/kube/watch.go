package kube

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Watch keeps a copy of one named object, fed by one watch on the API
// server: client-go's reflector lists the object (field selector
// metadata.name=NAME), then watches from the resourceVersion it got,
// resumes a broken watch from the last version seen, lists again when that
// version is too old (410 Gone), and backs off with jitter on errors, so a
// fleet that loses its API server does not come back in lockstep. At idle
// that is a few requests per hour, where a GET on every reconcile was one a
// minute per node. RBAC: "list" and "watch" on the resource, which
// resourceNames can narrow to the one name (the API server authorizes a
// list or watch with that field selector as a request for that name).
//
// Read the latest copy with Get, wait for the first list with Wait, and
// call Subscribe to hear of changes. NodeWatch is the Watch of the own Node;
// Client.ServiceWatch makes one for a Service.
type Watch[T interface {
	runtime.Object
	comparable
}] struct {
	lw   *cache.ListWatch
	ctrl cache.Controller

	mu      sync.Mutex
	obj     T // the zero T (nil) before the first list or while it does not exist
	lastErr error
	subs    map[chan struct{}]struct{}
}

func newWatch[T interface {
	runtime.Object
	comparable
}](c rest.Interface, resource, namespace, name string, example T) *Watch[T] {
	w := &Watch[T]{
		lw:   cache.NewListWatchFromClient(c, resource, namespace, fields.OneTermEqualSelector("metadata.name", name)),
		subs: map[chan struct{}]struct{}{},
	}
	// Keep the last request error, so a reader waiting for the first list
	// can say why it has not come (the reflector only logs it).
	list, watchFn := w.lw.ListWithContextFunc, w.lw.WatchFuncWithContext
	w.lw.ListWithContextFunc = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		obj, err := list(ctx, o)
		w.setErr(err)
		return obj, err
	}
	w.lw.WatchFuncWithContext = func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		wi, err := watchFn(ctx, o)
		if !fallsBackToList(o, err) {
			w.setErr(err)
		}
		return wi, err
	}
	set := func(obj any) {
		if o, ok := obj.(T); ok {
			w.set(o)
		}
	}
	var zero T
	_, w.ctrl = cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: w.lw,
		ObjectType:    example,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    set,
			UpdateFunc: func(_, obj any) { set(obj) },
			DeleteFunc: func(any) { w.set(zero) },
		},
	})
	return w
}

// Get returns the latest copy of the object (nil while it does not exist)
// and whether the first list has completed, so that nil means "not there"
// rather than "not read yet". The copy is shared: do not modify it.
func (w *Watch[T]) Get() (obj T, synced bool) {
	synced = w.ctrl.HasSynced()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.obj, synced
}

// Wait blocks until the first list has completed, a request has failed,
// or ctx is done. It returns the object (nil if it does not exist), or Err.
func (w *Watch[T]) Wait(ctx context.Context) (T, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		obj, synced := w.Get()
		if synced {
			return obj, nil
		}
		w.mu.Lock()
		failed := w.lastErr != nil
		w.mu.Unlock()
		if failed {
			return obj, w.Err()
		}
		select {
		case <-ctx.Done():
			return obj, w.Err()
		case <-t.C:
		}
	}
}

// Err is nil once the first list has completed; before, it says why not:
// the last failed request, if any. (The reflector retries on its own.)
func (w *Watch[T]) Err() error {
	if w.ctrl.HasSynced() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastErr != nil {
		return fmt.Errorf("not read yet: %w", w.lastErr)
	}
	return errors.New("not read yet")
}

// fallsBackToList reports whether err, the answer to watch request o, is a
// watch-list (sendInitialEvents) refusal after which the reflector lists
// at once: an API server without the WatchList feature answers every one
// with a status error, and only the list's outcome says whether the object
// can be read. (It retries the watch-list itself on connection refused and
// 429, which are failures to report.)
func fallsBackToList(o metav1.ListOptions, err error) bool {
	var status apierrors.APIStatus
	return err != nil && o.SendInitialEvents != nil && *o.SendInitialEvents &&
		errors.As(err, &status) && !apierrors.IsTooManyRequests(err)
}

func (w *Watch[T]) setErr(err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
}

// Subscribe returns a channel that receives after each change of the
// object (a new resourceVersion, its first sight, or its deletion). Changes
// that arrive while the receiver is busy are coalesced into one: read Get
// for the latest state. Call cancel when done.
func (w *Watch[T]) Subscribe() (changed <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	var zero T
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	if w.obj != zero {
		ch <- struct{}{} // a late subscriber hears of the object already there
	}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs, ch)
		w.mu.Unlock()
	}
}

func (w *Watch[T]) set(o T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var zero T
	if o != zero && w.obj != zero && resourceVersion(o) == resourceVersion(w.obj) {
		return // a relist that found nothing new
	}
	w.obj = o
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func resourceVersion(o runtime.Object) string {
	a, err := meta.Accessor(o)
	if err != nil {
		return ""
	}
	return a.GetResourceVersion()
}

// Run feeds the copy until ctx is done. Client.Start runs the NodeWatch;
// whoever takes another Watch runs it, once.
func (w *Watch[T]) Run(ctx context.Context) { w.ctrl.RunWithContext(ctx) }
