// Spawn storm: one P, thousands of goroutines that each do a little work and
// hand a result back on a channel. Writes a runtime/trace to os.Args[1].
package main

import (
	"os"
	"runtime"
	"runtime/trace"
	"strconv"
)

func main() {
	runtime.GOMAXPROCS(1)
	n := 3000
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := trace.Start(f); err != nil {
		panic(err)
	}
	done := make(chan int, 64)
	for i := 0; i < n; i++ {
		go func(i int) {
			s := 0
			for j := 0; j < 50; j++ {
				s += i * j
			}
			done <- s
		}(i)
	}
	total := 0
	for i := 0; i < n; i++ {
		total += <-done
	}
	trace.Stop()
	if err := f.Close(); err != nil {
		panic(err)
	}
	_ = total
}
