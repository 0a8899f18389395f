// A small standard-library workload for GODEBUG=schedtrace / scheddetail captures.
//
//	busy DURATION_MS WORKERS [quiet]
//
// Until the deadline it runs rounds of WORKERS CPU-bound goroutines that yield with
// runtime.Gosched (so the global run queue fills), a ticker goroutine (timers) and a
// channel ping-pong pair (goroutines parked in chan receive). Unless "quiet" is given it
// writes its own progress lines to stderr, interleaved with the runtime's SCHED records,
// as a real daemon would.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

var sink uint64

func spin(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

func main() {
	dur, workers, quiet := 300, 40, false
	if len(os.Args) > 1 {
		dur, _ = strconv.Atoi(os.Args[1])
	}
	if len(os.Args) > 2 {
		workers, _ = strconv.Atoi(os.Args[2])
	}
	if len(os.Args) > 3 && os.Args[3] == "quiet" {
		quiet = true
	}
	deadline := time.Now().Add(time.Duration(dur) * time.Millisecond)
	stop := make(chan struct{})

	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sink += spin(1000)
			case <-stop:
				return
			}
		}
	}()

	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
		close(pong)
	}()
	go func() {
		v := 0
		for time.Now().Before(deadline) {
			ping <- v
			v = <-pong
			time.Sleep(200 * time.Microsecond)
		}
		close(ping)
	}()

	var mu sync.Mutex
	round := 0
	for time.Now().Before(deadline) {
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				var local uint64
				for k := 0; k < 4; k++ {
					local += spin(20000 + 500*w)
					runtime.Gosched()
				}
				mu.Lock()
				sink += local
				mu.Unlock()
			}(w)
		}
		wg.Wait()
		round++
		if !quiet && round%10 == 0 {
			fmt.Fprintf(os.Stderr, "busy: round %d done, sink=%d\n", round, sink%1000)
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	if !quiet {
		fmt.Fprintf(os.Stderr, "busy: finished %d rounds\n", round)
	}
}
