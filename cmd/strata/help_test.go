package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandHasHelp runs `--help` on every command: each has a
// short description and usage, and no local flag collides with a global
// one (cobra panics on that only when the command runs).
func TestEveryCommandHasHelp(t *testing.T) {
	a := &app{}
	root := a.rootCommand()
	var walk func(c *cobra.Command, path []string)
	count := 0
	walk = func(c *cobra.Command, path []string) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			p := append(append([]string{}, path...), sub.Name())
			if sub.Short == "" {
				t.Errorf("strata %s has no short description", strings.Join(p, " "))
			}
			var out bytes.Buffer
			r := (&app{}).rootCommand()
			r.SetOut(&out)
			r.SetErr(&out)
			r.SetArgs(append(p, "--help"))
			if err := r.Execute(); err != nil {
				t.Errorf("strata %s --help: %v", strings.Join(p, " "), err)
			}
			if !strings.Contains(out.String(), "Usage:") {
				t.Errorf("strata %s --help printed no usage:\n%s", strings.Join(p, " "), out.String())
			}
			count++
			walk(sub, p)
		}
	}
	walk(root, nil)
	if count < 40 {
		t.Errorf("only %d commands found", count)
	}
}
