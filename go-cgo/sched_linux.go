package courier

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

const (
	schedOther = 0
	schedBatch = 3
	// Flag that sched_getscheduler may OR into the policy.
	schedResetOnFork = 0x40000000
)

// batchGoThreads puts this process's threads under SCHED_BATCH, but for the
// core's I/O threads (kept at, or put back to, SCHED_OTHER). A SCHED_BATCH
// thread that wakes does not preempt the running one: the Go thread woken
// for ready calls no longer cuts short the I/O thread that is still reading
// more on the same core, so both get longer batches. Threads under another
// policy (real-time, idle) are left alone; threads Go makes later inherit
// SCHED_BATCH from the thread that makes them.
func batchGoThreads() {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile("/proc/self/task/" + e.Name() + "/comm")
		p, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, uintptr(tid), 0, 0)
		if errno != 0 {
			continue
		}
		policy := int(p) &^ schedResetOnFork
		want := schedBatch
		if strings.HasPrefix(string(comm), "courier-io") {
			want = schedOther
		}
		if policy == want || (policy != schedOther && policy != schedBatch) {
			continue
		}
		var param [1]int32 // sched_priority: 0 for both policies
		syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), uintptr(want), uintptr(unsafe.Pointer(&param[0])))
	}
}
