package labtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// GoBinary is the go command: on PATH, or where hack/setup.sh installs it.
func GoBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// ModuleRoot is the directory of weft's go.mod (the repository's root), as
// the go command finds it from the test's directory.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(GoBinary(), "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Fatalf("find weft's go.mod from the test's directory: go env GOMOD = %q, %v", gomod, err)
	}
	return filepath.Dir(gomod)
}

// StartRegistry builds the registry of test/registry (distribution's, in a
// module of its own; hack/setup.sh downloads its modules) and runs it as
// the lab's registry (lab.StartRegistry, on Lab.RegistryAddr, which every
// engine of the lab trusts), until the test ends.
func StartRegistry(t testing.TB, l *lab.Lab) *lab.Registry {
	t.Helper()
	bin := filepath.Join(t.TempDir(), lab.RegistryProgram)
	start := time.Now()
	cmd := exec.Command(GoBinary(), "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = filepath.Join(ModuleRoot(t), "test", "registry")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the test registry in %s: %v\n%s", cmd.Dir, err, out)
	}
	t.Logf("test registry built in %s", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := l.StartRegistry(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("stop the test registry: %v", err)
		}
	})
	return r
}
