package testpeer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	courier "github.com/courier-rpc/courier/go-cgo"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

// Cases is the interop matrix's case list for Go clients, in order (the same
// names as the Rust, Python and Java runners).
var Cases = []string{"unary", "server_streaming", "client_streaming", "bidi_streaming", "deadline_exceeded",
	"deadline_propagated", "status_codes", "app_error", "metadata", "large_message"}

// Large is large_message's payload size.
const Large = 3 * 1024 * 1024

// CaseResult is one JSON line of RunCases.
type CaseResult struct {
	Case  string `json:"case"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Ms    int64  `json:"ms"`
}

// Client is a Courier Go or a grpc-go client, seen the same way by the cases.
type Client interface {
	// Unary calls UnaryUnary: the response, reply headers and trailers (the
	// trailers of a failed call too, where the client gives them).
	Unary(ctx context.Context, req *pb.TestRequest, md ...string) (*pb.TestResponse, map[string][]string, map[string][]string, error)
	// Stream starts a streaming call of a method of courier.test.Test.
	Stream(ctx context.Context, method string, md ...string) (Stream, error)
	// AppError is the app error a failed call carries ("enum:value"), as the client sees it.
	AppError(err error, trailer map[string][]string) string
	Status(err error) (code int, message string)
}

// Stream is a streaming call in progress.
type Stream interface {
	Send(*pb.TestRequest) error
	CloseSend() error
	Recv() (*pb.TestResponse, error) // io.EOF at the end of an OK call
	Header() map[string][]string
	Trailer() map[string][]string
}

// RunCases runs the named cases (all when empty) and writes one JSON line per
// case to w; it returns how many failed.
func RunCases(c Client, names []string, w io.Writer) int {
	if len(names) == 0 {
		names = Cases
	}
	failed := 0
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, name := range names {
		f := caseFuncs[name]
		t0 := time.Now()
		var err error
		if f == nil {
			err = fmt.Errorf("unknown case %q", name)
		} else {
			err = f(c)
		}
		r := CaseResult{Case: name, OK: err == nil, Ms: time.Since(t0).Milliseconds()}
		if err != nil {
			failed++
			r.Error = err.Error()
		}
		enc.Encode(r)
	}
	return failed
}

var caseFuncs = map[string]func(Client) error{
	"unary": caseUnary, "server_streaming": caseServerStreaming, "client_streaming": caseClientStreaming,
	"bidi_streaming": caseBidiStreaming, "deadline_exceeded": caseDeadlineExceeded,
	"deadline_propagated": caseDeadlinePropagated, "status_codes": caseStatusCodes, "app_error": caseAppError,
	"metadata": caseMetadata, "large_message": caseLargeMessage,
}

// ---------------------------------------------------------------- helpers

func check(what string, got, want any) error {
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("%s: expected %#v, got %#v", what, want, got)
	}
	return nil
}

func ctxFor(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func expectStatus(c Client, what string, err error, code int) (string, error) {
	if err == nil {
		return "", fmt.Errorf("%s: expected status %d, got success", what, code)
	}
	got, msg := c.Status(err)
	if got != code {
		return "", fmt.Errorf("%s: expected status %d, got %d %q", what, code, got, msg)
	}
	return msg, nil
}

// collect sends reqs, half-closes and reads to the end.
func collect(c Client, ctx context.Context, method string, reqs []*pb.TestRequest, md ...string) ([]*pb.TestResponse, Stream, error) {
	st, err := c.Stream(ctx, method, md...)
	if err != nil {
		return nil, nil, err
	}
	go func() {
		for _, r := range reqs {
			if st.Send(r) != nil {
				break
			}
		}
		st.CloseSend()
	}()
	var out []*pb.TestResponse
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return out, st, nil
		}
		if err != nil {
			return out, st, err
		}
		out = append(out, m)
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 % 251)
	}
	return b
}

func first(md map[string][]string, k string) any {
	if vs := md[k]; len(vs) > 0 {
		return vs[0]
	}
	return nil
}

// ---------------------------------------------------------------- cases

func caseUnary(c Client) error {
	ctx, cancel := ctxFor(10 * time.Second)
	defer cancel()
	payload := pattern(256)
	r, _, _, err := c.Unary(ctx, &pb.TestRequest{S: "hello from go", Payload: payload}, "x-request-id", "go-rid-1")
	if err != nil {
		return fmt.Errorf("UnaryUnary: %v", err)
	}
	if err := check("UnaryUnary s/index/request_id", []any{r.S, r.Index, r.RequestId}, []any{"hello from go", int32(0), "go-rid-1"}); err != nil {
		return err
	}
	if !bytes.Equal(r.Payload, payload) {
		return fmt.Errorf("UnaryUnary payload differs: %d bytes", len(r.Payload))
	}
	r, _, _, err = c.Unary(ctx, &pb.TestRequest{S: "no id"})
	if err != nil {
		return fmt.Errorf("UnaryUnary without x-request-id: %v", err)
	}
	if r.RequestId == "" {
		return errors.New("UnaryUnary: the server made no request id when none was sent")
	}
	return nil
}

func indexes(ms []*pb.TestResponse) []int32 {
	out := []int32{}
	for _, m := range ms {
		out = append(out, m.Index)
	}
	return out
}

func strs(ms []*pb.TestResponse, f func(*pb.TestResponse) string) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, f(m))
	}
	return out
}

func caseServerStreaming(c Client) error {
	ctx, cancel := ctxFor(10 * time.Second)
	defer cancel()
	ms, _, err := collect(c, ctx, "UnaryStream", []*pb.TestRequest{{S: "tick", Count: 5}})
	if err != nil {
		return fmt.Errorf("UnaryStream count=5: %v", err)
	}
	if err := check("UnaryStream count=5 indexes", indexes(ms), []int32{0, 1, 2, 3, 4}); err != nil {
		return err
	}
	ms, _, err = collect(c, ctx, "UnaryStream", []*pb.TestRequest{{Count: 0}})
	if err != nil || len(ms) != 0 {
		return fmt.Errorf("UnaryStream count=0: expected no messages and OK, got %d, %v", len(ms), err)
	}
	ms, _, err = collect(c, ctx, "UnaryStream", []*pb.TestRequest{{Count: 2, FailCode: 10, FailMessage: "stop"}})
	if err := check("UnaryStream messages before the failure", len(ms), 2); err != nil {
		return err
	}
	msg, err := expectStatus(c, "UnaryStream count=2 fail_code=ABORTED", err, 10)
	if err != nil {
		return err
	}
	return check("UnaryStream failure message", msg, "stop")
}

func caseClientStreaming(c Client) error {
	ctx, cancel := ctxFor(10 * time.Second)
	defer cancel()
	ms, _, err := collect(c, ctx, "StreamUnary", []*pb.TestRequest{{S: "al", Payload: []byte{1}}, {S: "pha", Payload: []byte{2, 3}}, {S: "bet"}})
	if err != nil || len(ms) != 1 {
		return fmt.Errorf("StreamUnary: expected one response, got %d, %v", len(ms), err)
	}
	if err := check("StreamUnary s/payload", []any{ms[0].S, ms[0].Payload}, []any{"alphabet", []byte{1, 2, 3}}); err != nil {
		return err
	}
	ms, _, err = collect(c, ctx, "StreamUnary", nil)
	if err != nil || len(ms) != 1 || ms[0].S != "" {
		return fmt.Errorf("StreamUnary of no messages: expected one empty response, got %v, %v", ms, err)
	}
	_, _, err = collect(c, ctx, "StreamUnary", []*pb.TestRequest{{S: "a"}, {S: "b", FailCode: 3, FailMessage: "bad part"}})
	msg, err := expectStatus(c, "StreamUnary with a failing message", err, 3)
	if err != nil {
		return err
	}
	return check("StreamUnary failure message", msg, "bad part")
}

func caseBidiStreaming(c Client) error {
	ctx, cancel := ctxFor(10 * time.Second)
	defer cancel()
	// Ping-pong: each request goes out only after the previous answer came.
	st, err := c.Stream(ctx, "StreamStream")
	if err != nil {
		return fmt.Errorf("StreamStream: %v", err)
	}
	for i := int32(0); i < 4; i++ {
		if err := st.Send(&pb.TestRequest{S: fmt.Sprintf("ping %d", i), Payload: []byte{byte(i)}}); err != nil {
			return fmt.Errorf("StreamStream send %d: %v", i, err)
		}
		m, err := st.Recv()
		if err != nil {
			return fmt.Errorf("StreamStream answer to ping %d: %v", i, err)
		}
		if err := check(fmt.Sprintf("StreamStream answer %d", i), []any{m.S, m.Index}, []any{fmt.Sprintf("ping %d", i), i}); err != nil {
			return err
		}
	}
	st.CloseSend()
	if _, err := st.Recv(); err != io.EOF {
		return fmt.Errorf("StreamStream end after half-close: expected io.EOF, got %v", err)
	}
	ms, _, err := collect(c, ctx, "StreamStream", []*pb.TestRequest{{S: "one"}, {S: "two"}, {S: "three", FailCode: 10, FailMessage: "third fails"}, {S: "never answered"}})
	if err := check("StreamStream answers before the failure", strs(ms, func(m *pb.TestResponse) string { return m.S }), []string{"one", "two"}); err != nil {
		return err
	}
	msg, err := expectStatus(c, "StreamStream with a failing message", err, 10)
	if err != nil {
		return err
	}
	return check("StreamStream failure message", msg, "third fails")
}

func caseDeadlineExceeded(c Client) error {
	slow := &pb.TestRequest{S: "slow", SleepMs: 2000, Count: 1}
	ctx, cancel := ctxFor(100 * time.Millisecond)
	defer cancel()
	_, _, _, err := c.Unary(ctx, slow)
	if _, err := expectStatus(c, "UnaryUnary sleep 2000 ms with a 100 ms deadline", err, 4); err != nil {
		return err
	}
	ctx2, cancel2 := ctxFor(100 * time.Millisecond)
	defer cancel2()
	_, _, err = collect(c, ctx2, "UnaryStream", []*pb.TestRequest{slow})
	if _, err := expectStatus(c, "UnaryStream sleep 2000 ms with a 100 ms deadline", err, 4); err != nil {
		return err
	}
	ctx3, cancel3 := ctxFor(10 * time.Second)
	defer cancel3()
	r, _, _, err := c.Unary(ctx3, &pb.TestRequest{S: "after"})
	if err != nil || r.S != "after" {
		return fmt.Errorf("UnaryUnary after the deadline cases: %v, %v", r, err)
	}
	return nil
}

func caseDeadlinePropagated(c Client) error {
	ctx, cancel := ctxFor(3 * time.Second)
	defer cancel()
	r, _, _, err := c.Unary(ctx, &pb.TestRequest{S: "budget", ReportDeadline: true})
	if err != nil {
		return fmt.Errorf("UnaryUnary report_deadline: %v", err)
	}
	if r.DeadlineMs < 2000 || r.DeadlineMs > 3010 {
		return fmt.Errorf("server-side remaining deadline with a 3 s client deadline: expected 2000..3010 ms, got %d", r.DeadlineMs)
	}
	return nil
}

// StatusMessage is status_codes' message for a code: `%`, an escape-looking
// `%41`, non-ASCII and a newline.
func StatusMessage(name string) string {
	return name + ": 100% sure %41 naïve café ✓ 日本\nsecond line"
}

func caseStatusCodes(c Client) error {
	ctx, cancel := ctxFor(10 * time.Second)
	defer cancel()
	for code := courier.Code(1); code <= 16; code++ {
		msg := StatusMessage(code.String())
		what := "UnaryUnary fail_code=" + code.String()
		_, _, _, err := c.Unary(ctx, &pb.TestRequest{S: "fail", FailCode: int32(code), FailMessage: msg})
		got, err := expectStatus(c, what, err, int(code))
		if err != nil {
			return err
		}
		if err := check(what+" message", got, msg); err != nil {
			return err
		}
	}
	return nil
}

func caseAppError(c Client) error {
	ctx, cancel := ctxFor(10 * time.Second)
	defer cancel()
	for _, row := range []struct {
		value     int32
		msg, want string
	}{{2, "it is gone for good", "it is gone for good"}, {1, "", "app error 1"}} {
		what := fmt.Sprintf("UnaryUnary app_error=%d", row.value)
		_, _, trailer, err := c.Unary(ctx, &pb.TestRequest{S: "app", AppError: row.value, FailMessage: row.msg})
		got, serr := expectStatus(c, what, err, 9)
		if serr != nil {
			return serr
		}
		if err := check(what+" message", got, row.want); err != nil {
			return err
		}
		if err := check(what+" app error", c.AppError(err, trailer), fmt.Sprintf("courier.test.TestError:%d", row.value)); err != nil {
			return err
		}
	}
	return nil
}

func caseMetadata(c Client) error {
	ctx, cancel := ctxFor(10 * time.Second)
	defer cancel()
	md := []string{"x-test-echo", "echo me: 42", "x-request-id", "interop-request-1"}
	r, header, trailer, err := c.Unary(ctx, &pb.TestRequest{S: "meta", EchoHeader: "x-test-echo"}, md...)
	if err != nil {
		return fmt.Errorf("UnaryUnary echo_header: %v", err)
	}
	if err := check("UnaryUnary metadata_value/request_id/x-echo-header/x-echo-trailer",
		[]any{r.MetadataValue, r.RequestId, first(header, "x-echo-header"), first(trailer, "x-echo-trailer")},
		[]any{"echo me: 42", "interop-request-1", "echo me: 42", "echo me: 42"}); err != nil {
		return err
	}
	r, header, _, err = c.Unary(ctx, &pb.TestRequest{S: "meta", EchoHeader: "x-not-sent"})
	if err != nil {
		return fmt.Errorf("UnaryUnary echo_header (absent): %v", err)
	}
	if err := check("absent header metadata_value/reply header", []any{r.MetadataValue, first(header, "x-echo-header")}, []any{"", nil}); err != nil {
		return err
	}
	ms, st, err := collect(c, ctx, "UnaryStream", []*pb.TestRequest{{S: "meta stream", EchoHeader: "x-test-echo", Count: 2}}, md...)
	if err != nil {
		return fmt.Errorf("UnaryStream echo_header: %v", err)
	}
	return check("UnaryStream metadata_value/x-echo-header/x-echo-trailer",
		[]any{strs(ms, func(m *pb.TestResponse) string { return m.MetadataValue }), first(st.Header(), "x-echo-header"), first(st.Trailer(), "x-echo-trailer")},
		[]any{[]string{"echo me: 42", "echo me: 42"}, "echo me: 42", "echo me: 42"})
}

func caseLargeMessage(c Client) error {
	ctx, cancel := ctxFor(20 * time.Second)
	defer cancel()
	payload := pattern(Large)
	r, _, _, err := c.Unary(ctx, &pb.TestRequest{S: "large", Payload: payload})
	if err != nil {
		return fmt.Errorf("UnaryUnary 3 MiB: %v", err)
	}
	if !bytes.Equal(r.Payload, payload) {
		return fmt.Errorf("UnaryUnary 3 MiB payload differs: %d bytes", len(r.Payload))
	}
	req := &pb.TestRequest{S: "large", Payload: payload}
	ms, _, err := collect(c, ctx, "StreamStream", []*pb.TestRequest{req, req})
	if err != nil || len(ms) != 2 {
		return fmt.Errorf("StreamStream 2 x 3 MiB: expected 2 answers, got %d, %v", len(ms), err)
	}
	for _, m := range ms {
		if !bytes.Equal(m.Payload, payload) {
			return fmt.Errorf("StreamStream 3 MiB payload differs: %d bytes", len(m.Payload))
		}
	}
	return nil
}

// ---------------------------------------------------------------- Courier Go client

// CourierClient is the matrix's Client on Courier's Go binding.
type CourierClient struct{ CC *courier.ClientConn }

var courierMethods = map[string]*courier.MethodDesc{
	"UnaryStream": pb.Test_UnaryStream_Method, "StreamUnary": pb.Test_StreamUnary_Method, "StreamStream": pb.Test_StreamStream_Method,
}

func (c CourierClient) Unary(ctx context.Context, req *pb.TestRequest, md ...string) (*pb.TestResponse, map[string][]string, map[string][]string, error) {
	var header, trailer courier.MD
	resp := new(pb.TestResponse)
	err := c.CC.Invoke(ctx, pb.Test_UnaryUnary_Method, req, resp, courier.WithMetadata(courier.Pairs(md...)), courier.Header(&header), courier.Trailer(&trailer))
	return resp, header, trailer, err
}

type courierStream struct{ s *courier.ClientStream }

func (s courierStream) Send(r *pb.TestRequest) error { return s.s.SendMsg(r) }
func (s courierStream) CloseSend() error             { return s.s.CloseSend() }
func (s courierStream) Recv() (*pb.TestResponse, error) {
	m := new(pb.TestResponse)
	if err := s.s.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}
func (s courierStream) Header() map[string][]string  { return s.s.Header() }
func (s courierStream) Trailer() map[string][]string { return s.s.Trailer() }

func (c CourierClient) Stream(ctx context.Context, method string, md ...string) (Stream, error) {
	s, err := c.CC.NewStream(ctx, courierMethods[method], courier.WithMetadata(courier.Pairs(md...)))
	if err != nil {
		return nil, err
	}
	return courierStream{s}, nil
}

// AppError: Courier's client gives the app error as part of the status.
func (CourierClient) AppError(err error, _ map[string][]string) string {
	v, ok := pb.TestErrorOf(err)
	if !ok {
		return ""
	}
	return fmt.Sprintf("courier.test.TestError:%d", v)
}

func (CourierClient) Status(err error) (int, string) {
	st := courier.StatusOf(err)
	return int(st.Code()), st.Message()
}

// ---------------------------------------------------------------- grpc-go client

// GrpcClient is the matrix's Client on stock grpc-go.
type GrpcClient struct{ CC *grpc.ClientConn }

func outgoing(ctx context.Context, md []string) context.Context {
	if len(md) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, md...)
}

func (c GrpcClient) Unary(ctx context.Context, req *pb.TestRequest, md ...string) (*pb.TestResponse, map[string][]string, map[string][]string, error) {
	var header, trailer metadata.MD
	resp := new(pb.TestResponse)
	err := c.CC.Invoke(outgoing(ctx, md), "/courier.test.Test/UnaryUnary", req, resp, grpc.Header(&header), grpc.Trailer(&trailer))
	return resp, header, trailer, err
}

type grpcStream struct{ s grpc.ClientStream }

func (s grpcStream) Send(r *pb.TestRequest) error { return s.s.SendMsg(r) }
func (s grpcStream) CloseSend() error             { return s.s.CloseSend() }
func (s grpcStream) Recv() (*pb.TestResponse, error) {
	m := new(pb.TestResponse)
	if err := s.s.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}
func (s grpcStream) Header() map[string][]string {
	h, _ := s.s.Header()
	return h
}
func (s grpcStream) Trailer() map[string][]string { return s.s.Trailer() }

func (c GrpcClient) Stream(ctx context.Context, method string, md ...string) (Stream, error) {
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	s, err := c.CC.NewStream(outgoing(ctx, md), desc, "/courier.test.Test/"+method)
	if err != nil {
		return nil, err
	}
	return grpcStream{s}, nil
}

// AppError: a stock client has no notion of app errors; it sees the trailer.
func (GrpcClient) AppError(_ error, trailer map[string][]string) string {
	if v, ok := first(trailer, "courier-app-error").(string); ok {
		return v
	}
	return ""
}

func (GrpcClient) Status(err error) (int, string) {
	st := status.Convert(err)
	return int(st.Code()), st.Message()
}
