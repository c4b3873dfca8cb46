package courier

/*
#cgo CFLAGS: -I${SRCDIR}/../ffi-c/include
#include <stdlib.h>
#include "courier.h"
*/
import "C"

import (
	"unsafe"
)

// goString copies a borrowed C string.
func goString(s C.CourierStr) string {
	if s.len == 0 {
		return ""
	}
	return C.GoStringN((*C.char)(unsafe.Pointer(s.ptr)), C.int(s.len))
}

// goBytes copies borrowed C bytes.
func goBytes(s C.CourierStr) []byte {
	if s.len == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(s.ptr), C.int(s.len))
}

// borrowed views borrowed C bytes without copying: valid only while the C
// object they came from lives.
func borrowed(s C.CourierStr) []byte {
	if s.len == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(s.ptr)), int(s.len))
}

// strArg passes a Go string as (pointer, length): C copies it before returning.
func strArg(s string) (*C.uint8_t, C.size_t) {
	if len(s) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(unsafe.StringData(s))), C.size_t(len(s))
}

// bytesArg passes Go bytes as (pointer, length): C copies them before returning.
func bytesArg(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// takeError converts and frees a C error.
func takeError(e *C.CourierError) error {
	if e == nil {
		return nil
	}
	defer C.courier_error_free(e)
	kind := C.courier_error_kind(e)
	msg := goString(C.courier_error_message(e))
	if kind != C.COURIER_ERROR_KIND_STATUS {
		return &Error{Kind: ErrorKind(kind), Message: msg}
	}
	s := &Status{code: Code(C.courier_error_code(e)), message: msg, downstream: bool(C.courier_error_is_downstream(e))}
	var name C.CourierStr
	var value C.int32_t
	if C.courier_error_app_error(e, &name, &value) {
		s.appEnum = goString(name)
		s.appValue = int32(value)
		s.hasApp = true
	}
	if d := C.courier_error_details(e); d.len > 0 {
		s.details = goBytes(d)
	}
	return s
}

// Version is the version of the linked Courier core.
func Version() string { return goString(C.courier_version()) }
