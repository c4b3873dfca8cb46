// Package crossing measures what a call costs to cross between Go and C,
// to choose how the core hands calls to Go handlers:
//
//   - pull: goroutines call into C (Go -> C) to take a batch of calls;
//   - push: the core's I/O threads call into Go (C -> Go) for every call;
//     those threads are not Go's, which is the expensive kind of callback.
package crossing

/*
#include <pthread.h>
#include <stdint.h>
#include <time.h>

extern void goCallback(uint64_t);

static uint64_t noop(uint64_t x) { return x + 1; }

static uint64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

struct job { uint64_t n; uint64_t ns; };

// Calls Go n times from this thread; the elapsed time goes into j->ns.
static void call_go(struct job *j) {
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < j->n; i++) goCallback(i);
	j->ns = now_ns() - t0;
}

static void *thread_main(void *arg) { call_go((struct job *)arg); return 0; }

// The same from a thread created by C (like the core's I/O threads).
static uint64_t call_go_from_c_thread(uint64_t n) {
	struct job j = { n, 0 };
	pthread_t t;
	pthread_create(&t, 0, thread_main, &j);
	pthread_join(t, 0);
	return j.ns;
}

static uint64_t call_go_here(uint64_t n) {
	struct job j = { n, 0 };
	call_go(&j);
	return j.ns;
}
*/
import "C"

import "sync/atomic"

var calls atomic.Uint64

//export goCallback
func goCallback(x C.uint64_t) { calls.Add(1) }

// GoToC calls an empty C function once.
func GoToC(x uint64) uint64 { return uint64(C.noop(C.uint64_t(x))) }

// CToGoOnCThread makes n C -> Go calls from a thread created by C and returns
// the nanoseconds they took.
func CToGoOnCThread(n uint64) uint64 { return uint64(C.call_go_from_c_thread(C.uint64_t(n))) }

// CToGoOnGoThread makes n C -> Go calls from C code called by Go.
func CToGoOnGoThread(n uint64) uint64 { return uint64(C.call_go_here(C.uint64_t(n))) }
