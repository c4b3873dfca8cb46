package courier_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyFile copies src to dst, making dst's directory.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs a command in dir and returns its combined output; fails the test
// on a non-zero exit.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// courier-stubgen --go_out on testdata/stubgen (an rpc_error enum, nested
// messages and enums, a message of another proto package, all four method
// kinds) into a Go module of its own that uses go-cgo through a replace
// directive: `go vet` passes on the generated code, and testdata's
// cmd/check builds and serves and calls every method through the stubs.
// Go's module cache serves the dependencies (GOFLAGS=-mod=mod; offline once
// warm: go.sum is go-cgo's).
func TestStubgenGoOutputBuilds(t *testing.T) {
	goCgo, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Dir(goCgo)
	mod := t.TempDir()
	protos := filepath.Join(goCgo, "testdata/stubgen")

	// The generator, built by cargo (incremental after `go generate`).
	run(t, repo, nil, "cargo", "run", "-q", "-p", "courier-stubgen", "--",
		"-I", protos, "--go_out="+mod, "--go_opt=paths=source_relative",
		"shop/common/types.proto", "shop/cart/cart.proto")
	for _, f := range []string{"shop/common/types.pb.go", "shop/cart/cart.pb.go", "shop/cart/cart_courier.pb.go"} {
		if _, err := os.Stat(filepath.Join(mod, f)); err != nil {
			t.Fatalf("courier-stubgen wrote no %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(mod, "shop/common/types_courier.pb.go")); err == nil {
		t.Fatal("a courier file for a proto without services")
	}
	copyFile(t, filepath.Join(protos, "cmd/check/main.go"), filepath.Join(mod, "cmd/check/main.go"))

	// go.mod: go-cgo's requirements and go.sum, go-cgo itself from this tree.
	goMod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	reqs := string(goMod)[strings.Index(string(goMod), "\ngo "):]
	reqs = strings.Replace(reqs, "require (", "require (\n\tgithub.com/courier-rpc/courier/go-cgo v0.0.0", 1)
	modFile := "module example.com/stubcheck\n" + reqs + "\nreplace github.com/courier-rpc/courier/go-cgo => " + goCgo + "\n"
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(modFile), 0o644); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "go.sum", filepath.Join(mod, "go.sum"))

	env := []string{"GOFLAGS=-mod=mod", "GOWORK=off"}
	run(t, mod, env, "go", "vet", "./...")
	run(t, mod, env, "go", "build", "-o", filepath.Join(mod, "check"), "./cmd/check")
	out := run(t, mod, nil, filepath.Join(mod, "check"))
	for _, want := range []string{"ok unary", "ok app error", "ok server streaming", "ok client streaming", "ok bidi", "ok descriptors"} {
		if !strings.Contains(out, want+"\n") {
			t.Fatalf("cmd/check printed no %q:\n%s", want, out)
		}
	}
}
