// Command standin behaves like a Spark executor with
// spark.decommission.enabled, for tests against a real containerd: the
// first SIGPWR starts a "decommission" that exits 0 after the duration in
// its first argument; a second SIGPWR while it runs kills it as the JVM's
// default action would (exit 128+SIGPWR), as Spark's SignalUtils lets it.
// Every signal received is appended, with its Unix time in nanoseconds, to
// the file in its second argument.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: standin DECOMMISSION_DURATION RECORD_FILE")
		os.Exit(2)
	}
	d, err := time.ParseDuration(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	record := func(line string) {
		f, err := os.OpenFile(os.Args[2], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGPWR, syscall.SIGTERM)
	record("running")
	var done <-chan time.Time
	for {
		select {
		case s := <-sigs:
			sig := s.(syscall.Signal)
			at := time.Now().UnixNano()
			record(fmt.Sprintf("received %s at %d", map[syscall.Signal]string{syscall.SIGPWR: "SIGPWR", syscall.SIGTERM: "SIGTERM"}[sig], at))
			switch {
			case sig == syscall.SIGTERM:
				record("exit 143")
				os.Exit(143)
			case done == nil:
				record("decommissioning")
				done = time.After(d)
			default:
				record("killed: second SIGPWR while decommissioning")
				os.Exit(128 + int(syscall.SIGPWR))
			}
		case <-done:
			record("decommissioned, exit 0")
			os.Exit(0)
		}
	}
}
