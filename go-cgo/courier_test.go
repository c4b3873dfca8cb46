package courier_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	courier "github.com/courier-rpc/courier/go-cgo"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

// startGoServer serves testService on a loopback port; stopped at cleanup.
func startGoServer(t testing.TB, svc *testService, opts ...courier.ServerOption) (*courier.Server, string) {
	t.Helper()
	if svc == nil {
		svc = &testService{}
	}
	s := courier.NewServer(append([]courier.ServerOption{courier.IOThreads(1)}, opts...)...)
	if err := pb.RegisterTestServer(s, svc); err != nil {
		t.Fatal(err)
	}
	return s, "127.0.0.1:" + itoa(listenAndStart(t, s))
}

// listenAndStart serves s on a free loopback port until the test ends.
func listenAndStart(t testing.TB, s *courier.Server) int {
	t.Helper()
	port, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(time.Second) })
	return port
}

func itoa(n int) string { return strconv.Itoa(n) }

func dial(t testing.TB, target string) *pb.TestClient {
	t.Helper()
	cc, err := courier.Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewTestClient(cc)
}

func timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestGoToGoAllKinds(t *testing.T) {
	_, target := startGoServer(t, nil)
	c := dial(t, target)
	ctx := timeout(t, 5*time.Second)

	r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "hello", Payload: []byte{0, 1, 2}, ReportDeadline: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.S != "hello" || string(r.Payload) != "\x00\x01\x02" || r.RequestId == "" {
		t.Fatalf("unexpected reply %v", r)
	}
	if r.DeadlineMs <= 0 || r.DeadlineMs > 5000 {
		t.Fatalf("deadline seen by the server: %d ms, want (0, 5000]", r.DeadlineMs)
	}

	ss, err := c.UnaryStream(ctx, &pb.TestRequest{S: "x", Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := int32(0); ; i++ {
		m, err := ss.Recv()
		if err == io.EOF {
			if i != 5 {
				t.Fatalf("got %d messages, want 5", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Index != i {
			t.Fatalf("index %d, want %d", m.Index, i)
		}
	}

	cs, err := c.StreamUnary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a", "b", "c"} {
		if err := cs.Send(&pb.TestRequest{S: s}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := cs.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got.S != "abc" {
		t.Fatalf("StreamUnary: %q", got.S)
	}

	bs, err := c.StreamStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []string{"x", "y", "z"} {
		if err := bs.Send(&pb.TestRequest{S: s}); err != nil {
			t.Fatal(err)
		}
		m, err := bs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.S != s || m.Index != int32(i) {
			t.Fatalf("bidi reply %v", m)
		}
	}
	bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		t.Fatalf("bidi end: %v", err)
	}
}

func TestGoErrorsAndDeadlines(t *testing.T) {
	s, target := startGoServer(t, nil)
	c := dial(t, target)
	ctx := timeout(t, 5*time.Second)

	_, err := c.UnaryUnary(ctx, &pb.TestRequest{AppError: 2, FailMessage: "gone"})
	if v, ok := pb.TestErrorOf(err); !ok || v != pb.TestError_TEST_ERROR_GONE {
		t.Fatalf("app error: %v", err)
	}
	if st := courier.StatusOf(err); st.Code() != courier.FailedPrecondition || st.Message() != "gone" || !st.Downstream() {
		t.Fatalf("app error status: %v (downstream %v)", st, st.Downstream())
	}

	_, err = c.UnaryUnary(ctx, &pb.TestRequest{FailCode: int32(courier.NotFound), FailMessage: "no such thing"})
	if st := courier.StatusOf(err); st.Code() != courier.NotFound || st.Message() != "no such thing" {
		t.Fatalf("status: %v", err)
	}

	_, err = c.UnaryUnary(ctx, &pb.TestRequest{S: "plain"})
	if courier.CodeOf(err) != courier.Unknown {
		t.Fatalf("plain error: %v", err)
	}

	before := s.Panics()
	_, err = c.UnaryUnary(ctx, &pb.TestRequest{S: "panic"})
	if st := courier.StatusOf(err); st.Code() != courier.Internal || !strings.Contains(st.Message(), "handler bug") {
		t.Fatalf("panic: %v", err)
	}
	if s.Panics() != before+1 {
		t.Fatalf("panics counted: %d", s.Panics()-before)
	}
	if _, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "still serving"}); err != nil {
		t.Fatalf("after a panic: %v", err)
	}

	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = c.UnaryUnary(short, &pb.TestRequest{SleepMs: 5000})
	if courier.CodeOf(err) != courier.DeadlineExceeded {
		t.Fatalf("deadline: %v", err)
	}
	if el := time.Since(t0); el > 2*time.Second {
		t.Fatalf("deadline took %v", el)
	}

	cctx, ccancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); ccancel() }()
	_, err = c.UnaryUnary(cctx, &pb.TestRequest{SleepMs: 5000})
	if courier.CodeOf(err) != courier.Canceled {
		t.Fatalf("cancel: %v", err)
	}
}

func TestGoMetadata(t *testing.T) {
	_, target := startGoServer(t, nil)
	c := dial(t, target)
	ctx := timeout(t, 5*time.Second)
	var header, trailer courier.MD
	r, err := c.UnaryUnary(ctx, &pb.TestRequest{EchoHeader: "x-demo"},
		courier.WithMetadata(courier.Pairs("x-demo", "hello", "x-request-id", "rid-1")), courier.Header(&header), courier.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if r.MetadataValue != "hello" || r.RequestId != "rid-1" {
		t.Fatalf("reply %v", r)
	}
	if header.Get("x-echo-header")[0] != "hello" || trailer.Get("x-echo-trailer")[0] != "hello" {
		t.Fatalf("header %v trailer %v", header, trailer)
	}
	_, err = c.UnaryUnary(ctx, &pb.TestRequest{}, courier.WithMetadata(courier.MD{"Bad Key": {"v"}}))
	var e *courier.Error
	if !errors.As(err, &e) || e.Kind != courier.ErrInvalidArgument {
		t.Fatalf("bad metadata: %v", err)
	}
}

// A Go handler's ctx is cancelled when the client goes away.
func TestHandlerSeesCancellation(t *testing.T) {
	seen := make(chan error, 1)
	svc := &cancelService{seen: seen}
	s := courier.NewServer(courier.IOThreads(1))
	if err := courier.HandleUnary(s, pb.Test_UnaryUnary_Method, svc.UnaryUnary); err != nil {
		t.Fatal(err)
	}
	port, _ := s.Listen("127.0.0.1:0")
	s.Start()
	defer s.Stop(time.Second)
	c := dial(t, "127.0.0.1:"+itoa(port))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	_, err := c.UnaryUnary(ctx, &pb.TestRequest{})
	if courier.CodeOf(err) != courier.Canceled {
		t.Fatalf("client: %v", err)
	}
	select {
	case err := <-seen:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler saw %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the handler's ctx was not cancelled")
	}
}

type cancelService struct{ seen chan error }

func (c *cancelService) UnaryUnary(ctx context.Context, req *pb.TestRequest) (*pb.TestResponse, error) {
	select {
	case <-ctx.Done():
		c.seen <- ctx.Err()
	case <-time.After(5 * time.Second):
		c.seen <- nil
	}
	return &pb.TestResponse{}, nil
}

func TestConcurrentCalls(t *testing.T) {
	_, target := startGoServer(t, nil)
	c := dial(t, target)
	ctx := timeout(t, 20*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "c"})
				if err != nil || r.S != "c" {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Calls taken in one batch with slow handlers among them: the rest of the
// batch goes to idle workers, and every call gets its own answer, replies
// and errors (status and app errors) mixed in the same batches.
func TestSlowHandlersInBatches(t *testing.T) {
	_, target := startGoServer(t, nil, courier.MaxConcurrency(2))
	c := dial(t, target)
	ctx := timeout(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				s := strconv.Itoa(g*1000 + i)
				req := &pb.TestRequest{S: s}
				switch i % 10 {
				case 3:
					req.SleepMs = 5 // longer than a batch may run
				case 5:
					req.AppError = int32(pb.TestError_TEST_ERROR_GONE)
					req.FailMessage = "gone " + s
				case 7:
					req.FailCode = int32(courier.NotFound)
					req.FailMessage = "missing " + s
				}
				r, err := c.UnaryUnary(ctx, req)
				switch i % 10 {
				case 5:
					if v, ok := pb.TestErrorOf(err); !ok || v != pb.TestError_TEST_ERROR_GONE || courier.StatusOf(err).Message() != "gone "+s {
						errs <- errors.New("call " + s + ": want app error GONE, got " + errString(err))
						return
					}
				case 7:
					if st := courier.StatusOf(err); st.Code() != courier.NotFound || st.Message() != "missing "+s {
						errs <- errors.New("call " + s + ": want NOT_FOUND, got " + errString(err))
						return
					}
				default:
					if err != nil || r.S != s {
						errs <- errors.New("call " + s + ": got " + errString(err))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// A streaming handler that polls ctx.Err() between sends (past the polls
// that ask the core, so the context watches it) sees the client's cancel.
func TestStreamingHandlerPollsErr(t *testing.T) {
	seen := make(chan error, 1)
	s := courier.NewServer(courier.IOThreads(1))
	err := courier.HandleServerStreaming(s, pb.Test_UnaryStream_Method,
		func(ctx context.Context, req *pb.TestRequest, st *courier.ServerStream[pb.TestResponse]) error {
			give := time.Now().Add(10 * time.Second)
			for time.Now().Before(give) {
				if err := ctx.Err(); err != nil {
					seen <- err
					return nil
				}
				if st.Send(&pb.TestResponse{S: req.S}) != nil {
					time.Sleep(time.Millisecond) // the call is over: Err must say so soon
				}
			}
			seen <- nil
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, "127.0.0.1:"+itoa(listenAndStart(t, s)))
	ctx, cancel := context.WithCancel(timeout(t, 20*time.Second))
	st, err := c.UnaryStream(ctx, &pb.TestRequest{S: "p"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-seen; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's ctx.Err() after the client cancelled: %v", err)
	}
}
