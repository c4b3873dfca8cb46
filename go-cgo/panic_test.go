package courier_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	courier "github.com/courier-rpc/courier/go-cgo"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

// panickyService is testService whose streaming handlers panic on a request
// with S == "panic", after answering the requests before it.
type panickyService struct{ testService }

func (p *panickyService) UnaryStream(ctx context.Context, req *pb.TestRequest, stream *courier.ServerStream[pb.TestResponse]) error {
	if req.S == "panic" {
		if err := stream.Send(&pb.TestResponse{S: "first"}); err != nil {
			return err
		}
		panic("server-stream bug")
	}
	return p.testService.UnaryStream(ctx, req, stream)
}

func (p *panickyService) StreamUnary(ctx context.Context, stream *courier.RecvStream[pb.TestRequest]) (*pb.TestResponse, error) {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return &pb.TestResponse{S: "done"}, nil
		}
		if err != nil {
			return nil, err
		}
		if req.S == "panic" {
			panic("client-stream bug")
		}
	}
}

func (p *panickyService) StreamStream(ctx context.Context, stream *courier.BidiStream[pb.TestRequest, pb.TestResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if req.S == "panic" {
			panic("bidi bug")
		}
		if err := stream.Send(&pb.TestResponse{S: req.S}); err != nil {
			return err
		}
	}
}

// wantPanicStatus checks that err is the INTERNAL a handler panic becomes.
func wantPanicStatus(t *testing.T, what string, err error, bug string) {
	t.Helper()
	st := courier.StatusOf(err)
	if st.Code() != courier.Internal || !strings.Contains(st.Message(), "handler panicked: "+bug) {
		t.Fatalf("%s: got %v, want INTERNAL \"handler panicked: %s\"", what, err, bug)
	}
}

// A panic in a streaming handler (server, client and bidi streaming) is
// INTERNAL for that call only, counted in Server.Panics; the server keeps
// serving, the same connection included.
func TestStreamingHandlerPanics(t *testing.T) {
	s := courier.NewServer(courier.IOThreads(1))
	if err := pb.RegisterTestServer(s, &panickyService{}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, "127.0.0.1:"+itoa(listenAndStart(t, s)))
	ctx := timeout(t, 10*time.Second)
	panics := s.Panics()
	counted := func(what string) {
		t.Helper()
		if got := s.Panics(); got != panics+1 {
			t.Fatalf("%s: Server.Panics went from %d to %d, want one more", what, panics, got)
		}
		panics++
	}

	// Server streaming: the message before the panic arrives, then INTERNAL.
	ss, err := c.UnaryStream(ctx, &pb.TestRequest{S: "panic"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ss.Recv()
	if err != nil || m.S != "first" {
		t.Fatalf("server stream, first message: %v %v", m, err)
	}
	_, err = ss.Recv()
	wantPanicStatus(t, "server stream", err, "server-stream bug")
	counted("server stream")

	// Client streaming.
	cs, err := c.StreamUnary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"a", "panic"} {
		if err := cs.Send(&pb.TestRequest{S: r}); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	_, err = cs.CloseAndRecv()
	wantPanicStatus(t, "client stream", err, "client-stream bug")
	counted("client stream")

	// Bidi: one exchange, then the panic.
	bs, err := c.StreamStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Send(&pb.TestRequest{S: "one"}); err != nil {
		t.Fatal(err)
	}
	if m, err := bs.Recv(); err != nil || m.S != "one" {
		t.Fatalf("bidi, first exchange: %v %v", m, err)
	}
	if err := bs.Send(&pb.TestRequest{S: "panic"}); err != nil {
		t.Fatal(err)
	}
	_, err = bs.Recv()
	wantPanicStatus(t, "bidi", err, "bidi bug")
	counted("bidi")

	// Still serving every kind.
	ss, err = c.UnaryStream(ctx, &pb.TestRequest{S: "ok", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_, err := ss.Recv()
		if err == io.EOF {
			if i != 3 {
				t.Fatalf("after the panics: %d messages, want 3", i)
			}
			break
		}
		if err != nil {
			t.Fatalf("server stream after the panics: %v", err)
		}
	}
	bs, err = c.StreamStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Send(&pb.TestRequest{S: "again"}); err != nil {
		t.Fatal(err)
	}
	if m, err := bs.Recv(); err != nil || m.S != "again" {
		t.Fatalf("bidi after the panics: %v %v", m, err)
	}
	bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		t.Fatalf("bidi end after the panics: %v", err)
	}
	if r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "unary"}); err != nil || r.S != "unary" {
		t.Fatalf("unary after the panics: %v %v", r, err)
	}
	if got := s.Panics(); got != panics {
		t.Fatalf("Server.Panics %d, want %d", got, panics)
	}
}
