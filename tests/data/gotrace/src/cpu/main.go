// Multi-P CPU workload: GOMAXPROCS=4, worker goroutines hashing in rounds,
// synchronised by a WaitGroup and a mutex so there is blocking and stealing.
package main

import (
	"crypto/sha256"
	"os"
	"runtime"
	"runtime/trace"
	"strconv"
	"sync"
)

func main() {
	runtime.GOMAXPROCS(4)
	rounds := 20
	if len(os.Args) > 2 {
		rounds, _ = strconv.Atoi(os.Args[2])
	}
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := trace.Start(f); err != nil {
		panic(err)
	}
	var mu sync.Mutex
	sum := 0
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				b := []byte(strconv.Itoa(w))
				for k := 0; k < 200; k++ {
					h := sha256.Sum256(b)
					b = h[:]
					if k%50 == 0 {
						runtime.Gosched()
					}
				}
				mu.Lock()
				sum += int(b[0])
				mu.Unlock()
			}(w)
		}
		wg.Wait()
	}
	trace.Stop()
	if err := f.Close(); err != nil {
		panic(err)
	}
}
