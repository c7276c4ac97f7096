// Command hello is the smoke-test workload: it prints a greeting, writes a
// marker file and then waits until the pod is stopped.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	host, _ := os.Hostname()
	fmt.Printf("hello from nodeagent e2e on %s\n", host)
	if err := os.WriteFile("/tmp/hello-ready", []byte("ok\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "write marker:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	fmt.Println("hello: stopping")
}
