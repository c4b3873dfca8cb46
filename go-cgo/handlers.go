package courier

import (
	"context"
	"io"

	"google.golang.org/protobuf/proto"
)

var errEOF = io.EOF

// Message is a protobuf message type used as *T (generated code's messages).
type Message[T any] interface {
	*T
	proto.Message
}

func decode[Req any, PReq Message[Req]](b []byte) (PReq, error) {
	req := PReq(new(Req))
	if err := proto.Unmarshal(b, req); err != nil {
		return nil, &Status{code: InvalidArgument, message: "cannot decode request: " + err.Error()}
	}
	return req, nil
}

func encode(m proto.Message) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, &Status{code: Internal, message: "cannot encode response: " + err.Error()}
	}
	return b, nil
}

// encodeAppend appends m's encoding to out (a worker's reply buffer: no
// allocation per reply once it has grown).
func encodeAppend(out []byte, m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{}.MarshalAppend(out, m)
	if err != nil {
		return nil, &Status{code: Internal, message: "cannot encode response: " + err.Error()}
	}
	return b, nil
}

func checkKind(m *MethodDesc, k Kind) error {
	if m.Kind != k {
		return &Error{Kind: ErrInvalidArgument, Message: "method " + m.Path + " is not of the handler's kind"}
	}
	return nil
}

// HandleUnary serves a unary method with h.
func HandleUnary[Req, Resp any, PReq Message[Req], PResp Message[Resp]](s *Server, m *MethodDesc, h func(context.Context, PReq) (PResp, error)) error {
	if err := checkKind(m, Unary); err != nil {
		return err
	}
	return s.register(&method{desc: m, unary: func(ctx context.Context, b, out []byte) ([]byte, error) {
		req, err := decode[Req, PReq](b)
		if err != nil {
			return nil, err
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, err
		}
		return encodeAppend(out, resp)
	}})
}

// ServerStream sends the responses of a server-streaming or bidi call.
type ServerStream[Resp any] struct{ raw *rawStream }

// Send sends one response; it blocks while the client is behind, and fails
// with CANCELLED once the call is over.
func (s *ServerStream[Resp]) Send(m *Resp) error { return s.raw.send(any(m).(proto.Message)) }

// RecvStream receives the requests of a client-streaming or bidi call.
type RecvStream[Req any] struct{ raw *rawStream }

// Recv is the next request; io.EOF once the client closed its side, a
// *Status (CANCELLED) if it reset the stream.
func (s *RecvStream[Req]) Recv() (*Req, error) {
	m := new(Req)
	if err := s.raw.recv(any(m).(proto.Message)); err != nil {
		return nil, err
	}
	return m, nil
}

// BidiStream receives the requests and sends the responses of a bidi call.
type BidiStream[Req, Resp any] struct {
	RecvStream[Req]
	ServerStream[Resp]
}

// HandleServerStreaming serves a server-streaming method with h; the call
// ends with h's error (nil: OK) after the messages it sent.
func HandleServerStreaming[Req, Resp any, PReq Message[Req], PResp Message[Resp]](s *Server, m *MethodDesc, h func(context.Context, PReq, *ServerStream[Resp]) error) error {
	if err := checkKind(m, ServerStreaming); err != nil {
		return err
	}
	return s.register(&method{desc: m, serverStream: func(ctx context.Context, b []byte, raw *rawStream) error {
		req, err := decode[Req, PReq](b)
		if err != nil {
			return err
		}
		return h(ctx, req, &ServerStream[Resp]{raw})
	}})
}

// HandleClientStreaming serves a client-streaming method with h.
func HandleClientStreaming[Req, Resp any, PReq Message[Req], PResp Message[Resp]](s *Server, m *MethodDesc, h func(context.Context, *RecvStream[Req]) (PResp, error)) error {
	if err := checkKind(m, ClientStreaming); err != nil {
		return err
	}
	return s.register(&method{desc: m, clientStream: func(ctx context.Context, raw *rawStream) ([]byte, error) {
		resp, err := h(ctx, &RecvStream[Req]{raw})
		if err != nil {
			return nil, err
		}
		return encode(resp)
	}})
}

// HandleBidiStreaming serves a bidi-streaming method with h.
func HandleBidiStreaming[Req, Resp any, PReq Message[Req], PResp Message[Resp]](s *Server, m *MethodDesc, h func(context.Context, *BidiStream[Req, Resp]) error) error {
	if err := checkKind(m, BidiStreaming); err != nil {
		return err
	}
	return s.register(&method{desc: m, bidi: func(ctx context.Context, raw *rawStream) error {
		return h(ctx, &BidiStream[Req, Resp]{RecvStream[Req]{raw}, ServerStream[Resp]{raw}})
	}})
}
