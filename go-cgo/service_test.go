package courier_test

import "github.com/courier-rpc/courier/go-cgo/internal/testpeer"

// testService is courier.test.Test in Go (internal/testpeer, shared with the
// standalone peer of the interop matrix).
type testService = testpeer.Service
