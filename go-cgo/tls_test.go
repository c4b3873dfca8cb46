package courier_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	courier "github.com/courier-rpc/courier/go-cgo"
	pb "github.com/courier-rpc/courier/go-cgo/testpb"
)

// devPKI makes a dev CA for example.org with a server (go-server) and a
// client (ocr) certificate; returns the directory.
func devPKI(t *testing.T) string {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(courier.DevCAInit("example.org", filepath.Join(dir, "ca")))
	must(courier.DevCAIssue(filepath.Join(dir, "ca"), filepath.Join(dir, "server"), "spiffe://example.org/go-server", "localhost"))
	must(courier.DevCAIssue(filepath.Join(dir, "ca"), filepath.Join(dir, "client"), "spiffe://example.org/ocr", ""))
	return dir
}

func startTLSServer(t *testing.T, pki string, opts ...courier.TLSOption) string {
	st, err := courier.ServerTLSFromFiles(filepath.Join(pki, "server/cert.pem"), filepath.Join(pki, "server/key.pem"), filepath.Join(pki, "ca/ca.pem"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if st.Identity() != "spiffe://example.org/go-server" {
		t.Fatalf("server identity %q", st.Identity())
	}
	s := courier.NewServer(courier.IOThreads(1), courier.WithTLS(st))
	if err := pb.RegisterTestServer(s, &testService{}); err != nil {
		t.Fatal(err)
	}
	return "localhost:" + strconv.Itoa(listenAndStart(t, s))
}

func tlsClient(t *testing.T, pki, target, serverID string, withCert bool) *pb.TestClient {
	var opts []courier.TLSOption
	if withCert {
		opts = append(opts, courier.ClientCert(filepath.Join(pki, "client/cert.pem"), filepath.Join(pki, "client/key.pem")))
	}
	ct, err := courier.ClientTLSFromFiles(filepath.Join(pki, "ca/ca.pem"), serverID, opts...)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := courier.Dial(target, courier.WithClientTLS(ct))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewTestClient(cc)
}

func TestMutualTLSIdentities(t *testing.T) {
	pki := devPKI(t)
	target := startTLSServer(t, pki)
	ctx := timeout(t, 10*time.Second)

	r, err := tlsClient(t, pki, target, "spiffe://example.org/go-server", true).UnaryUnary(ctx, &pb.TestRequest{S: "whoami"})
	if err != nil {
		t.Fatal(err)
	}
	if r.S != "spiffe://example.org/ocr|ocr" {
		t.Fatalf("the handler saw peer %q", r.S)
	}
	// A trust domain is accepted as the expected server identity too.
	if _, err := tlsClient(t, pki, target, "spiffe://example.org", true).UnaryUnary(ctx, &pb.TestRequest{}); err != nil {
		t.Fatal(err)
	}
	// The wrong server identity, and a client without a certificate, fail.
	if _, err := tlsClient(t, pki, target, "spiffe://example.org/billing", true).UnaryUnary(ctx, &pb.TestRequest{}); courier.CodeOf(err) != courier.Unavailable {
		t.Fatalf("wrong server identity: %v", err)
	}
	if _, err := tlsClient(t, pki, target, "spiffe://example.org/go-server", false).UnaryUnary(ctx, &pb.TestRequest{}); err == nil {
		t.Fatal("a client without a certificate was served")
	}

	// Optional client certificates: a client without one is unauthenticated.
	open := startTLSServer(t, pki, courier.OptionalClientCert())
	r, err = tlsClient(t, pki, open, "spiffe://example.org/go-server", false).UnaryUnary(ctx, &pb.TestRequest{S: "whoami"})
	if err != nil || r.S != "unauthenticated" {
		t.Fatalf("optional client cert: %v %v", r, err)
	}

	// Bad files are precise errors.
	if _, err := courier.ServerTLSFromFiles("/nonexistent/cert.pem", "k", "c"); err == nil {
		t.Fatal("missing files accepted")
	}
	if _, err := courier.ClientTLSFromFiles(filepath.Join(pki, "ca/ca.pem"), "not-a-spiffe-id"); err == nil {
		t.Fatal("bad server identity accepted")
	}
}

// Stock grpc-go over mutual TLS against a Go Courier server.
func TestGrpcGoClientMutualTLS(t *testing.T) {
	pki := devPKI(t)
	target := startTLSServer(t, pki)
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "client/cert.pem"), filepath.Join(pki, "client/key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(pki, "ca/ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost"})
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp := new(pb.TestResponse)
	if err := conn.Invoke(timeout(t, 10*time.Second), "/courier.test.Test/UnaryUnary", &pb.TestRequest{S: "whoami"}, resp); err != nil {
		t.Fatal(err)
	}
	if resp.S != "spiffe://example.org/ocr|ocr" {
		t.Fatalf("peer %q", resp.S)
	}
}

// Python's courier client with ClientTLS against a Go server over mTLS, and
// the Go client against a Python server with ServerTLS, whose handler sees the
// Go client's SPIFFE identity.
func TestPythonMutualTLS(t *testing.T) {
	py := python(t)
	pki := devPKI(t)
	target := startTLSServer(t, pki)
	out, err := exec.Command(py, "testdata/pytls.py", "client", pki, target).CombinedOutput()
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	if string(out) != "spiffe://example.org/ocr|ocr\n" {
		t.Fatalf("python client saw %q", out)
	}

	if err := courier.DevCAIssue(filepath.Join(pki, "ca"), filepath.Join(pki, "py-server"), "spiffe://example.org/py-server", "localhost"); err != nil {
		t.Fatal(err)
	}
	pyTarget := peerProcess(t, py, "testdata/pytls.py", "server", pki)
	_, port, _ := splitHostPort(pyTarget)
	c := tlsClient(t, pki, "localhost:"+port, "spiffe://example.org/py-server", true)
	ctx := timeout(t, 10*time.Second)
	r, err := c.UnaryUnary(ctx, &pb.TestRequest{S: "over tls"})
	if err != nil || r.S != "over tls" {
		t.Fatalf("python server over TLS: %v %v", r, err)
	}
	r, err = c.UnaryUnary(ctx, &pb.TestRequest{S: "whoami"})
	if err != nil || r.S != "spiffe://example.org/ocr|ocr" {
		t.Fatalf("the python server saw the Go client as %v (%v), want spiffe://example.org/ocr|ocr", r, err)
	}
	// The Go client with the wrong expected server identity is refused.
	wrong := tlsClient(t, pki, "localhost:"+port, "spiffe://example.org/go-server", true)
	if _, err := wrong.UnaryUnary(ctx, &pb.TestRequest{S: "whoami"}); courier.CodeOf(err) != courier.Unavailable {
		t.Fatalf("python server presenting py-server to a client expecting go-server: %v", err)
	}
}

// The Go Courier client over mutual TLS against a stock grpc-go server that
// requires and verifies the client's certificate: its handler reads the
// client's SPIFFE ID from the verified chain; a client without a certificate
// is refused in the handshake.
func TestGoClientGrpcGoServerMutualTLS(t *testing.T) {
	pki := devPKI(t)
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "server/cert.pem"), filepath.Join(pki, "server/key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca/ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in ca.pem")
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})
	// Every method: answers TestResponse{s: the verified client's URI SANs}.
	whoami := func(_ any, stream grpc.ServerStream) error {
		req := new(pb.TestRequest)
		if err := stream.RecvMsg(req); err != nil {
			return err
		}
		p, ok := peer.FromContext(stream.Context())
		if !ok {
			return status.Error(codes.Internal, "no peer")
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.VerifiedChains) == 0 {
			return status.Errorf(codes.Unauthenticated, "no verified client certificate (%T)", p.AuthInfo)
		}
		var uris []string
		for _, u := range info.State.VerifiedChains[0][0].URIs {
			uris = append(uris, u.String())
		}
		return stream.SendMsg(&pb.TestResponse{S: strings.Join(uris, ",") + "|" + req.S})
	}
	gs := grpc.NewServer(grpc.Creds(creds), grpc.UnknownServiceHandler(whoami))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	target := "localhost:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	ctx := timeout(t, 10*time.Second)

	r, err := tlsClient(t, pki, target, "spiffe://example.org/go-server", true).UnaryUnary(ctx, &pb.TestRequest{S: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if r.S != "spiffe://example.org/ocr|hi" {
		t.Fatalf("the grpc-go server saw the Go client as %q", r.S)
	}
	// No client certificate: the grpc-go server ends the handshake.
	_, err = tlsClient(t, pki, target, "spiffe://example.org/go-server", false).UnaryUnary(ctx, &pb.TestRequest{S: "hi"})
	if courier.CodeOf(err) != courier.Unavailable {
		t.Fatalf("a client without a certificate: %v, want UNAVAILABLE", err)
	}
	// The grpc-go server's certificate is not the identity the client expects.
	_, err = tlsClient(t, pki, target, "spiffe://example.org/billing", true).UnaryUnary(ctx, &pb.TestRequest{S: "hi"})
	if courier.CodeOf(err) != courier.Unavailable {
		t.Fatalf("wrong server identity: %v, want UNAVAILABLE", err)
	}
}

func splitHostPort(s string) (string, string, error) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return s[:i], s[i+1:], nil
		}
	}
	return s, "", nil
}

// The core's admission applies to Go servers: a limits file's ACL admits the
// ocr identity and refuses a client without a certificate.
func TestLimitsFileACL(t *testing.T) {
	pki := devPKI(t)
	limits := filepath.Join(t.TempDir(), "limits.yaml")
	os.WriteFile(limits, []byte("limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        ocr: -1\n        authenticated: 0\n        unauthenticated: 0\n"), 0o644)
	st, err := courier.ServerTLSFromFiles(filepath.Join(pki, "server/cert.pem"), filepath.Join(pki, "server/key.pem"), filepath.Join(pki, "ca/ca.pem"), courier.OptionalClientCert())
	if err != nil {
		t.Fatal(err)
	}
	s := courier.NewServer(courier.IOThreads(1), courier.WithTLS(st), courier.LimitsFile(limits))
	if err := pb.RegisterTestServer(s, &testService{}); err != nil {
		t.Fatal(err)
	}
	port, _ := s.Listen("127.0.0.1:0")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(time.Second)
	target := "localhost:" + strconv.Itoa(port)
	ctx := timeout(t, 10*time.Second)
	if _, err := tlsClient(t, pki, target, "spiffe://example.org/go-server", true).UnaryUnary(ctx, &pb.TestRequest{}); err != nil {
		t.Fatalf("ocr refused: %v", err)
	}
	_, err = tlsClient(t, pki, target, "spiffe://example.org/go-server", false).UnaryUnary(ctx, &pb.TestRequest{})
	if courier.CodeOf(err) != courier.Unauthenticated {
		t.Fatalf("a client without identity: %v", err)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("limits:\n  courier.test.Test:\n    default:\n      queue: sideways\n"), 0o644)
	s2 := courier.NewServer(courier.IOThreads(1), courier.LimitsFile(bad))
	pb.RegisterTestServer(s2, &testService{})
	s2.Listen("127.0.0.1:0")
	if err := s2.Start(); err == nil || !strings.Contains(err.Error(), "bad.yaml:4") {
		t.Fatalf("a bad limits file: %v", err)
	}
	s2.Stop(0)
}
