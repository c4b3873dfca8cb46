package courier

/*
#include <stdlib.h>
#include "courier.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
)

// How many calls a worker takes at a time, and how long a batch may run
// before its unstarted calls are handed back to idle workers.
const (
	batchSize = 64
	slowBatch = 2 * time.Millisecond
)

type serverOptions struct {
	ioThreads      int
	maxConcurrency int
	maxRecvMsgSize int
	base           context.Context
	logger         *log.Logger
	tls            *ServerTLS
	limits         string
	debugAddr      string
	batchSched     bool
}

// ServerOption configures a Server.
type ServerOption func(*serverOptions)

// IOThreads sets the core's I/O threads (default: one per core).
func IOThreads(n int) ServerOption { return func(o *serverOptions) { o.ioThreads = n } }

// MaxConcurrency sets how many unary and client-streaming handlers run at
// once (worker goroutines pulling batches of calls from the core; default 32).
// Server-streaming and bidi handlers run on their own goroutines.
func MaxConcurrency(n int) ServerOption { return func(o *serverOptions) { o.maxConcurrency = n } }

// MaxRecvMsgSize sets the largest request message accepted (default 4 MiB);
// larger ones are answered RESOURCE_EXHAUSTED by the core.
func MaxRecvMsgSize(n int) ServerOption { return func(o *serverOptions) { o.maxRecvMsgSize = n } }

// BaseContext sets the parent of every handler's context (for values; its
// cancellation is not propagated). Default context.Background().
func BaseContext(ctx context.Context) ServerOption { return func(o *serverOptions) { o.base = ctx } }

// LimitsFile serves with the limits in the YAML file at path (ACLs, rate
// limits and queues per service and method and client identity), watched and
// hot-reloaded by the core; a bad file is refused by Start with the line at fault.
func LimitsFile(path string) ServerOption { return func(o *serverOptions) { o.limits = path } }

// DebugAddr starts the core's debug server (/metrics, /info, /config, /rpcz,
// ...) on addr: "127.0.0.1:PORT" or "unix:/path". Never the RPC port.
func DebugAddr(addr string) ServerOption { return func(o *serverOptions) { o.debugAddr = addr } }

// BatchScheduling sets whether Start puts the process's threads, but for the
// core's I/O threads, under SCHED_BATCH (Linux; default on;
// COURIER_GO_SCHED=normal turns the default off). A SCHED_BATCH thread that
// wakes does not preempt the running thread: when Go and an I/O thread share
// a core, the Go thread woken for ready calls lets the I/O thread finish
// reading first and takes a bigger batch (bench/go: +5% req/s on one core).
// It is process-wide (threads Go makes later inherit it); threads under a
// real-time or idle policy are left alone. Off: scheduling is left as it is.
func BatchScheduling(on bool) ServerOption { return func(o *serverOptions) { o.batchSched = on } }

// ErrorLog sets where handler panics are logged (default: the log package's logger).
func ErrorLog(l *log.Logger) ServerOption { return func(o *serverOptions) { o.logger = l } }

// Server serves Courier (gRPC) methods with Go handlers. Register methods
// (generated Register<Service>Server functions, or HandleUnary and friends),
// Listen, Start; Stop when done.
//
// Calls reach Go in batches: worker goroutines pull ready calls from the core
// (one cgo crossing per batch), run unary handlers and hand their replies back
// in one batch. A panic in a handler is INTERNAL for that call only; it is
// logged with its stack and counted (Panics).
type Server struct {
	h       *C.CourierServer
	opts    serverOptions
	methods []*method
	// wake is a dup of the core's eventfd (event mode): workers wait on it in
	// Go's netpoller instead of blocking in C.
	wake *os.File

	mu      sync.Mutex
	started bool
	stopped bool
	workers sync.WaitGroup
	streams sync.WaitGroup
	panics  atomic.Int64

	// Calls taken but left behind slow handlers (see spill).
	spillMu  sync.Mutex
	spills   []spilled
	nSpilled atomic.Int32
}

type method struct {
	desc *MethodDesc
	path string

	// unary appends its encoded reply to out.
	unary        func(ctx context.Context, req, out []byte) ([]byte, error)
	serverStream func(ctx context.Context, req []byte, s *rawStream) error
	clientStream func(ctx context.Context, s *rawStream) ([]byte, error)
	bidi         func(ctx context.Context, s *rawStream) error
}

// NewServer makes a server.
func NewServer(opts ...ServerOption) *Server {
	o := serverOptions{maxConcurrency: 32, base: context.Background(), batchSched: os.Getenv("COURIER_GO_SCHED") != "normal"}
	for _, f := range opts {
		f(&o)
	}
	if o.maxConcurrency < 1 {
		o.maxConcurrency = 1
	}
	if o.logger == nil {
		o.logger = log.Default()
	}
	handleSIGPIPE()
	copts := C.CourierServerOptions{workers: C.uint32_t(max(o.ioThreads, 0)), max_recv_message_size: C.uint64_t(max(o.maxRecvMsgSize, 0))}
	if o.tls != nil {
		copts.tls = o.tls.h
	}
	copts.event_fd = C.bool(!blockingPull)
	// No default workpool bound (host_concurrency): a worker takes a batch of
	// calls at a time, so bounding the calls admitted to the queue by the
	// worker count would shrink every batch to one call (measured: 2-3x the
	// CPU per call). A limits file's max_concurrency still applies.
	// Strings in the options struct must be C memory (cgo pointer rules).
	if o.limits != "" {
		cs := C.CString(o.limits)
		defer C.free(unsafe.Pointer(cs))
		copts.limits_path, copts.limits_path_len = (*C.uint8_t)(unsafe.Pointer(cs)), C.size_t(len(o.limits))
	}
	if o.debugAddr != "" {
		cs := C.CString(o.debugAddr)
		defer C.free(unsafe.Pointer(cs))
		copts.debug_addr, copts.debug_addr_len = (*C.uint8_t)(unsafe.Pointer(cs)), C.size_t(len(o.debugAddr))
	}
	var cerr *C.CourierError
	h := C.courier_server_new(&copts, &cerr)
	runtime.KeepAlive(o.tls)
	if h == nil {
		panic("courier: cannot create a server: " + takeError(cerr).Error())
	}
	s := &Server{h: h, opts: o}
	if !blockingPull {
		fd, err := syscall.Dup(int(C.courier_server_notify_fd(h)))
		if err != nil {
			panic("courier: cannot dup the server's eventfd: " + err.Error())
		}
		syscall.CloseOnExec(fd)
		// Non-blocking (EFD_NONBLOCK is shared by the dup): os.NewFile puts it
		// in Go's netpoller.
		s.wake = os.NewFile(uintptr(fd), "courier-calls")
	}
	return s
}

func (s *Server) register(m *method) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return &Error{Kind: ErrState, Message: "methods must be registered before Start"}
	}
	d := m.desc
	m.path = d.Path
	var cerr *C.CourierError
	pp, pl := strArg(d.Path)
	ep, el := strArg(d.AppErrorEnum)
	if !C.courier_server_register(s.h, pp, pl, C.int32_t(d.Kind), d.deadlineMs(), ep, el, C.uint64_t(len(s.methods)), &cerr) {
		return takeError(cerr)
	}
	s.methods = append(s.methods, m)
	return nil
}

// Listen binds a TCP address ("127.0.0.1:0" picks a port) and returns the port.
func (s *Server) Listen(addr string) (int, error) {
	var cerr *C.CourierError
	ap, al := strArg(addr)
	port := C.courier_server_listen(s.h, ap, al, &cerr)
	if port < 0 {
		return 0, takeError(cerr)
	}
	return int(port), nil
}

// Start starts serving (after Listen) and returns.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return &Error{Kind: ErrState, Message: "the server was stopped"}
	}
	var cerr *C.CourierError
	if !C.courier_server_start(s.h, &cerr) {
		return takeError(cerr)
	}
	s.started = true
	if s.opts.batchSched {
		batchGoThreads()
	}
	for i := 0; i < s.opts.maxConcurrency; i++ {
		s.workers.Add(1)
		go s.work()
	}
	return nil
}

// SetServing sets a service's status in the built-in grpc.health.v1 service
// ("" for the whole server).
func (s *Server) SetServing(service string, serving bool) {
	sp, sl := strArg(service)
	C.courier_server_set_serving(s.h, sp, sl, C.bool(serving))
}

// Stop stops accepting calls, lets calls in flight finish for up to grace,
// cancels the rest, and returns when every handler has returned.
func (s *Server) Stop(grace time.Duration) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	C.courier_server_shutdown(s.h, C.uint64_t(max(grace.Milliseconds(), 0)))
	if s.wake != nil {
		// Wakes the workers waiting on it; they find the queue closed.
		s.wake.Close()
	}
	s.workers.Wait()
	s.streams.Wait()
	C.courier_server_free(s.h)
	s.h = nil
}

// Panics is how many handler panics the server answered INTERNAL.
func (s *Server) Panics() int64 { return s.panics.Load() }

// blockingPull selects the other pull design, measured in bench/go: workers
// locked to threads blocking in C instead of waiting in Go's netpoller for
// the core's eventfd (COURIER_GO_PULL=blocking).
var blockingPull = os.Getenv("COURIER_GO_PULL") == "blocking"

var yieldOnWake = os.Getenv("COURIER_GO_YIELD") == "1"

// worker is one worker goroutine's state: the arrays the core fills with
// taken calls and reads answers from (C memory: no cgo pointer checks), and
// the buffer unary replies are encoded into.
type worker struct {
	s       *Server
	batch   *C.CourierReplyBatch
	taken   *[batchSize]C.CourierTakenCall
	answers *[batchSize]C.CourierAnswer
	nAns    int
	data    []byte
}

// maxKeptStreamData bounds the buffer a stream keeps to encode its messages
// (while its handler runs): big messages are where a fresh buffer per
// message costs most.
const maxKeptStreamData = 4 << 20

// maxKeptData bounds the reply bytes a worker collects before it answers,
// and the buffer it keeps between batches.
const maxKeptData = 256 << 10

func newWorker(s *Server) *worker {
	return &worker{
		s:       s,
		batch:   C.courier_reply_batch_new(),
		taken:   (*[batchSize]C.CourierTakenCall)(C.malloc(C.size_t(unsafe.Sizeof(C.CourierTakenCall{})) * batchSize)),
		answers: (*[batchSize]C.CourierAnswer)(C.malloc(C.size_t(unsafe.Sizeof(C.CourierAnswer{})) * batchSize)),
	}
}

// free answers what is left and frees the worker's C memory.
func (w *worker) free() {
	w.take(0, 0)
	C.courier_reply_batch_free(w.batch)
	C.free(unsafe.Pointer(w.taken))
	C.free(unsafe.Pointer(w.answers))
}

// take answers the worker's replies and takes up to max calls: one crossing.
func (w *worker) take(max int, timeoutMs int) int {
	var dp *C.uint8_t
	if len(w.data) > 0 {
		dp = (*C.uint8_t)(unsafe.Pointer(&w.data[0]))
	}
	n := int(C.courier_server_take(w.s.h, w.batch, &w.answers[0], C.size_t(w.nAns), dp, C.size_t(len(w.data)),
		&w.taken[0], C.size_t(max), C.int64_t(timeoutMs)))
	w.nAns = 0
	w.data = w.data[:0]
	if cap(w.data) > maxKeptData {
		w.data = nil
	}
	return n
}

// work is one worker: it takes batches of calls, runs unary handlers inline
// and answers them with its next take (one crossing per batch, both ways).
//
// Event mode (the default): the core writes an eventfd when its queue turns
// non-empty (at the end of the I/O thread's turn); an idle worker waits for
// it in Go's netpoller (no thread held), then takes calls with short
// non-blocking crossings until none are left. Every cgo call stays short, so
// the goroutine never loses its P to sysmon.
func (s *Server) work() {
	defer s.workers.Done()
	if blockingPull {
		// The core tracks which threads hold a batch: stay on one.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	w := newWorker(s)
	defer func() {
		w.free()
		C.courier_server_release(s.h)
	}()
	timeout := 0
	if blockingPull {
		timeout = -1
	}
	var buf [8]byte
	for {
		if s.nSpilled.Load() > 0 {
			if sp, ok := s.unspill(); ok {
				w.run(sp.calls, sp.at)
				continue
			}
		}
		n := w.take(batchSize, timeout)
		if n < 0 {
			return
		}
		if n == 0 {
			if blockingPull {
				continue
			}
			if _, err := s.wake.Read(buf[:]); err != nil {
				return // closed by Stop
			}
			if yieldOnWake {
				// Measured alternative: let the I/O thread that woke us run on.
				syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
			}
			continue
		}
		w.run(w.taken[:n], time.Now())
	}
}

// spilled is the rest of a batch left behind slow handlers, for idle
// workers; at is when it was taken (deadlines count from then).
type spilled struct {
	calls []C.CourierTakenCall
	at    time.Time
}

func (s *Server) spill(calls []C.CourierTakenCall, at time.Time) {
	sp := spilled{calls: append([]C.CourierTakenCall(nil), calls...), at: at}
	if blockingPull {
		// Idle workers are blocked in C and would not look: serve them here.
		go func() {
			w := newWorker(s)
			defer w.free()
			w.run(sp.calls, sp.at)
		}()
		return
	}
	s.spillMu.Lock()
	s.spills = append(s.spills, sp)
	s.nSpilled.Add(1)
	s.spillMu.Unlock()
	// Wake an idle worker through the core's eventfd (a spurious wake-up
	// costs one empty take).
	one := [8]byte{1}
	s.wake.Write(one[:])
}

func (s *Server) unspill() (spilled, bool) {
	s.spillMu.Lock()
	defer s.spillMu.Unlock()
	if len(s.spills) == 0 {
		return spilled{}, false
	}
	sp := s.spills[0]
	s.spills[0] = spilled{}
	s.spills = s.spills[1:]
	s.nSpilled.Add(-1)
	return sp, true
}

// run serves taken calls; unary answers go with the worker's next take.
func (w *worker) run(calls []C.CourierTakenCall, at time.Time) {
	if w.nAns+len(calls) > batchSize {
		w.take(0, 0) // room for every answer (after a spilled batch)
	}
	start := time.Now()
	for i := range calls {
		if i > 0 && time.Since(start) > slowBatch {
			// Slow handlers: give the rest to idle workers, send what is done.
			w.s.spill(calls[i:], at)
			w.take(0, 0)
			return
		}
		w.dispatch(&calls[i], at)
	}
}

func (w *worker) dispatch(tc *C.CourierTakenCall, at time.Time) {
	s := w.s
	id := int(tc.method_id)
	if id < 0 || id >= len(s.methods) {
		C.courier_call_free(tc.call) // answered INTERNAL by the core
		return
	}
	m := s.methods[id]
	switch m.desc.Kind {
	case Unary:
		w.serveUnary(m, tc, at)
	default:
		t := *tc
		s.streams.Add(1)
		go func() {
			defer s.streams.Done()
			s.serveStream(m, &t, at)
		}()
	}
}

// serveUnary runs a unary handler; its reply is encoded into the worker's
// buffer and answered (with the call freed) by the next take.
func (w *worker) serveUnary(m *method, tc *C.CourierTakenCall, at time.Time) {
	s := w.s
	ctx := newCallCtx(s.opts.base, m, tc, at)
	mark := len(w.data)
	reply, err := s.runUnary(ctx, m, borrowed(tc.request), w.data)
	ctx.finish()
	a := &w.answers[w.nAns]
	w.nAns++
	if err == nil {
		w.data = reply
		*a = C.CourierAnswer{call: tc.call, data: C.CourierSpan{offset: C.size_t(mark), len: C.size_t(len(reply) - mark)}}
		if len(w.data) >= maxKeptData {
			// Big replies go at once: the core keeps a batch's copy until its
			// last reply is written.
			w.take(0, 0)
		}
		return
	}
	code, msg, enum, value, downstream := s.errorStatus(m, err)
	w.data = append(append(w.data[:mark], msg...), enum...)
	*a = C.CourierAnswer{
		call: tc.call, code: C.int32_t(code), app_error_value: C.int32_t(value), downstream: C.bool(downstream),
		data:           C.CourierSpan{offset: C.size_t(mark), len: C.size_t(len(msg))},
		app_error_enum: C.CourierSpan{offset: C.size_t(mark + len(msg)), len: C.size_t(len(enum))},
	}
}

func (s *Server) runUnary(ctx *callCtx, m *method, req, out []byte) (reply []byte, err error) {
	defer s.recoverHandler(m, &err)
	return m.unary(ctx, req, out)
}

func (s *Server) pushError(batch *C.CourierReplyBatch, call *C.CourierCall, m *method, err error) {
	code, msg, enum, value, downstream := s.errorStatus(m, err)
	mp, ml := strArg(msg)
	ep, el := strArg(enum)
	C.courier_reply_batch_push_error(batch, call, C.int32_t(code), mp, ml, ep, el, C.int32_t(value), C.bool(downstream), nil)
}

// handlerPanic is the error a recovered panic becomes.
type handlerPanic struct{ value any }

func (p handlerPanic) Error() string { return fmt.Sprintf("handler panicked: %v", p.value) }

func (s *Server) recoverHandler(m *method, err *error) {
	if r := recover(); r != nil {
		s.panics.Add(1)
		s.opts.logger.Printf("courier: handler %s panicked: %v\n%s", m.path, r, debug.Stack())
		*err = handlerPanic{r}
	}
}

// errorStatus is the status a handler's error is sent as (the core applies
// the boundary rule to downstream statuses).
func (s *Server) errorStatus(m *method, err error) (code Code, msg, enum string, value int32, downstream bool) {
	var p handlerPanic
	if errors.As(err, &p) {
		return Internal, p.Error(), "", 0, false
	}
	var a *AppError
	if errors.As(err, &a) {
		if m.desc.AppErrorEnum == "" || a.Enum != m.desc.AppErrorEnum {
			s.opts.logger.Printf("courier: %s returned app error %s=%d but declares rpc_error enum %q", m.path, a.Enum, a.Value, m.desc.AppErrorEnum)
			return Internal, fmt.Sprintf("%s returned an undeclared application error", m.path), "", 0, false
		}
		c := a.Code
		if c == OK {
			c = Unknown
		}
		return c, a.Message, a.Enum, a.Value, false
	}
	st := StatusOf(err)
	if st.code == OK {
		st = &Status{code: Unknown, message: err.Error()}
	}
	if st.hasApp {
		enum, value = st.appEnum, st.appValue
	}
	return st.code, st.message, enum, value, st.downstream
}

// ---------------------------------------------------------------- streaming

// rawStream is the host side of a call's message streams. Its handle is
// guarded so that a stream used after its handler returned fails instead of
// touching a freed call.
type rawStream struct {
	mu   sync.RWMutex
	call *C.CourierCall
	m    *method

	// One send at a time (the core's rule); buf is reused to encode them.
	sendMu sync.Mutex
	buf    []byte
}

var errCallEnded = &Status{code: Canceled, message: "the call has ended"}

func (r *rawStream) recv(into proto.Message) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.call == nil {
		return errCallEnded
	}
	var msg C.CourierStr
	var cerr *C.CourierError
	switch C.courier_call_recv(r.call, &msg, &cerr) {
	case 1:
		if err := proto.Unmarshal(borrowed(msg), into); err != nil {
			return &Status{code: InvalidArgument, message: "cannot decode request: " + err.Error()}
		}
		return nil
	case 0:
		return errEOF
	default:
		return takeError(cerr)
	}
}

func (r *rawStream) send(m proto.Message) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	b, err := proto.MarshalOptions{}.MarshalAppend(r.buf[:0], m)
	if err != nil {
		return &Status{code: Internal, message: "cannot encode response: " + err.Error()}
	}
	if cap(b) <= maxKeptStreamData {
		// The core copies the message: the buffer serves the next one.
		r.buf = b[:0]
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.call == nil {
		return errCallEnded
	}
	var cerr *C.CourierError
	bp, bl := bytesArg(b)
	if !C.courier_call_send(r.call, bp, bl, &cerr) {
		return takeError(cerr)
	}
	return nil
}

func (r *rawStream) end() *C.CourierCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.call
	r.call = nil
	return c
}

func (s *Server) serveStream(m *method, tc *C.CourierTakenCall, at time.Time) {
	call := tc.call
	ctx := newCallCtx(s.opts.base, m, tc, at)
	req := tc.request
	rs := &rawStream{call: call, m: m}
	var reply []byte
	var err error
	func() {
		defer s.recoverHandler(m, &err)
		switch m.desc.Kind {
		case ServerStreaming:
			err = m.serverStream(ctx, borrowed(req), rs)
		case ClientStreaming:
			reply, err = m.clientStream(ctx, rs)
		default:
			err = m.bidi(ctx, rs)
		}
	}()
	ctx.finish()
	call = rs.end()
	defer C.courier_call_free(call)
	if m.desc.Kind == ClientStreaming {
		batch := C.courier_reply_batch_new()
		if err != nil {
			s.pushError(batch, call, m, err)
		} else {
			rp, rl := bytesArg(reply)
			C.courier_reply_batch_push(batch, call, rp, rl, nil)
		}
		C.courier_reply_batch_free(batch)
		return
	}
	if err == nil {
		C.courier_call_finish(call, 0, nil, 0, nil, 0, 0, false, nil)
		return
	}
	code, msg, enum, value, downstream := s.errorStatus(m, err)
	mp, ml := strArg(msg)
	ep, el := strArg(enum)
	C.courier_call_finish(call, C.int32_t(code), mp, ml, ep, el, C.int32_t(value), C.bool(downstream), nil)
}
