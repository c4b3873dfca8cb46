//go:build !linux

package courier

func batchGoThreads() {}
