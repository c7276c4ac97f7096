// Command standin stands in for a Spark executor with
// spark.decommission.enabled, in the interrupt e2e test's pods and in
// interrupt's root tests and benchmark (ctr run against a private
// containerd). As its main
// process: the first SIGPWR starts a "decommission" (block migration) that
// exits 0 after the duration in its first argument; a second SIGPWR while
// it runs kills it, as the JVM's default action does when Spark's
// SignalUtils handler is not in place (exit 128+SIGPWR). Every signal is
// appended with its time to the file in its second argument (a hostPath,
// so the record outlives the pod).
//
// "standin prestop" is its preStop hook, like Spark's /opt/decom.sh: it
// sends SIGPWR to PID 1 and waits for the container to stop.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "prestop" {
		_ = syscall.Kill(1, syscall.SIGPWR)
		time.Sleep(time.Hour) // kubelet ends the hook when the container stops
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: standin DECOMMISSION_DURATION RECORD_FILE | standin prestop")
		os.Exit(2)
	}
	d, err := time.ParseDuration(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	record := func(line string) {
		fmt.Println(line)
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
			switch s {
			case syscall.SIGTERM:
				record(fmt.Sprintf("received SIGTERM at %d", time.Now().UnixNano()))
				if done == nil {
					record("exit 143")
					os.Exit(143)
				}
				// Spark's executor keeps decommissioning through SIGTERM's
				// grace period; so does the stand-in.
			default:
				record(fmt.Sprintf("received SIGPWR at %d", time.Now().UnixNano()))
				if done != nil {
					record("killed: second SIGPWR while decommissioning")
					os.Exit(128 + int(syscall.SIGPWR))
				}
				record("decommissioning")
				done = time.After(d)
			}
		case <-done:
			record("decommissioned, exit 0")
			os.Exit(0)
		}
	}
}
