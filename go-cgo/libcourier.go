package courier

//go:generate go run ./internal/buildlib

// The static library and its cgo link flags come from `go generate` (see
// internal/buildlib). Without them this line fails to compile with
// "undefined: libcourierBuilt": run `go generate` in go-cgo/ (or `make test-go`).
var _ = libcourierBuilt
