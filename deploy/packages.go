package deploy

import (
	_ "embed"
	"strings"
)

//go:embed image-packages.txt
var imagePackages string

// ImagePackages returns the Debian packages of the runtime image, in file
// order: image-packages.txt without blank lines and # comments. The
// Dockerfile installs the same list, and e2e builds its image from it.
func ImagePackages() []string {
	var pkgs []string
	for _, line := range strings.Split(imagePackages, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pkgs = append(pkgs, line)
	}
	return pkgs
}
