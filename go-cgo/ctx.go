package courier

/*
#include "courier.h"
*/
import "C"

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// callCtx is the context.Context of a server call. Deadline and cancellation
// come from the core: Done() is closed when the client leaves, resets the
// stream, the deadline passes or the server stops, and when the handler
// returns. It watches the core only once Done() or AfterFunc is used.
type callCtx struct {
	parent      context.Context
	method      *method
	deadline    time.Time
	hasDeadline bool

	mu     sync.Mutex
	h      *C.CourierCtx // borrowed from the call; nil once the handler returned
	done   chan struct{} // made on first Done()
	err    error
	watch  *C.CourierWatch
	token  uint64
	timer  *time.Timer
	afters map[uint64]func()
	nextAf uint64
	polls  uint8 // Err calls answered by asking the core
}

type coreCtxKey struct{}

// newCallCtx makes the context of a call taken at `at` (one clock read per batch).
func newCallCtx(parent context.Context, m *method, tc *C.CourierTakenCall, at time.Time) *callCtx {
	c := &callCtx{parent: parent, method: m, h: tc.ctx}
	if tc.has_deadline {
		c.hasDeadline = true
		c.deadline = at.Add(time.Duration(tc.deadline_remaining_ns))
	}
	return c
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, c.hasDeadline }

func (c *callCtx) Value(key any) any {
	if key == (coreCtxKey{}) {
		return c
	}
	return c.parent.Value(key)
}

func (c *callCtx) String() string { return "courier.callCtx(" + c.method.path + ")" }

// Done is closed once the call is over for its client or the handler returned.
func (c *callCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchLocked()
	return c.done
}

// watchLocked makes the done channel and starts watching the core ctx.
func (c *callCtx) watchLocked() {
	if c.done != nil {
		return
	}
	c.done = make(chan struct{})
	if c.err != nil || c.h == nil {
		if c.err == nil {
			c.err = context.Canceled
		}
		close(c.done)
		return
	}
	if reason := C.courier_ctx_cancelled(c.h); reason != C.COURIER_CANCEL_NONE {
		c.cancelLocked(cancelErr(reason))
		return
	}
	c.token = registerWatch(c)
	c.watch = C.courier_ctx_watch(c.h, C.uint64_t(c.token))
	if c.hasDeadline {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
}

func cancelErr(reason C.CourierCancel) error {
	if reason == C.COURIER_CANCEL_DEADLINE_EXCEEDED {
		return context.DeadlineExceeded
	}
	return context.Canceled
}

// Err is nil while the call runs, then context.Canceled or context.DeadlineExceeded.
func (c *callCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.h == nil {
		if c.err == nil {
			return context.Canceled
		}
		return c.err
	}
	if c.done == nil {
		if c.polls < watchAfterPolls {
			// Not watched: ask the core (one crossing) and the clock.
			c.polls++
			if reason := C.courier_ctx_cancelled(c.h); reason != C.COURIER_CANCEL_NONE {
				return cancelErr(reason)
			}
			if c.hasDeadline && !time.Now().Before(c.deadline) {
				return context.DeadlineExceeded
			}
			return nil
		}
		// Polled in a loop (a streaming handler checking between sends):
		// watch the core once, then answer from here.
		c.watchLocked()
		return c.err
	}
	return nil
}

// watchAfterPolls is how many Err calls ask the core before the context
// watches it instead (a watch costs more than a few crossings).
const watchAfterPolls = 4

func (c *callCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cancelLocked(err)
}

func (c *callCtx) cancelLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	for _, f := range c.afters {
		go f()
	}
	c.afters = nil
}

// fromCore runs when the core posted this context's watch token.
func (c *callCtx) fromCore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil || c.err != nil {
		return
	}
	c.cancelLocked(cancelErr(C.courier_ctx_cancelled(c.h)))
}

// AfterFunc lets context.AfterFunc and derived contexts (WithCancel,
// WithTimeout) register without a goroutine per context.
func (c *callCtx) AfterFunc(f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchLocked()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	if c.afters == nil {
		c.afters = map[uint64]func(){}
	}
	id := c.nextAf
	c.nextAf++
	c.afters[id] = f
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.afters[id]
		delete(c.afters, id)
		return ok
	}
}

// finish ends the context when the handler returned: stops watching, lets go
// of the core handle (the call's, freed with it), and cancels (as grpc-go
// does for a finished call).
func (c *callCtx) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watch != nil {
		C.courier_watch_free(c.watch)
		c.watch = nil
		unregisterWatch(c.token)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.cancelLocked(context.Canceled)
	c.h = nil
}

// with runs f with the core handle while the call runs; false afterwards.
func (c *callCtx) with(f func(h *C.CourierCtx)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return false
	}
	f(c.h)
	return true
}

func serverCtx(ctx context.Context) *callCtx {
	if c, ok := ctx.(*callCtx); ok {
		return c
	}
	c, _ := ctx.Value(coreCtxKey{}).(*callCtx)
	return c
}

// ---------------------------------------------------------------- accessors

// Identity is a verified peer identity: a SPIFFE ID and its short name.
type Identity struct {
	// SpiffeID is the full ID, spiffe://<trust-domain>/<name>.
	SpiffeID string
	// Name is the <name> part, as used in limits config and stats.
	Name string
}

// PeerIdentity is the verified identity of the client of the server call ctx
// belongs to; ok is false when the peer is unauthenticated (no client
// certificate) or ctx is not a server call's.
func PeerIdentity(ctx context.Context) (id Identity, ok bool) {
	c := serverCtx(ctx)
	if c == nil {
		return Identity{}, false
	}
	c.with(func(h *C.CourierCtx) {
		var s, n C.CourierStr
		if C.courier_ctx_peer_identity(h, &s, &n) {
			id, ok = Identity{SpiffeID: goString(s), Name: goString(n)}, true
		}
	})
	return id, ok
}

// RequestID is the request id of the server call ctx belongs to (the
// caller's x-request-id, or one made for the call); "" outside a server call.
// Calls made with ctx send it on.
func RequestID(ctx context.Context) string {
	var id string
	if c := serverCtx(ctx); c != nil {
		c.with(func(h *C.CourierCtx) { id = goString(C.courier_ctx_request_id(h)) })
	}
	return id
}

// Metadata is the request metadata of the server call ctx belongs to
// (transport headers hidden); nil outside a server call.
func Metadata(ctx context.Context) MD {
	var md MD
	if c := serverCtx(ctx); c != nil {
		c.with(func(h *C.CourierCtx) {
			m := C.courier_ctx_metadata(h)
			md = readMetadata(m)
			C.courier_metadata_free(m)
		})
	}
	return md
}

// Method is the full method path (/package.Service/Method) of the server
// call ctx belongs to; "" outside a server call.
func Method(ctx context.Context) string {
	if c := serverCtx(ctx); c != nil {
		return c.method.path
	}
	return ""
}

func replyMeta(ctx context.Context, key, value string, trailer bool) error {
	c := serverCtx(ctx)
	if c == nil {
		return &Error{Kind: ErrState, Message: "not a server call's context"}
	}
	var err error
	ok := c.with(func(h *C.CourierCtx) {
		var cerr *C.CourierError
		kp, kl := strArg(key)
		vp, vl := strArg(value)
		var done C.bool
		if trailer {
			done = C.courier_ctx_add_reply_trailer(h, kp, kl, vp, vl, &cerr)
		} else {
			done = C.courier_ctx_add_reply_header(h, kp, kl, vp, vl, &cerr)
		}
		if !done {
			err = takeError(cerr)
		}
	})
	if !ok {
		return &Error{Kind: ErrState, Message: "the call has ended"}
	}
	return err
}

// SetHeader adds a response header (initial metadata) to the server call of
// ctx. Streaming calls send headers with their first message: set them before.
func SetHeader(ctx context.Context, key, value string) error {
	return replyMeta(ctx, key, value, false)
}

// SetTrailer adds a response trailer (trailing metadata) to the server call of ctx.
func SetTrailer(ctx context.Context, key, value string) error {
	return replyMeta(ctx, key, value, true)
}

// ---------------------------------------------------------------- cancellation events

var (
	watches    sync.Map // token -> *callCtx
	watchToken atomic.Uint64
	eventsOnce sync.Once
)

func registerWatch(c *callCtx) uint64 {
	eventsOnce.Do(func() { go eventLoop() })
	t := watchToken.Add(1)
	watches.Store(t, c)
	return t
}

func unregisterWatch(t uint64) { watches.Delete(t) }

// eventLoop delivers the core's cancellation events (one goroutine per
// process, blocked in C while there are none).
func eventLoop() {
	runtime.LockOSThread()
	buf := make([]C.uint64_t, 64)
	for {
		n := int(C.courier_events_next(&buf[0], C.size_t(len(buf)), -1))
		for _, t := range buf[:n] {
			if c, ok := watches.Load(uint64(t)); ok {
				c.(*callCtx).fromCore()
			}
		}
	}
}

// ---------------------------------------------------------------- outgoing calls

// outCtx is the core context of an outgoing call made with a Go context: a
// child of the server call's core context when ctx belongs to one (deadline,
// request id, trace context propagate), of a background context otherwise;
// bounded by ctx's deadline and cancelled with ctx.
type outCtx struct {
	h    *C.CourierCtx
	mu   sync.Mutex
	stop func() bool
}

func newOutCtx(ctx context.Context) (*outCtx, error) {
	if err := ctx.Err(); err != nil {
		return nil, StatusOf(err)
	}
	sc := serverCtx(ctx)
	var parent *C.CourierCtx
	if sc != nil {
		sc.with(func(h *C.CourierCtx) { parent = C.courier_ctx_clone(h) })
	}
	if parent == nil {
		parent = C.courier_ctx_background()
	}
	o := &outCtx{}
	if dl, ok := ctx.Deadline(); ok {
		o.h = C.courier_ctx_with_timeout(parent, C.int64_t(time.Until(dl)))
	} else {
		o.h = C.courier_ctx_child(parent)
	}
	C.courier_ctx_free(parent)
	// Cancellation of ctx itself: a server call's ctx is the core's already.
	if _, direct := ctx.(*callCtx); !direct && ctx.Done() != nil {
		o.stop = context.AfterFunc(ctx, func() {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The core enforces the same deadline (DEADLINE_EXCEEDED).
				return
			}
			o.mu.Lock()
			if o.h != nil {
				C.courier_ctx_cancel(o.h)
			}
			o.mu.Unlock()
		})
	}
	return o, nil
}

func (o *outCtx) release() {
	if o.stop != nil {
		o.stop()
	}
	o.mu.Lock()
	C.courier_ctx_free(o.h)
	o.h = nil
	o.mu.Unlock()
}

var sigpipeOnce sync.Once

// handleSIGPIPE keeps SIGPIPE raised by the core's I/O threads (writing to a
// connection the peer closed) from ending the process: Go's runtime applies
// the default action to a SIGPIPE on a non-Go thread unless the program asked
// for the signal. Asked for here, it is dropped (writes fail with EPIPE).
func handleSIGPIPE() {
	sigpipeOnce.Do(func() { signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE) })
}
