// Command democlient calls a courier.test.Test server from Go (the Go part of
// `make demo`): every call kind, a deadline, an app error and metadata.
//
//	go run ./examples/democlient -target 127.0.0.1:50051 \
//	    [-tls-ca ca.pem -tls-cert cert.pem -tls-key key.pem -server-identity spiffe://example.org/server]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	courier "github.com/courier-rpc/courier/go-cgo"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "host:port of a courier.test.Test server")
	ca := flag.String("tls-ca", "", "mutual TLS: the CA (PEM) the server's certificate chains to")
	cert := flag.String("tls-cert", "", "mutual TLS: this client's certificate (PEM)")
	key := flag.String("tls-key", "", "mutual TLS: this client's key (PEM)")
	serverID := flag.String("server-identity", "", "mutual TLS: the server's SPIFFE ID (or trust domain)")
	flag.Parse()
	var opts []courier.DialOption
	if *ca != "" {
		tls, err := courier.ClientTLSFromFiles(*ca, *serverID, courier.ClientCert(*cert, *key))
		if err != nil {
			fmt.Fprintln(os.Stderr, "democlient:", err)
			os.Exit(1)
		}
		opts = append(opts, courier.WithClientTLS(tls))
	}
	if err := run(*target, opts); err != nil {
		fmt.Fprintln(os.Stderr, "democlient:", err)
		os.Exit(1)
	}
}

func run(target string, opts []courier.DialOption) error {
	cc, err := courier.Dial(target, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	c := pb.NewTestClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "hello from Go", ReportDeadline: true})
	if err != nil {
		return err
	}
	fmt.Printf("  UnaryUnary    s=%q -> s=%q; the server saw %d ms of a 5 s deadline, request id %s\n", "hello from Go", r.S, r.DeadlineMs, r.RequestId)

	ss, err := c.UnaryStream(ctx, &pb.TestRequest{Count: 3})
	if err != nil {
		return err
	}
	var idx []int32
	for {
		m, err := ss.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		idx = append(idx, m.Index)
	}
	fmt.Printf("  UnaryStream   count=3 -> indexes %v\n", idx)

	cs, err := c.StreamUnary(ctx)
	if err != nil {
		return err
	}
	for _, s := range []string{"a", "b", "c"} {
		if err := cs.Send(&pb.TestRequest{S: s}); err != nil {
			return err
		}
	}
	got, err := cs.CloseAndRecv()
	if err != nil {
		return err
	}
	fmt.Printf("  StreamUnary   'a','b','c' -> %q\n", got.S)

	bs, err := c.StreamStream(ctx)
	if err != nil {
		return err
	}
	var echoed []string
	for _, s := range []string{"x", "y", "z"} {
		if err := bs.Send(&pb.TestRequest{S: s}); err != nil {
			return err
		}
		m, err := bs.Recv()
		if err != nil {
			return err
		}
		echoed = append(echoed, m.S)
	}
	bs.CloseSend()
	if _, err := bs.Recv(); err != io.EOF {
		return fmt.Errorf("bidi end: %v", err)
	}
	fmt.Printf("  StreamStream  'x','y','z' -> %s\n", strings.Join(echoed, ","))

	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	t0 := time.Now()
	_, err = c.UnaryUnary(short, &pb.TestRequest{SleepMs: 5000})
	if courier.CodeOf(err) != courier.DeadlineExceeded {
		return fmt.Errorf("the 200 ms deadline was not enforced: %v", err)
	}
	fmt.Printf("  deadline      200 ms vs a 5 s handler -> %s after %d ms\n", courier.CodeOf(err), time.Since(t0).Milliseconds())

	_, err = c.UnaryUnary(ctx, &pb.TestRequest{AppError: int32(pb.TestError_TEST_ERROR_GONE)})
	v, ok := pb.TestErrorOf(err)
	if !ok {
		return fmt.Errorf("the app error was not received: %v", err)
	}
	fmt.Printf("  app error     -> %s, %s\n", courier.CodeOf(err), v)

	var header courier.MD
	r, err = c.UnaryUnary(ctx, &pb.TestRequest{EchoHeader: "x-demo"}, courier.WithMetadata(courier.Pairs("x-demo", "from-go")), courier.Header(&header))
	if err != nil {
		return err
	}
	fmt.Printf("  metadata      x-demo=from-go -> metadata_value=%q, x-echo-header=%v\n", r.MetadataValue, header.Get("x-echo-header"))
	return nil
}
