package courier_test

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

// After Start, Go's threads are under SCHED_BATCH and the core's I/O
// threads under SCHED_OTHER (see BatchScheduling).
func TestBatchScheduling(t *testing.T) {
	if os.Getenv("COURIER_GO_SCHED") == "normal" {
		t.Skip("COURIER_GO_SCHED=normal")
	}
	startGoServer(t, nil)
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skip(err)
	}
	var io, batch int
	for _, e := range ents {
		comm, _ := os.ReadFile("/proc/self/task/" + e.Name() + "/comm")
		sched, _ := os.ReadFile("/proc/self/task/" + e.Name() + "/sched")
		policy := ""
		for _, l := range strings.Split(string(sched), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "policy" {
				policy = f[2]
			}
		}
		if strings.HasPrefix(string(comm), "courier-io") {
			io++
			if policy != "0" {
				t.Errorf("I/O thread %s has policy %s, want SCHED_OTHER (0)", e.Name(), policy)
			}
		} else if policy == "3" {
			batch++
		}
	}
	p, _, _ := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
	if io == 0 || batch == 0 || p&^0x40000000 != 3 {
		t.Fatalf("%d I/O threads, %d SCHED_BATCH threads, this thread's policy %d", io, batch, p)
	}
}
