// Command server serves courier.test.Test/UnaryUnary with one Go handler, on
// Courier (-impl courier: the Rust core, one I/O thread, Go handlers pulled in
// batches) or on grpc-go (-impl grpc), for the benchmark harness (bench/harness).
// It also serves courier.test.Test/UnaryStream, which sends
// TestResponse{payload: request's payload} again and again until the client
// cancels (the streaming throughput benchmark). -tls DIR serves mutual TLS with
// the files `courier-bench-tls pki` writes (DIR/server-ecdsa, DIR/ca). It
// prints "PORT <n>" and serves until killed.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	courier "github.com/courier-rpc/courier/go-cgo"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

// echo is the handler both servers run: decode, build the reply, encode.
func echo(_ context.Context, req *pb.TestRequest) (*pb.TestResponse, error) {
	return &pb.TestResponse{S: req.S, Payload: req.Payload}, nil
}

type svc struct{}

func (svc) UnaryUnary(ctx context.Context, req *pb.TestRequest) (*pb.TestResponse, error) {
	return echo(ctx, req)
}

// repeat is the streaming handler: the same reply until the call ends.
func repeat(ctx context.Context, req *pb.TestRequest, send func(*pb.TestResponse) error) error {
	resp := &pb.TestResponse{Payload: req.Payload}
	for ctx.Err() == nil {
		if err := send(resp); err != nil {
			return nil
		}
	}
	return nil
}

func main() {
	impl := flag.String("impl", "courier", "courier or grpc")
	port := flag.Int("port", 0, "port (0: any)")
	workers := flag.Int("workers", 4, "courier: handler workers (MaxConcurrency)")
	check := flag.String("check", "", "check the server at this target with a grpc-go client, then exit")
	pki := flag.String("tls", "", "serve mutual TLS with the certificates in this directory")
	flag.Parse()
	if *check != "" {
		if err := checkServer(*check); err != nil {
			fail(err)
		}
		fmt.Println("ok")
		return
	}
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	switch *impl {
	case "courier":
		opts := []courier.ServerOption{courier.IOThreads(1), courier.MaxConcurrency(*workers)}
		if *pki != "" {
			t, err := courier.ServerTLSFromFiles(filepath.Join(*pki, "server-ecdsa/cert.pem"), filepath.Join(*pki, "server-ecdsa/key.pem"),
				filepath.Join(*pki, "ca/ca.pem"), courier.ReloadInterval(-1))
			if err != nil {
				fail(err)
			}
			opts = append(opts, courier.WithTLS(t))
		}
		s := courier.NewServer(opts...)
		if err := courier.HandleUnary(s, pb.Test_UnaryUnary_Method, echo); err != nil {
			fail(err)
		}
		err := courier.HandleServerStreaming(s, pb.Test_UnaryStream_Method,
			func(ctx context.Context, req *pb.TestRequest, st *courier.ServerStream[pb.TestResponse]) error {
				return repeat(ctx, req, st.Send)
			})
		if err != nil {
			fail(err)
		}
		p, err := s.Listen(addr)
		if err != nil {
			fail(err)
		}
		if err := s.Start(); err != nil {
			fail(err)
		}
		fmt.Printf("PORT %d\n", p)
		wait()
		s.Stop(0)
	case "grpc":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fail(err)
		}
		var gopts []grpc.ServerOption
		if *pki != "" {
			gopts = append(gopts, grpc.Creds(credentials.NewTLS(serverTLS(*pki))))
		}
		s := grpc.NewServer(gopts...)
		s.RegisterService(&grpc.ServiceDesc{
			ServiceName: "courier.test.Test",
			HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{MethodName: "UnaryUnary", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				req := new(pb.TestRequest)
				if err := dec(req); err != nil {
					return nil, err
				}
				return echo(ctx, req)
			}}},
			Streams: []grpc.StreamDesc{{StreamName: "UnaryStream", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
				req := new(pb.TestRequest)
				if err := ss.RecvMsg(req); err != nil {
					return err
				}
				return repeat(ss.Context(), req, func(m *pb.TestResponse) error { return ss.SendMsg(m) })
			}}},
		}, svc{})
		fmt.Printf("PORT %d\n", l.Addr().(*net.TCPAddr).Port)
		go s.Serve(l)
		wait()
		s.Stop()
	default:
		fail(fmt.Errorf("unknown -impl %q", *impl))
	}
}

// checkServer calls UnaryUnary with a stock grpc-go client and checks the answer.
func checkServer(target string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp := new(pb.TestResponse)
	if err := conn.Invoke(ctx, "/courier.test.Test/UnaryUnary", &pb.TestRequest{S: "hello, world!"}, resp); err != nil {
		return err
	}
	if resp.S != "hello, world!" {
		return fmt.Errorf("wrong answer %q", resp.S)
	}
	return nil
}

// serverTLS is grpc-go's usual mutual TLS: the server's ECDSA certificate,
// client certificates required and checked against the CA.
func serverTLS(dir string) *tls.Config {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server-ecdsa/cert.pem"), filepath.Join(dir, "server-ecdsa/key.pem"))
	if err != nil {
		fail(err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca/ca.pem"))
	if err != nil {
		fail(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		fail(fmt.Errorf("no CA certificate in %s", dir))
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

func wait() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "server:", err)
	os.Exit(1)
}
