// A small net/http server for kubewire's net poller lab test (standard library only).
//
// It traces itself with runtime/trace from start until -requests requests were served or
// -max elapsed, writes the trace to -trace (via a temporary name, renamed when complete, so
// a reader never sees half a file), then keeps serving until -life ends, so the lab's
// readiness checks and teardown find a normal server.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime/trace"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	out := flag.String("trace", "", "where to write the runtime/trace file")
	requests := flag.Int64("requests", 200, "stop tracing after this many requests")
	maxTrace := flag.Duration("max", 20*time.Second, "stop tracing after this long anyway")
	life := flag.Duration("life", 120*time.Second, "exit after this long")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	tmp := *out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		log.Fatal(err)
	}
	if err := trace.Start(f); err != nil {
		log.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			trace.Stop()
			if err := f.Close(); err != nil {
				log.Fatal(err)
			}
			if err := os.Rename(tmp, *out); err != nil {
				log.Fatal(err)
			}
			log.Printf("trace written to %s", *out)
		})
	}
	time.AfterFunc(*maxTrace, stop)
	time.AfterFunc(*life, func() { os.Exit(0) })

	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// marks the goroutine that handled it, for the test to find in the trace
		trace.Log(r.Context(), "path", r.URL.Path)
		// a little work per request, so handlers hold their P for a moment
		sum := 0
		for i := 0; i < 20000; i++ {
			sum += i * len(r.URL.Path)
		}
		fmt.Fprintf(w, "hello %s %d\n", r.URL.Path, sum%7)
		if served.Add(1) == *requests {
			go stop()
		}
	})
	log.Printf("serving on %s", ln.Addr())
	log.Fatal((&http.Server{Handler: mux}).Serve(ln))
}
