package labtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/weftnet/weft/test/lab"
)

// GoImage builds the Go program pkg (a package path of this module) as a
// static binary and imports it on every host of l as the one-file image
// tag (lab.ImportBinary: the binary at /app, its entrypoint). It returns
// the binary's path, for copying into containers of other images.
func GoImage(t testing.TB, l *lab.Lab, pkg, tag string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	build := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	if err := l.ImportBinary(context.Background(), bin, tag); err != nil {
		t.Fatalf("import %s: %v", tag, err)
	}
	return bin
}
