package courier

/*
#include "courier.h"
*/
import "C"

import (
	"sync"
	"time"
)

// Kind is a gRPC call kind.
type Kind int

// The four call kinds.
const (
	Unary           Kind = 0
	ServerStreaming Kind = 1
	ClientStreaming Kind = 2
	BidiStreaming   Kind = 3
)

// NoDeadline as a MethodDesc.DefaultDeadline declares a method that runs
// without a deadline unless its caller sets one (`(courier.method_no_deadline)`).
const NoDeadline time.Duration = -1

// MethodDesc describes a method for servers and clients: generated code
// declares one per method (deadlines are mandatory: a default, or NoDeadline).
type MethodDesc struct {
	// Path is the full path, /package.Service/Method.
	Path string
	Kind Kind
	// DefaultDeadline applies when the caller sends none (the earlier of the
	// two wins otherwise); NoDeadline for none.
	DefaultDeadline time.Duration
	// AppErrorEnum is the full name of the method's `(courier.rpc_error)`
	// enum, "" for none.
	AppErrorEnum string

	once   sync.Once
	handle *C.CourierMethod
	err    error
}

func (m *MethodDesc) deadlineMs() C.int64_t {
	if m.DefaultDeadline == NoDeadline {
		return C.COURIER_NO_DEADLINE
	}
	ms := m.DefaultDeadline.Milliseconds()
	if ms == 0 && m.DefaultDeadline > 0 {
		ms = 1
	}
	return C.int64_t(ms)
}

// cMethod is the core's descriptor for client calls, made once (never freed:
// descriptors are package-level values of generated code).
func (m *MethodDesc) cMethod() (*C.CourierMethod, error) {
	m.once.Do(func() {
		var cerr *C.CourierError
		pp, pl := strArg(m.Path)
		ep, el := strArg(m.AppErrorEnum)
		m.handle = C.courier_method_new(pp, pl, C.int32_t(m.Kind), m.deadlineMs(), ep, el, &cerr)
		if m.handle == nil {
			m.err = takeError(cerr)
		}
	})
	return m.handle, m.err
}
