package courier

import (
	"context"
	"errors"
	"fmt"
)

// Code is a gRPC status code.
type Code int32

// The gRPC status codes.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// String is the canonical name, such as "NOT_FOUND".
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE(%d)", int32(c))
}

// CodeFromName parses a canonical name ("NOT_FOUND"); false for anything else.
func CodeFromName(name string) (Code, bool) {
	for i, n := range codeNames {
		if n == name {
			return Code(i), true
		}
	}
	return Unknown, false
}

// Status is the error of a failed call: a gRPC code, a message and, for
// application errors, the value of the method's `rpc_error` enum.
//
// Handlers return a Status (Errorf) or an *AppError to choose their
// caller's status. A Status received from a call this process made is marked
// downstream: a handler that returns it unchanged has its own caller answered
// UNKNOWN (errors do not leak across API boundaries).
type Status struct {
	code       Code
	message    string
	appEnum    string
	appValue   int32
	hasApp     bool
	details    []byte
	downstream bool
}

// Errorf makes a Status error with a code and a formatted message.
func Errorf(code Code, format string, args ...any) error {
	return &Status{code: code, message: fmt.Sprintf(format, args...)}
}

// NewStatus makes a Status with a code and a message.
func NewStatus(code Code, message string) *Status { return &Status{code: code, message: message} }

func (s *Status) Error() string {
	if s.hasApp {
		return fmt.Sprintf("%s: %s (app error %s=%d)", s.code, s.message, s.appEnum, s.appValue)
	}
	return fmt.Sprintf("%s: %s", s.code, s.message)
}

// Code is the status code.
func (s *Status) Code() Code { return s.code }

// Message is the status message.
func (s *Status) Message() string { return s.message }

// Details is the raw grpc-status-details-bin payload (a serialized google.rpc.Status), if any.
func (s *Status) Details() []byte { return s.details }

// AppError is the app error this status carries: the enum's full name and the
// value; ok is false when it carries none.
func (s *Status) AppError() (enum string, value int32, ok bool) {
	return s.appEnum, s.appValue, s.hasApp
}

// Downstream reports whether the status was received from a call this process made.
func (s *Status) Downstream() bool { return s.downstream }

// Is matches another *Status with the same code (errors.Is(err, courier.NewStatus(courier.NotFound, ""))).
func (s *Status) Is(target error) bool {
	t, ok := target.(*Status)
	return ok && t.code == s.code
}

// AppError is what a handler returns for an application error: a value of the
// method's `(courier.rpc_error)` enum, sent with the gRPC code the enum value
// maps to (`(courier.grpc_code)`). Generated code makes them:
// `pb.TestError_TEST_ERROR_GONE.Err("gone")`.
type AppError struct {
	// Enum is the enum's full name, e.g. "courier.test.TestError".
	Enum string
	// Value is the enum value's number.
	Value int32
	// Code is the gRPC code the value travels with.
	Code Code
	// Message is the status message.
	Message string
}

// NewAppError makes an *AppError.
func NewAppError(enum string, value int32, code Code, message string) *AppError {
	return &AppError{Enum: enum, Value: value, Code: code, Message: message}
}

func (e *AppError) Error() string {
	return fmt.Sprintf("%s: %s (app error %s=%d)", e.Code, e.Message, e.Enum, e.Value)
}

// StatusOf is the status of an error: the *Status of a failed call or the
// status a handler's error is sent as: nil is OK, an *AppError its code and
// value, context errors CANCELLED / DEADLINE_EXCEEDED, any other error UNKNOWN.
// Wrapped errors are unwrapped (errors.As).
func StatusOf(err error) *Status {
	if err == nil {
		return &Status{code: OK}
	}
	var s *Status
	if errors.As(err, &s) {
		return s
	}
	var a *AppError
	if errors.As(err, &a) {
		return &Status{code: a.Code, message: a.Message, appEnum: a.Enum, appValue: a.Value, hasApp: true}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Status{code: DeadlineExceeded, message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &Status{code: Canceled, message: err.Error()}
	}
	return &Status{code: Unknown, message: err.Error()}
}

// Code is StatusOf(err).Code().
func CodeOf(err error) Code { return StatusOf(err).Code() }

// ErrorKind says what kind of setup error an *Error is.
type ErrorKind int

// The kinds of *Error.
const (
	ErrInvalidArgument ErrorKind = 2
	ErrIO              ErrorKind = 3
	ErrState           ErrorKind = 4
	ErrPanic           ErrorKind = 5
)

// Error is a setup or usage error of the library (not a call status): an
// invalid argument, an OS error such as a port in use, a wrong state.
type Error struct {
	Kind    ErrorKind
	Message string
}

func (e *Error) Error() string { return "courier: " + e.Message }
