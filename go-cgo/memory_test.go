//go:build !race

package courier_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

func rssKiB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatalf("reading RSS: %v", err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// 200k calls keep RSS flat: no call, context, buffer or handle leaks. The
// server and a Go client run in this process: 200k unary calls come from
// h2load (the load generator the Python binding's memory test uses), 20k
// more calls, unary and streaming, from the Go client. (Not under -race: the
// race detector's shadow memory grows by design.)
func TestRSSFlatOver200kCalls(t *testing.T) {
	h2load, err := exec.LookPath("h2load")
	if err != nil {
		t.Fatal("h2load is missing: install Debian's nghttp2-client (.ci/run does)")
	}
	_, target := startGoServer(t, nil)
	msg, _ := proto.Marshal(&pb.TestRequest{S: "hello, world!", Payload: make([]byte, 64)})
	body := filepath.Join(t.TempDir(), "req.bin")
	os.WriteFile(body, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...), 0o644)
	load := func(n int) {
		out, err := exec.Command(h2load, "-n", strconv.Itoa(n), "-c", "4", "-m", "16", "-d", body,
			"-H", "content-type: application/grpc", "-H", "te: trailers",
			"http://"+target+"/courier.test.Test/UnaryUnary").CombinedOutput()
		want := fmt.Sprintf("%d succeeded, 0 failed, 0 errored", n)
		if err != nil || !strings.Contains(string(out), want) {
			t.Fatalf("h2load: %v\n%s", err, out)
		}
	}
	c := dial(t, target)
	ctx := context.Background()
	req := &pb.TestRequest{S: "hello, world!", Payload: make([]byte, 64), EchoHeader: "x-none"}
	run := func(n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					if i := next.Load(); i%100 == 0 {
						s, err := c.UnaryStream(cctx, &pb.TestRequest{Count: 2})
						if err != nil {
							t.Error(err)
						} else {
							for {
								if _, err := s.Recv(); err != nil {
									break
								}
							}
						}
					} else if _, err := c.UnaryUnary(cctx, req); err != nil {
						t.Error(err)
					}
					cancel()
				}
			}()
		}
		wg.Wait()
	}
	settle := func() int {
		runtime.GC()
		debug.FreeOSMemory()
		time.Sleep(100 * time.Millisecond)
		return rssKiB(t)
	}
	load(20_000)
	run(2_000)
	before := settle()
	t0 := time.Now()
	load(200_000)
	run(20_000)
	after := settle()
	t.Logf("RSS %d KiB after a warm-up, %d KiB after 220k more calls (%+d KiB) in %v", before, after, after-before, time.Since(t0))
	if after-before > 16*1024 {
		t.Fatalf("RSS grew by %d KiB over 220k calls", after-before)
	}
}
