package raid

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteStatus prints a report for an SRE: the verdict, the decision in
// words, every selected disk with its state, the array and the mount.
func WriteStatus(w io.Writer, cfg *Config, rep *Report) {
	d := rep.Decision
	verdict := "NOT READY"
	if rep.Ready {
		verdict = "ready"
	}
	fmt.Fprintf(w, "raid: %s (%s at %s)\n", verdict, orDash(d.Layout), cfg.Mount.Path)
	fmt.Fprintf(w, "decision: %s\n  %s\n", d.Action, d.Reason)
	if len(rep.Done) > 0 {
		fmt.Fprintf(w, "ran:\n")
		for _, c := range rep.Done {
			fmt.Fprintf(w, "  %s\n", c)
		}
	}
	fmt.Fprintf(w, "disks (selected by %s):\n", selection(cfg))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  ID\tDEVICE\tSIZE\tMODEL\tSTATE\n")
	state := map[string]string{}
	for _, m := range d.Members {
		state[m.Name] = "member"
	}
	for _, m := range d.Unused {
		state[m.Name] = "unused (blank)"
	}
	for _, e := range d.Excluded {
		state[e.Disk.Name] = "left alone: " + e.Why
	}
	for _, disk := range rep.State.Disks {
		s := state[disk.Name]
		if s == "" {
			s = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", disk.ID(), disk.Name, human(disk.SizeBytes), orDash(disk.Model), s)
	}
	if len(rep.State.Disks) == 0 {
		fmt.Fprintf(tw, "  (none)\n")
	}
	_ = tw.Flush()
	for _, a := range rep.State.Arrays {
		fmt.Fprintf(w, "array: %s name=%s %s %s uuid=%s members=%s size=%s fs=%s mounted=%s\n", a.Name, orUnnamed(a.MDName),
			orDash(a.Level), orDash(a.State), orDash(a.UUID), strings.Join(a.Members, ","), human(a.SizeBytes), orDash(a.FS.Type), orDash(strings.Join(a.MountedAt, ",")))
	}
	if rep.Ready && d.Action != ActionNoDisks {
		fmt.Fprintf(w, "mount: /dev/%s at %s, %s, capacity %s, free %s\n", rep.Device, cfg.Mount.Path, cfg.mountOptions(), human(rep.CapacityBytes), human(rep.FreeBytes))
	} else if rep.State.AtPath != nil {
		fmt.Fprintf(w, "mount: %s (%s) at %s\n", rep.State.AtPath.Source, rep.State.AtPath.FSType, cfg.Mount.Path)
	} else {
		fmt.Fprintf(w, "mount: nothing at %s\n", cfg.Mount.Path)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// human prints bytes in binary units.
func human(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
