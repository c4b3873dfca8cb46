package crossing

import (
	"testing"
	"time"
)

// go test -bench . ./crossing (in bench/go): the figures of bench/go/README.md.

func BenchmarkGoToC(b *testing.B) {
	for i := 0; i < b.N; i++ {
		GoToC(uint64(i))
	}
}

func BenchmarkCToGoOnCThread(b *testing.B) {
	ns := CToGoOnCThread(uint64(b.N))
	b.ReportMetric(float64(ns)/float64(b.N), "ns/callback")
}

func BenchmarkCToGoOnGoThread(b *testing.B) {
	ns := CToGoOnGoThread(uint64(b.N))
	b.ReportMetric(float64(ns)/float64(b.N), "ns/callback")
}

// One callback per new C thread: the first call from a thread Go has not seen.
func BenchmarkCToGoFirstCallOnNewCThread(b *testing.B) {
	var total time.Duration
	for i := 0; i < b.N; i++ {
		total += time.Duration(CToGoOnCThread(1))
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/callback")
}
