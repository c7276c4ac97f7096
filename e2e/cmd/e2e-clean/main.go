// Command e2e-clean removes what a killed e2e run left on this host (see
// cluster.CleanStale). Run it as root from e2e/: go run ./cmd/e2e-clean
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nodeagent/nodeagent/e2e/cluster"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Printf("e2e-clean: "+format+"\n", args...) }
	if err := cluster.CleanStale(ctx, logf); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-clean:", err)
		os.Exit(1)
	}
	logf("host is clean")
}
