// Package testpb is the generated Go code of Courier's test service
// courier.test.Test (test.proto: tests/protos/courier/test/test.proto with
// Courier options), used by the Go binding's tests, bench/go and the demo.
package testpb

//go:generate cargo run -q -p courier-stubgen -- -I . --go_out=. --go_opt=paths=source_relative test.proto
