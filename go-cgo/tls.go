package courier

/*
#include "courier.h"
*/
import "C"

import (
	"runtime"
	"time"
)

// TLSOption configures ServerTLSFromFiles and ClientTLSFromFiles.
type TLSOption func(*tlsOptions)

type tlsOptions struct {
	optionalClientCert bool
	handshakeTimeout   time.Duration
	reloadInterval     time.Duration
	tls13Tickets       int
	cert, key          string
}

// OptionalClientCert admits clients without a certificate as unauthenticated
// (servers; for migrations). By default a client certificate is required.
func OptionalClientCert() TLSOption { return func(o *tlsOptions) { o.optionalClientCert = true } }

// HandshakeTimeout drops handshakes not finished in d (servers; default 10 s).
func HandshakeTimeout(d time.Duration) TLSOption {
	return func(o *tlsOptions) { o.handshakeTimeout = d }
}

// ReloadInterval sets how often the files are checked for changes (default
// 1 s); a negative d never reloads.
func ReloadInterval(d time.Duration) TLSOption { return func(o *tlsOptions) { o.reloadInterval = d } }

// TLS13Tickets sets the TLS 1.3 session tickets a server sends per handshake (default 1).
func TLS13Tickets(n int) TLSOption { return func(o *tlsOptions) { o.tls13Tickets = n } }

// ClientCert sets a client's certificate chain and key (PEM files): its identity.
func ClientCert(cert, key string) TLSOption { return func(o *tlsOptions) { o.cert, o.key = cert, key } }

func (o *tlsOptions) reloadMs() C.int64_t {
	switch {
	case o.reloadInterval < 0:
		return -1
	case o.reloadInterval == 0:
		return 0
	default:
		return C.int64_t(max(o.reloadInterval.Milliseconds(), 1))
	}
}

// ServerTLS is a server's mutual-TLS settings, loaded from PEM files and
// reloaded when they change (the same settings as Python's
// courier.ServerTLS.from_files). Give it to NewServer with WithTLS.
type ServerTLS struct{ h *C.CourierServerTls }

// ServerTLSFromFiles loads the server's certificate chain (leaf first, with
// its SPIFFE ID), key, and the CA client certificates must chain to.
func ServerTLSFromFiles(cert, key, ca string, opts ...TLSOption) (*ServerTLS, error) {
	o := tlsOptions{tls13Tickets: -1}
	for _, f := range opts {
		f(&o)
	}
	var cerr *C.CourierError
	cp, cl := strArg(cert)
	kp, kl := strArg(key)
	ap, al := strArg(ca)
	h := C.courier_server_tls_from_files(cp, cl, kp, kl, ap, al, C.bool(!o.optionalClientCert),
		C.uint64_t(max(o.handshakeTimeout.Milliseconds(), 0)), o.reloadMs(), C.int32_t(o.tls13Tickets), &cerr)
	if h == nil {
		return nil, takeError(cerr)
	}
	t := &ServerTLS{h: h}
	runtime.SetFinalizer(t, func(t *ServerTLS) { C.courier_server_tls_free(t.h) })
	return t, nil
}

// Identity is the server's own SPIFFE ID (from its current certificate).
func (t *ServerTLS) Identity() string {
	var s C.CourierStr
	o := C.courier_server_tls_identity(t.h, &s, nil)
	defer C.courier_owned_str_free(o)
	id := goString(s)
	runtime.KeepAlive(t)
	return id
}

// Reload re-reads the files now; on error the current certificates stay.
func (t *ServerTLS) Reload() error {
	var cerr *C.CourierError
	ok := C.courier_server_tls_reload(t.h, &cerr)
	runtime.KeepAlive(t)
	if !ok {
		return takeError(cerr)
	}
	return nil
}

// WithTLS serves over mutual TLS: handlers see their client's verified
// identity with PeerIdentity.
func WithTLS(t *ServerTLS) ServerOption { return func(o *serverOptions) { o.tls = t } }

// ClientTLS is a client's mutual-TLS settings, loaded from PEM files and
// reloaded when they change (Python's courier.ClientTLS.from_files). Give it
// to Dial with WithClientTLS.
type ClientTLS struct{ h *C.CourierClientTls }

// ClientTLSFromFiles loads the CA the server's certificate must chain to and
// the server identity accepted: a full SPIFFE ID (spiffe://example.org/billing)
// or a trust domain (spiffe://example.org); servers are checked by identity,
// never by host name. ClientCert gives the client's own certificate.
func ClientTLSFromFiles(ca, serverIdentity string, opts ...TLSOption) (*ClientTLS, error) {
	var o tlsOptions
	for _, f := range opts {
		f(&o)
	}
	var cerr *C.CourierError
	ap, al := strArg(ca)
	ip, il := strArg(serverIdentity)
	cp, cl := strArg(o.cert)
	kp, kl := strArg(o.key)
	h := C.courier_client_tls_from_files(ap, al, ip, il, cp, cl, kp, kl, o.reloadMs(), &cerr)
	if h == nil {
		return nil, takeError(cerr)
	}
	t := &ClientTLS{h: h}
	runtime.SetFinalizer(t, func(t *ClientTLS) { C.courier_client_tls_free(t.h) })
	return t, nil
}

// Reload re-reads the files now; on error the current certificates stay.
func (t *ClientTLS) Reload() error {
	var cerr *C.CourierError
	ok := C.courier_client_tls_reload(t.h, &cerr)
	runtime.KeepAlive(t)
	if !ok {
		return takeError(cerr)
	}
	return nil
}

// WithClientTLS dials over mutual TLS.
func WithClientTLS(t *ClientTLS) DialOption { return func(o *dialOptions) { o.tls = t } }

// DevCAInit creates a development CA for trustDomain in dir (ca.pem, ca.key):
// for tests and local setups, as `courier ca init` does.
func DevCAInit(trustDomain, dir string) error {
	var cerr *C.CourierError
	tp, tl := strArg(trustDomain)
	dp, dl := strArg(dir)
	if !C.courier_devca_init(tp, tl, dp, dl, 0, &cerr) {
		return takeError(cerr)
	}
	return nil
}

// DevCAIssue issues a certificate for spiffeID from the dev CA in caDir into
// outDir (cert.pem, key.pem), with DNS name dns if not empty.
func DevCAIssue(caDir, outDir, spiffeID, dns string) error {
	var cerr *C.CourierError
	cp, cl := strArg(caDir)
	op, ol := strArg(outDir)
	sp, sl := strArg(spiffeID)
	dp, dl := strArg(dns)
	if !C.courier_devca_issue(cp, cl, op, ol, sp, sl, dp, dl, 0, &cerr) {
		return takeError(cerr)
	}
	return nil
}
