package courier

/*
#include "courier.h"
*/
import "C"

import (
	"context"
	"io"
	"runtime"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
)

type dialOptions struct {
	maxRecvMsgSize int
	connectTimeout time.Duration
	tls            *ClientTLS
}

// DialOption configures a ClientConn.
type DialOption func(*dialOptions)

// WithMaxRecvMsgSize sets the largest response message accepted (default 4 MiB).
func WithMaxRecvMsgSize(n int) DialOption { return func(o *dialOptions) { o.maxRecvMsgSize = n } }

// WithConnectTimeout sets the connect timeout (default 20 s).
func WithConnectTimeout(d time.Duration) DialOption {
	return func(o *dialOptions) { o.connectTimeout = d }
}

// ClientConn is a channel to one target: one HTTP/2 connection, multiplexed,
// connected on first use and re-established after failures. Safe for
// concurrent use; share one per target.
type ClientConn struct {
	mu     sync.RWMutex
	h      *C.CourierChannel
	target string
}

// Dial makes a ClientConn to target ("host:port"). It does not wait for the
// connection.
func Dial(target string, opts ...DialOption) (*ClientConn, error) {
	var o dialOptions
	for _, f := range opts {
		f(&o)
	}
	handleSIGPIPE()
	copts := C.CourierChannelOptions{
		max_recv_message_size: C.uint64_t(max(o.maxRecvMsgSize, 0)),
		connect_timeout_ms:    C.uint64_t(max(o.connectTimeout.Milliseconds(), 0)),
	}
	if o.tls != nil {
		copts.tls = o.tls.h
	}
	var cerr *C.CourierError
	tp, tl := strArg(target)
	h := C.courier_channel_new(tp, tl, &copts, &cerr)
	runtime.KeepAlive(o.tls)
	if h == nil {
		return nil, takeError(cerr)
	}
	return &ClientConn{h: h, target: target}, nil
}

// Target is the target the conn was dialled with.
func (cc *ClientConn) Target() string { return cc.target }

// Close releases the conn; calls in progress finish, new calls fail.
func (cc *ClientConn) Close() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.h != nil {
		C.courier_channel_free(cc.h)
		cc.h = nil
	}
	return nil
}

type callOptions struct {
	md      MD
	header  *MD
	trailer *MD
}

// CallOption configures one call.
type CallOption func(*callOptions)

// WithMetadata sends md with the call (added to any given before).
func WithMetadata(md MD) CallOption {
	return func(o *callOptions) {
		if o.md == nil {
			o.md = MD{}
		}
		for k, v := range md {
			o.md[k] = append(o.md[k], v...)
		}
	}
}

// Header stores the response headers of a unary call in *md.
func Header(md *MD) CallOption { return func(o *callOptions) { o.header = md } }

// Trailer stores the response trailers of a unary call in *md.
func Trailer(md *MD) CallOption { return func(o *callOptions) { o.trailer = md } }

var errClosed = &Status{code: Canceled, message: "courier: the ClientConn is closed"}

// Invoke makes a unary call of m. Its deadline is the earliest of ctx's and
// m's default; a ctx of a server call passes on its deadline, request id and
// trace context; cancelling ctx cancels the call. A failed call returns a
// *Status (downstream: a handler returning it unchanged answers UNKNOWN).
func (cc *ClientConn) Invoke(ctx context.Context, m *MethodDesc, req, resp proto.Message, opts ...CallOption) error {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	cm, err := m.cMethod()
	if err != nil {
		return err
	}
	b, err := proto.Marshal(req)
	if err != nil {
		return &Status{code: Internal, message: "cannot encode request: " + err.Error()}
	}
	md, err := newCMetadata(o.md)
	if err != nil {
		return err
	}
	defer C.courier_metadata_free(md)
	oc, err := newOutCtx(ctx)
	if err != nil {
		return err
	}
	defer oc.release()
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	if cc.h == nil {
		return errClosed
	}
	var cerr *C.CourierError
	bp, bl := bytesArg(b)
	r := C.courier_channel_unary(cc.h, oc.h, cm, bp, bl, md, &cerr)
	runtime.KeepAlive(b)
	if r == nil {
		return takeError(cerr)
	}
	defer C.courier_reply_free(r)
	if o.header != nil {
		*o.header = readMetadata(C.courier_reply_headers(r))
	}
	if o.trailer != nil {
		*o.trailer = readMetadata(C.courier_reply_trailers(r))
	}
	if err := proto.Unmarshal(borrowed(C.courier_reply_message(r)), resp); err != nil {
		return &Status{code: Internal, message: "cannot decode response: " + err.Error(), downstream: true}
	}
	return nil
}

// ClientStream is a streaming call in progress (any kind). SendMsg and
// RecvMsg may run concurrently from two goroutines (one each). Read until
// RecvMsg returns an error (io.EOF on success), or cancel ctx, to release it.
type ClientStream struct {
	mu     sync.Mutex
	cond   *sync.Cond
	h      *C.CourierClientCall
	oc     *outCtx
	busy   int
	ended  bool
	header MD
	trail  MD
}

// NewStream starts a streaming call of m (see Invoke for deadlines and ctx).
func (cc *ClientConn) NewStream(ctx context.Context, m *MethodDesc, opts ...CallOption) (*ClientStream, error) {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	cm, err := m.cMethod()
	if err != nil {
		return nil, err
	}
	md, err := newCMetadata(o.md)
	if err != nil {
		return nil, err
	}
	defer C.courier_metadata_free(md)
	oc, err := newOutCtx(ctx)
	if err != nil {
		return nil, err
	}
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	if cc.h == nil {
		oc.release()
		return nil, errClosed
	}
	var cerr *C.CourierError
	h := C.courier_channel_stream(cc.h, oc.h, cm, md, &cerr)
	if h == nil {
		oc.release()
		return nil, takeError(cerr)
	}
	s := &ClientStream{h: h, oc: oc}
	s.cond = sync.NewCond(&s.mu)
	// A stream dropped without reading to the end is cancelled and freed.
	runtime.SetFinalizer(s, func(s *ClientStream) { s.free() })
	return s, nil
}

// acquire marks an operation in progress; false once the stream is freed.
func (s *ClientStream) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return false
	}
	s.busy++
	return true
}

func (s *ClientStream) releaseOp() {
	s.mu.Lock()
	s.busy--
	s.cond.Broadcast()
	s.mu.Unlock()
}

// SendMsg sends one request; io.EOF once the call has ended (RecvMsg gives its status).
func (s *ClientStream) SendMsg(m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return &Status{code: Internal, message: "cannot encode request: " + err.Error()}
	}
	if !s.acquire() {
		return io.EOF
	}
	defer s.releaseOp()
	var cerr *C.CourierError
	bp, bl := bytesArg(b)
	ok := C.courier_client_call_send(s.h, bp, bl, &cerr)
	runtime.KeepAlive(b)
	if !ok {
		if cerr != nil {
			return takeError(cerr)
		}
		return io.EOF
	}
	return nil
}

// CloseSend ends the requests (half-close).
func (s *ClientStream) CloseSend() error {
	if s.acquire() {
		C.courier_client_call_close_send(s.h)
		s.releaseOp()
	}
	return nil
}

// RecvMsg receives the next response into m: io.EOF at the end of an OK
// call, the call's *Status otherwise. After an error the stream is released.
func (s *ClientStream) RecvMsg(m proto.Message) error {
	if !s.acquire() {
		return io.EOF
	}
	var msg C.CourierStr
	var cerr *C.CourierError
	r := C.courier_client_call_recv(s.h, &msg, &cerr)
	if s.header == nil {
		if hm := C.courier_client_call_headers(s.h); hm != nil {
			s.header = readMetadata(hm)
			C.courier_metadata_free(hm)
		}
	}
	switch r {
	case 1:
		err := proto.Unmarshal(borrowed(msg), m)
		s.releaseOp()
		if err != nil {
			return &Status{code: Internal, message: "cannot decode response: " + err.Error(), downstream: true}
		}
		return nil
	case 0:
		if tm := C.courier_client_call_trailers(s.h); tm != nil {
			s.trail = readMetadata(tm)
			C.courier_metadata_free(tm)
		}
		s.releaseOp()
		s.free()
		return io.EOF
	default:
		err := takeError(cerr)
		s.releaseOp()
		s.free()
		return err
	}
}

// Header is the response headers, once the first RecvMsg returned.
func (s *ClientStream) Header() MD { return s.header }

// Trailer is the response trailers, once RecvMsg returned io.EOF.
func (s *ClientStream) Trailer() MD { return s.trail }

// Cancel cancels the call and releases the stream.
func (s *ClientStream) Cancel() {
	if s.acquire() {
		C.courier_client_call_cancel(s.h)
		s.releaseOp()
	}
	s.free()
}

// free waits for operations in progress, then frees the call.
func (s *ClientStream) free() {
	s.mu.Lock()
	if s.h == nil {
		s.mu.Unlock()
		return
	}
	// Unblock a SendMsg waiting on a finished call, then wait for it.
	C.courier_client_call_close_send(s.h)
	for s.busy > 0 {
		s.cond.Wait()
	}
	h := s.h
	s.h = nil
	s.mu.Unlock()
	C.courier_client_call_free(h)
	s.oc.release()
	runtime.SetFinalizer(s, nil)
}

// ServerStreamClient reads the responses of a server-streaming call.
type ServerStreamClient[Resp any] struct{ *ClientStream }

// Recv is the next response; io.EOF at the end of an OK call, the call's
// *Status otherwise.
func (s *ServerStreamClient[Resp]) Recv() (*Resp, error) {
	m := new(Resp)
	if err := s.RecvMsg(any(m).(proto.Message)); err != nil {
		return nil, err
	}
	return m, nil
}

// CallServerStream starts a server-streaming call of m with req (generated
// clients use it).
func CallServerStream[Resp any, PResp Message[Resp]](ctx context.Context, cc *ClientConn, m *MethodDesc, req proto.Message, opts ...CallOption) (*ServerStreamClient[Resp], error) {
	s, err := cc.NewStream(ctx, m, opts...)
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(req); err != nil && err != io.EOF {
		s.Cancel()
		return nil, err
	}
	s.CloseSend()
	return &ServerStreamClient[Resp]{s}, nil
}

// ClientStreamClient sends the requests of a client-streaming call and
// receives its one response.
type ClientStreamClient[Req, Resp any] struct{ *ClientStream }

// Send sends one request; io.EOF once the call has ended (CloseAndRecv gives its status).
func (s *ClientStreamClient[Req, Resp]) Send(m *Req) error { return s.SendMsg(any(m).(proto.Message)) }

// CloseAndRecv ends the requests and waits for the response.
func (s *ClientStreamClient[Req, Resp]) CloseAndRecv() (*Resp, error) {
	s.CloseSend()
	m := new(Resp)
	if err := s.RecvMsg(any(m).(proto.Message)); err != nil {
		if err == io.EOF {
			return nil, &Status{code: Internal, message: "server sent no response message", downstream: true}
		}
		return nil, err
	}
	// Read the end of the call (its trailers), releasing the stream.
	var extra Resp
	if err := s.RecvMsg(any(&extra).(proto.Message)); err != io.EOF {
		if err == nil {
			return nil, &Status{code: Internal, message: "server sent more than one response message", downstream: true}
		}
		return nil, err
	}
	return m, nil
}

// CallClientStream starts a client-streaming call of m.
func CallClientStream[Req, Resp any, PReq Message[Req], PResp Message[Resp]](ctx context.Context, cc *ClientConn, m *MethodDesc, opts ...CallOption) (*ClientStreamClient[Req, Resp], error) {
	s, err := cc.NewStream(ctx, m, opts...)
	if err != nil {
		return nil, err
	}
	return &ClientStreamClient[Req, Resp]{s}, nil
}

// BidiStreamClient sends requests and receives responses of a bidi call,
// from one goroutine or two (one sending, one receiving).
type BidiStreamClient[Req, Resp any] struct{ *ClientStream }

// Send sends one request; io.EOF once the call has ended (Recv gives its status).
func (s *BidiStreamClient[Req, Resp]) Send(m *Req) error { return s.SendMsg(any(m).(proto.Message)) }

// Recv is the next response; io.EOF at the end of an OK call.
func (s *BidiStreamClient[Req, Resp]) Recv() (*Resp, error) {
	m := new(Resp)
	if err := s.RecvMsg(any(m).(proto.Message)); err != nil {
		return nil, err
	}
	return m, nil
}

// CallBidiStream starts a bidi-streaming call of m.
func CallBidiStream[Req, Resp any, PReq Message[Req], PResp Message[Resp]](ctx context.Context, cc *ClientConn, m *MethodDesc, opts ...CallOption) (*BidiStreamClient[Req, Resp], error) {
	s, err := cc.NewStream(ctx, m, opts...)
	if err != nil {
		return nil, err
	}
	return &BidiStreamClient[Req, Resp]{s}, nil
}
