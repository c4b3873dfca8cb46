// Command courier-go-testpeer is the Go peer of the interop matrix
// (tests/interop/test_matrix.py):
//
//	courier-go-testpeer server      [--listen HOST:PORT]  courier.test.Test on Courier's Go binding
//	courier-go-testpeer grpc-server [--listen HOST:PORT]  the same on stock grpc-go
//	courier-go-testpeer client      --target HOST:PORT [--case NAME]  the matrix's cases, Courier Go client
//	courier-go-testpeer grpc-client --target HOST:PORT [--case NAME]  the same with a stock grpc-go client
//
// Servers print `PORT <n>` once listening and stop when stdin reaches EOF.
// Clients print one JSON line per case and exit 1 if any failed.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	courier "github.com/courier-rpc/courier/go-cgo"
	"github.com/courier-rpc/courier/go-cgo/internal/testpeer"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

func main() {
	if len(os.Args) < 2 {
		usage("a mode is required")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
	target := fs.String("target", "", "server to call")
	only := fs.String("case", "all", "case to run: "+strings.Join(testpeer.Cases, ", ")+", or all")
	fs.Parse(os.Args[2:])
	switch mode {
	case "server":
		s := courier.NewServer(courier.IOThreads(1))
		if err := pb.RegisterTestServer(s, &testpeer.Service{}); err != nil {
			die(err)
		}
		port, err := s.Listen(*listen)
		if err != nil {
			die(err)
		}
		if err := s.Start(); err != nil {
			die(err)
		}
		serveUntilEOF(port)
		s.Stop(time.Second)
	case "grpc-server":
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			die(err)
		}
		s := testpeer.ServeGrpcGo(l)
		serveUntilEOF(l.Addr().(*net.TCPAddr).Port)
		s.Stop()
	case "client", "grpc-client":
		if *target == "" {
			usage("--target is required")
		}
		var names []string
		if *only != "all" {
			names = []string{*only}
		}
		var c testpeer.Client
		if mode == "client" {
			cc, err := courier.Dial(*target, courier.WithMaxRecvMsgSize(8<<20))
			if err != nil {
				die(err)
			}
			defer cc.Close()
			c = testpeer.CourierClient{CC: cc}
		} else {
			cc, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)))
			if err != nil {
				die(err)
			}
			defer cc.Close()
			c = testpeer.GrpcClient{CC: cc}
		}
		if testpeer.RunCases(c, names, os.Stdout) > 0 {
			os.Exit(1)
		}
	default:
		usage("unknown mode " + mode)
	}
}

func serveUntilEOF(port int) {
	fmt.Printf("PORT %d\n", port)
	io.Copy(io.Discard, os.Stdin)
}

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "courier-go-testpeer: %s\nusage: courier-go-testpeer server|grpc-server [--listen HOST:PORT] | client|grpc-client --target HOST:PORT [--case NAME]\n", msg)
	os.Exit(2)
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "courier-go-testpeer:", err)
	os.Exit(1)
}
