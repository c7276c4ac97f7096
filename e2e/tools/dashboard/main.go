package main

import (
	"fmt"
	"os"
)

func main() {
	if err := writeGenerated(); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}
