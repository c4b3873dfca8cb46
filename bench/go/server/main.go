// Command server serves courier.test.Test/UnaryUnary with one Go handler, on
// Courier (-impl courier: the Rust core, one I/O thread, Go handlers pulled in
// batches) or on grpc-go (-impl grpc), for bench/go/run.sh. It prints
// "PORT <n>" and serves until killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
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

func main() {
	impl := flag.String("impl", "courier", "courier or grpc")
	port := flag.Int("port", 0, "port (0: any)")
	workers := flag.Int("workers", 4, "courier: handler workers (MaxConcurrency)")
	check := flag.String("check", "", "check the server at this target with a grpc-go client, then exit")
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
		s := courier.NewServer(courier.IOThreads(1), courier.MaxConcurrency(*workers))
		if err := courier.HandleUnary(s, pb.Test_UnaryUnary_Method, echo); err != nil {
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
		s := grpc.NewServer()
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

func wait() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "server:", err)
	os.Exit(1)
}
