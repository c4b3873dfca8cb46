package testpeer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

// ServeGrpcGo serves courier.test.Test with stock grpc-go on l (in the
// background), with the semantics of tests/peer/src/service.rs, including the
// `courier-app-error` trailer a Courier server sends with an app error.
func ServeGrpcGo(l net.Listener) *grpc.Server {
	s := grpc.NewServer()
	s.RegisterService(&grpcDesc, nil)
	go s.Serve(l)
	return s
}

// grpcCall is what one call's handler keeps across messages.
type grpcCall struct {
	ctx         context.Context
	mu          sync.Mutex
	headersSent bool
}

// apply is steps 1-4 for one request: the metadata value and the failure;
// err when the call ended while sleeping.
func (c *grpcCall) apply(req *pb.TestRequest) (value string, failure, err error) {
	if req.EchoHeader != "" {
		md, _ := metadata.FromIncomingContext(c.ctx)
		if vs := md.Get(req.EchoHeader); len(vs) > 0 {
			value = vs[0]
			c.mu.Lock()
			if !c.headersSent {
				grpc.SetHeader(c.ctx, metadata.Pairs("x-echo-header", value))
			}
			c.mu.Unlock()
			grpc.SetTrailer(c.ctx, metadata.Pairs("x-echo-trailer", value))
		}
	}
	if req.SleepMs > 0 {
		select {
		case <-time.After(time.Duration(req.SleepMs) * time.Millisecond):
		case <-c.ctx.Done():
			return "", nil, status.FromContextError(c.ctx.Err()).Err()
		}
	}
	if req.AppError != 0 {
		msg := req.FailMessage
		if msg == "" {
			msg = fmt.Sprintf("app error %d", req.AppError)
		}
		grpc.SetTrailer(c.ctx, metadata.Pairs("courier-app-error", fmt.Sprintf("courier.test.TestError:%d", req.AppError)))
		return value, status.Error(codes.FailedPrecondition, msg), nil
	}
	if req.FailCode != 0 {
		return value, status.Error(codes.Code(req.FailCode), req.FailMessage), nil
	}
	return value, nil, nil
}

func (c *grpcCall) requestID() string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	if ids := md.Get("x-request-id"); len(ids) > 0 {
		return ids[0]
	}
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (c *grpcCall) deadlineMs(report bool) int64 {
	if !report {
		return 0
	}
	dl, ok := c.ctx.Deadline()
	if !ok {
		return -1
	}
	return time.Until(dl).Milliseconds()
}

func (c *grpcCall) response(req *pb.TestRequest, value string, i int32) *pb.TestResponse {
	return &pb.TestResponse{S: req.S, Payload: req.Payload, Index: i, MetadataValue: value,
		DeadlineMs: c.deadlineMs(req.ReportDeadline), RequestId: c.requestID()}
}

// send sends one response; the headers go with the first.
func (c *grpcCall) send(st grpc.ServerStream, r *pb.TestResponse) error {
	c.mu.Lock()
	c.headersSent = true
	c.mu.Unlock()
	return st.SendMsg(r)
}

var grpcDesc = grpc.ServiceDesc{
	ServiceName: "courier.test.Test",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "UnaryUnary", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		req := new(pb.TestRequest)
		if err := dec(req); err != nil {
			return nil, err
		}
		c := &grpcCall{ctx: ctx}
		value, failure, err := c.apply(req)
		if err != nil {
			return nil, err
		}
		if failure != nil {
			return nil, failure
		}
		return c.response(req, value, 0), nil
	}}},
	Streams: []grpc.StreamDesc{
		{StreamName: "UnaryStream", ServerStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
			req := new(pb.TestRequest)
			if err := st.RecvMsg(req); err != nil {
				return err
			}
			c := &grpcCall{ctx: st.Context()}
			value, failure, err := c.apply(req)
			if err != nil {
				return err
			}
			for i := int32(0); i < req.Count; i++ {
				if err := c.send(st, c.response(req, value, i)); err != nil {
					return err
				}
			}
			return failure
		}},
		{StreamName: "StreamUnary", ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
			c := &grpcCall{ctx: st.Context()}
			out := &pb.TestResponse{RequestId: c.requestID()}
			var s strings.Builder
			for {
				req := new(pb.TestRequest)
				if err := st.RecvMsg(req); err == io.EOF {
					out.S = s.String()
					return st.SendMsg(out)
				} else if err != nil {
					return err
				}
				value, failure, err := c.apply(req)
				if err != nil {
					return err
				}
				if failure != nil {
					return failure
				}
				s.WriteString(req.S)
				out.Payload = append(out.Payload, req.Payload...)
				if req.EchoHeader != "" {
					out.MetadataValue = value
				}
				if req.ReportDeadline {
					out.DeadlineMs = c.deadlineMs(true)
				}
			}
		}},
		{StreamName: "StreamStream", ServerStreams: true, ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
			c := &grpcCall{ctx: st.Context()}
			for i := int32(0); ; i++ {
				req := new(pb.TestRequest)
				if err := st.RecvMsg(req); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
				value, failure, err := c.apply(req)
				if err != nil {
					return err
				}
				if failure != nil {
					return failure
				}
				if err := c.send(st, c.response(req, value, i)); err != nil {
					return err
				}
			}
		}},
	},
}
