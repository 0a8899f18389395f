// A ticker for a few seconds: little activity spread over several trace generations
// (the runtime starts a new one about every second), with timer wake-ups.
package main

import (
	"os"
	"runtime/trace"
	"strconv"
	"time"
)

func main() {
	ms := 2500
	if len(os.Args) > 2 {
		ms, _ = strconv.Atoi(os.Args[2])
	}
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := trace.Start(f); err != nil {
		panic(err)
	}
	t := time.NewTicker(20 * time.Millisecond)
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	n := 0
	for now := range t.C {
		n++
		if now.After(deadline) {
			break
		}
	}
	t.Stop()
	trace.Stop()
	if err := f.Close(); err != nil {
		panic(err)
	}
	_ = n
}
