// Package netnsrun runs a function inside a network namespace, for opening
// sockets there (a socket keeps the namespace it was opened in). dnscache
// and conntrack use it for their own namespace in tests and for a
// configured namespace in production.
package netnsrun

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Run runs fn on a thread switched into ns. With ns closed (the agent's own
// namespace, the host's in the DaemonSet) fn runs as it is.
func Run(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread stays in ns: leave it locked so that it exits
			// with this goroutine instead of running other code there.
			errc <- fmt.Errorf("leave netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
