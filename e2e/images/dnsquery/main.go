// Command dnsquery resolves the names given as arguments through the pod's
// /etc/resolv.conf, retrying for up to a minute, and prints
// "RESOLVED name addr..." for each. It exits 1 if a name never resolves.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	r := &net.Resolver{PreferGo: true}
	code := 0
	for _, name := range os.Args[1:] {
		deadline := time.Now().Add(time.Minute)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			addrs, err := r.LookupHost(ctx, name)
			cancel()
			if err == nil {
				fmt.Printf("RESOLVED %s %s\n", name, strings.Join(addrs, " "))
				break
			}
			fmt.Printf("lookup %s: %v\n", name, err)
			if time.Now().After(deadline) {
				code = 1
				break
			}
			time.Sleep(time.Second)
		}
	}
	os.Exit(code)
}
