package courier_test

// Cross-language tests: the Go binding against Courier's Rust peer
// (tests/peer), Courier's Python binding, and stock grpc-go, in both
// directions. Peers that are not built are skipped, unless
// COURIER_REQUIRE_PEERS is set (make test-go sets it): then they fail.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	courier "github.com/courier-rpc/courier/go-cgo"
	"github.com/courier-rpc/courier/go-cgo/internal/testpeer"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

func cacheDir() string {
	if c := os.Getenv("CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "courier")
}

func need(t *testing.T, path, how string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("COURIER_REQUIRE_PEERS") != "" {
			t.Fatalf("%s is missing: %s", path, how)
		}
		t.Skipf("%s is missing (%s)", path, how)
	}
	return path
}

func peerBinary(t *testing.T, name string) string {
	dir := os.Getenv("CARGO_TARGET_DIR")
	if dir == "" {
		dir = filepath.Join(cacheDir(), "target")
	}
	return need(t, filepath.Join(dir, "debug", name), "cargo build -p courier-testpeer")
}

func python(t *testing.T) string {
	venv := os.Getenv("VENV")
	if venv == "" {
		venv = filepath.Join(cacheDir(), "venv")
	}
	return need(t, filepath.Join(venv, "bin", "python"), "make py-dev")
}

// peerProcess runs a server that prints "PORT <n>" and stops when stdin closes.
func peerProcess(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-lines:
		if !ok || !strings.HasPrefix(l, "PORT ") {
			t.Fatalf("%s: expected a PORT line, got %q", name, l)
		}
		return "127.0.0.1:" + strings.TrimPrefix(l, "PORT ")
	case <-time.After(60 * time.Second):
		t.Fatalf("%s printed no PORT line", name)
	}
	return ""
}

func pythonServer(t *testing.T, args ...string) string {
	py := python(t)
	return peerProcess(t, py, append([]string{"testdata/pyserver.py"}, args...)...)
}

// ---------------------------------------------------------------- Go client cases

// goClientCases runs the Go client against any server of courier.test.Test.
func goClientCases(t *testing.T, target string) {
	c := dial(t, target)
	ctx := timeout(t, 10*time.Second)
	t.Run("unary", func(t *testing.T) {
		r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "hi", Payload: []byte("p"), ReportDeadline: true},
			courier.WithMetadata(courier.Pairs("x-request-id", "go-rid")))
		if err != nil {
			t.Fatal(err)
		}
		if r.S != "hi" || string(r.Payload) != "p" || r.RequestId != "go-rid" || r.DeadlineMs <= 0 || r.DeadlineMs > 10000 {
			t.Fatalf("reply %v", r)
		}
	})
	t.Run("server_streaming", func(t *testing.T) {
		s, err := c.UnaryStream(ctx, &pb.TestRequest{S: "s", Count: 3})
		if err != nil {
			t.Fatal(err)
		}
		var idx []int32
		for {
			m, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			idx = append(idx, m.Index)
		}
		if fmt.Sprint(idx) != "[0 1 2]" {
			t.Fatalf("indexes %v", idx)
		}
	})
	t.Run("client_streaming", func(t *testing.T) {
		s, err := c.StreamUnary(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []string{"a", "b", "c"} {
			if err := s.Send(&pb.TestRequest{S: x}); err != nil {
				t.Fatal(err)
			}
		}
		r, err := s.CloseAndRecv()
		if err != nil || r.S != "abc" {
			t.Fatalf("reply %v, %v", r, err)
		}
	})
	t.Run("bidi_streaming", func(t *testing.T) {
		s, err := c.StreamStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range []string{"x", "y"} {
			if err := s.Send(&pb.TestRequest{S: x}); err != nil {
				t.Fatal(err)
			}
			m, err := s.Recv()
			if err != nil || m.S != x || m.Index != int32(i) {
				t.Fatalf("reply %v, %v", m, err)
			}
		}
		s.CloseSend()
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("end: %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		_, err := c.UnaryUnary(short, &pb.TestRequest{SleepMs: 3000})
		if courier.CodeOf(err) != courier.DeadlineExceeded || time.Since(t0) > 2*time.Second {
			t.Fatalf("got %v after %v", err, time.Since(t0))
		}
	})
	t.Run("status", func(t *testing.T) {
		_, err := c.UnaryUnary(ctx, &pb.TestRequest{FailCode: int32(courier.NotFound), FailMessage: "nope"})
		if st := courier.StatusOf(err); st.Code() != courier.NotFound || st.Message() != "nope" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("app_error", func(t *testing.T) {
		_, err := c.UnaryUnary(ctx, &pb.TestRequest{AppError: 1})
		v, ok := pb.TestErrorOf(err)
		if !ok || v != pb.TestError_TEST_ERROR_NOT_READY || courier.CodeOf(err) != courier.FailedPrecondition {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("metadata", func(t *testing.T) {
		var header, trailer courier.MD
		r, err := c.UnaryUnary(ctx, &pb.TestRequest{EchoHeader: "x-go"}, courier.WithMetadata(courier.Pairs("x-go", "v1")),
			courier.Header(&header), courier.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if r.MetadataValue != "v1" || fmt.Sprint(header.Get("x-echo-header")) != "[v1]" || fmt.Sprint(trailer.Get("x-echo-trailer")) != "[v1]" {
			t.Fatalf("reply %v header %v trailer %v", r, header, trailer)
		}
	})
}

func TestGoClientToGoServer(t *testing.T) {
	_, target := startGoServer(t, nil)
	goClientCases(t, target)
}

func TestGoClientToRustServer(t *testing.T) {
	target := peerProcess(t, peerBinary(t, "courier-test-server"), "--listen", "127.0.0.1:0", "--workers", "1")
	goClientCases(t, target)
}

func TestGoClientToPythonServer(t *testing.T) {
	goClientCases(t, pythonServer(t))
}

func TestGoClientToGrpcGoServer(t *testing.T) {
	goClientCases(t, startGrpcGoServer(t))
}

// ---------------------------------------------------------------- Go server, other clients

func TestRustClientToGoServer(t *testing.T) {
	bin := peerBinary(t, "courier-test-client")
	_, target := startGoServer(t, nil)
	out, err := exec.Command(bin, "--target", target, "--case", "all", "--courier-server").CombinedOutput()
	if err != nil {
		t.Fatalf("courier-test-client: %v\n%s", err, out)
	}
}

func TestPythonClientToGoServer(t *testing.T) {
	py := python(t)
	_, target := startGoServer(t, nil)
	out, err := exec.Command(py, "testdata/pyclient.py", target).CombinedOutput()
	if err != nil {
		t.Fatalf("pyclient: %v\n%s", err, out)
	}
}

func TestGrpcGoClientToGoServer(t *testing.T) {
	_, target := startGoServer(t, nil)
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := timeout(t, 10*time.Second)

	var header, trailer metadata.MD
	resp := new(pb.TestResponse)
	mctx := metadata.AppendToOutgoingContext(ctx, "x-grpc", "from-grpc-go", "x-request-id", "grpc-rid")
	err = conn.Invoke(mctx, "/courier.test.Test/UnaryUnary", &pb.TestRequest{S: "g", EchoHeader: "x-grpc", ReportDeadline: true}, resp,
		grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	if resp.S != "g" || resp.MetadataValue != "from-grpc-go" || resp.RequestId != "grpc-rid" || resp.DeadlineMs <= 0 || resp.DeadlineMs > 10000 {
		t.Fatalf("reply %v", resp)
	}
	if fmt.Sprint(header.Get("x-echo-header")) != "[from-grpc-go]" || fmt.Sprint(trailer.Get("x-echo-trailer")) != "[from-grpc-go]" {
		t.Fatalf("header %v trailer %v", header, trailer)
	}

	trailer = nil
	err = conn.Invoke(ctx, "/courier.test.Test/UnaryUnary", &pb.TestRequest{AppError: 2}, resp, grpc.Trailer(&trailer))
	if status.Code(err) != codes.FailedPrecondition || fmt.Sprint(trailer.Get("courier-app-error")) != "[courier.test.TestError:2]" {
		t.Fatalf("app error: %v, trailer %v", err, trailer)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := conn.Invoke(short, "/courier.test.Test/UnaryUnary", &pb.TestRequest{SleepMs: 3000}, resp); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", err)
	}

	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	st, err := conn.NewStream(ctx, desc, "/courier.test.Test/UnaryStream")
	if err != nil {
		t.Fatal(err)
	}
	st.SendMsg(&pb.TestRequest{Count: 3})
	st.CloseSend()
	n := 0
	for {
		m := new(pb.TestResponse)
		if err := st.RecvMsg(m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("server streaming: %d messages", n)
	}
	for _, path := range []string{"/courier.test.Test/StreamUnary", "/courier.test.Test/StreamStream"} {
		st, err := conn.NewStream(ctx, desc, path)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []string{"a", "b"} {
			if err := st.SendMsg(&pb.TestRequest{S: x}); err != nil {
				t.Fatal(err)
			}
		}
		st.CloseSend()
		var got []string
		for {
			m := new(pb.TestResponse)
			if err := st.RecvMsg(m); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			got = append(got, m.S)
		}
		want := map[string]string{"/courier.test.Test/StreamUnary": "[ab]", "/courier.test.Test/StreamStream": "[a b]"}[path]
		if fmt.Sprint(got) != want {
			t.Fatalf("%s: %v", path, got)
		}
	}
}

// ---------------------------------------------------------------- hops

// Go client -> Python server -> Go server: the deadline and request id travel.
func TestDeadlineAcrossGoPythonGo(t *testing.T) {
	_, leaf := startGoServer(t, nil)
	py := pythonServer(t, "--downstream", leaf)
	c := dial(t, py)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "hop"}, courier.WithMetadata(courier.Pairs("x-request-id", "hop-rid")))
	if err != nil {
		t.Fatal(err)
	}
	if r.S != "hop" || r.DeadlineMs <= 0 || r.DeadlineMs > 1500 || r.RequestId != "hop-rid" {
		t.Fatalf("reply %v: want the leaf to see < 1500 ms and request id hop-rid", r)
	}
}

// Go client -> Go server -> Python server -> Go server.
func TestDeadlineAcrossGoGoPythonGo(t *testing.T) {
	_, leaf := startGoServer(t, nil)
	py := pythonServer(t, "--downstream", leaf)
	cc, err := courier.Dial(py)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, mid := startGoServer(t, &testService{Downstream: pb.NewTestClient(cc)})
	c := dial(t, mid)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	// The middle Go server calls Python with s="down" (not a hop): the Python
	// server reports the deadline it saw.
	r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "hop"}, courier.WithMetadata(courier.Pairs("x-request-id", "rid-2")))
	if err != nil {
		t.Fatal(err)
	}
	if r.DeadlineMs <= 0 || r.DeadlineMs > 1500 || r.RequestId != "rid-2" {
		t.Fatalf("reply %v", r)
	}
}

// A downstream status a handler returns unchanged reaches its caller as UNKNOWN.
func TestDownstreamStatusBecomesUnknown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	cc, err := courier.Dial(dead, courier.WithConnectTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, mid := startGoServer(t, &testService{Downstream: pb.NewTestClient(cc)})
	_, err = dial(t, mid).UnaryUnary(timeout(t, 5*time.Second), &pb.TestRequest{S: "hop"})
	st := courier.StatusOf(err)
	if st.Code() != courier.Unknown || !strings.Contains(st.Message(), "downstream") {
		t.Fatalf("got %v", err)
	}
}

// ---------------------------------------------------------------- grpc-go server

func startGrpcGoServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := testpeer.ServeGrpcGo(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}
