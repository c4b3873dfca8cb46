// Package testpeer is courier.test.Test in Go for the cross-language tests:
// served by Courier (Service) and by stock grpc-go (ServeGrpcGo), and the
// interop matrix's client cases (RunCases) for both clients. The Go tests and
// the standalone peer (cmd/courier-go-testpeer) share it.
package testpeer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	courier "github.com/courier-rpc/courier/go-cgo"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

// Service is courier.test.Test in Go, with the semantics of
// tests/peer/src/service.rs (steps 1-5), plus: s == "panic" panics, s ==
// "plain" returns a plain Go error, s == "hop" calls UnaryUnary on Downstream
// (report_deadline) and answers with what it saw.
type Service struct {
	Downstream *pb.TestClient
}

// apply is steps 1-4 for one request: the metadata value, or the failure.
func apply(ctx context.Context, req *pb.TestRequest, headersSent bool) (string, error, error) {
	value := ""
	if req.EchoHeader != "" {
		if vs := courier.Metadata(ctx).Get(req.EchoHeader); len(vs) > 0 {
			value = vs[0]
			if !headersSent {
				courier.SetHeader(ctx, "x-echo-header", value)
			}
			courier.SetTrailer(ctx, "x-echo-trailer", value)
		}
	}
	if req.SleepMs > 0 {
		select {
		case <-time.After(time.Duration(req.SleepMs) * time.Millisecond):
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", nil, courier.Errorf(courier.DeadlineExceeded, "deadline exceeded while sleeping")
			}
			return "", nil, courier.Errorf(courier.Canceled, "cancelled while sleeping")
		}
	}
	if req.AppError != 0 {
		msg := req.FailMessage
		if msg == "" {
			msg = fmt.Sprintf("app error %d", req.AppError)
		}
		return value, pb.TestError(req.AppError).Err(msg), nil
	}
	if req.FailCode != 0 {
		return value, courier.Errorf(courier.Code(req.FailCode), "%s", req.FailMessage), nil
	}
	return value, nil, nil
}

func deadlineMs(ctx context.Context, report bool) int64 {
	if !report {
		return 0
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return -1
	}
	return time.Until(dl).Milliseconds()
}

func response(ctx context.Context, req *pb.TestRequest, value string, index int32) *pb.TestResponse {
	return &pb.TestResponse{S: req.S, Payload: req.Payload, Index: index, MetadataValue: value,
		DeadlineMs: deadlineMs(ctx, req.ReportDeadline), RequestId: courier.RequestID(ctx)}
}

func (t *Service) UnaryUnary(ctx context.Context, req *pb.TestRequest) (*pb.TestResponse, error) {
	switch req.S {
	case "panic":
		panic("handler bug")
	case "plain":
		return nil, errors.New("a plain error")
	case "whoami":
		id, ok := courier.PeerIdentity(ctx)
		if !ok {
			return &pb.TestResponse{S: "unauthenticated"}, nil
		}
		return &pb.TestResponse{S: id.SpiffeID + "|" + id.Name}, nil
	case "hop":
		if t.Downstream != nil {
			down, err := t.Downstream.UnaryUnary(ctx, &pb.TestRequest{S: "down", ReportDeadline: true})
			if err != nil {
				return nil, err // a downstream status: the caller gets UNKNOWN
			}
			return &pb.TestResponse{S: "hop", DeadlineMs: down.DeadlineMs, RequestId: down.RequestId}, nil
		}
	}
	value, failure, err := apply(ctx, req, false)
	if err != nil {
		return nil, err
	}
	if failure != nil {
		return nil, failure
	}
	return response(ctx, req, value, 0), nil
}

func (t *Service) UnaryStream(ctx context.Context, req *pb.TestRequest, stream *courier.ServerStream[pb.TestResponse]) error {
	value, failure, err := apply(ctx, req, false)
	if err != nil {
		return err
	}
	for i := int32(0); i < req.Count; i++ {
		if err := stream.Send(response(ctx, req, value, i)); err != nil {
			return err
		}
	}
	return failure
}

func (t *Service) StreamUnary(ctx context.Context, stream *courier.RecvStream[pb.TestRequest]) (*pb.TestResponse, error) {
	out := &pb.TestResponse{RequestId: courier.RequestID(ctx)}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		value, failure, err := apply(ctx, req, false)
		if err != nil {
			return nil, err
		}
		if failure != nil {
			return nil, failure
		}
		out.S += req.S
		out.Payload = append(out.Payload, req.Payload...)
		if req.EchoHeader != "" {
			out.MetadataValue = value
		}
		if req.ReportDeadline {
			out.DeadlineMs = deadlineMs(ctx, true)
		}
	}
}

func (t *Service) StreamStream(ctx context.Context, stream *courier.BidiStream[pb.TestRequest, pb.TestResponse]) error {
	for i := int32(0); ; i++ {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		value, failure, err := apply(ctx, req, i > 0)
		if err != nil {
			return err
		}
		if failure != nil {
			return failure
		}
		if err := stream.Send(response(ctx, req, value, i)); err != nil {
			return err
		}
	}
}
