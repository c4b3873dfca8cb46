package courier

//go:generate go run ./internal/buildlib

// The static library and its cgo link flags come from `go generate` (see
// internal/buildlib): the Go toolchain has no build hook, so a fresh checkout
// needs `go generate .` in go-cgo/ once (and after a change to the Rust
// core) before `go build`/`go test`. Without it this line fails to compile
// with "undefined: libcourierBuilt_runGoGenerateInGoCgo", a name that says
// what to do (`make test-go` runs it).
var _ = libcourierBuilt_runGoGenerateInGoCgo
