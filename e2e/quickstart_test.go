package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEQuickStart runs the README's quick start (the lines between
// <!-- quickstart --> and <!-- /quickstart -->) with
// scripts/quickstart-test.sh, in a scratch copy of the checkout, so the
// instructions a new user follows are the ones that were tested.
func TestREADMEQuickStart(t *testing.T) {
	need(t, "bash", "make", "tar", "git", "qemu-io", "mkfs.ext4")
	cmd := exec.Command("bash", filepath.Join(repoRoot, "scripts", "quickstart-test.sh"), filepath.Join(repoRoot, "README.md"))
	cmd.Dir = repoRoot
	// The quick start runs `make build`: give it this toolchain's go.
	path := os.Getenv("PATH")
	if g := goTool(); filepath.IsAbs(g) {
		path = filepath.Dir(g) + ":" + path
	}
	cmd.Env = append(os.Environ(), "PATH="+path, "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README quick start failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "quickstart-test: ok") {
		t.Fatalf("quick start script did not finish:\n%s", out)
	}
}
