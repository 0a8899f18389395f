// A tiny net/http server on 127.0.0.1 and a client in the same program making
// a few hundred requests, so the trace shows net poller wake-ups; the clients annotate
// their work with a task, regions and logs.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/trace"
	"strconv"
	"sync"
)

func main() {
	runtime.GOMAXPROCS(2)
	n := 300
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", r.URL.Path)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String() + "/"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, Proxy: nil}}

	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := trace.Start(f); err != nil {
		panic(err)
	}
	var wg sync.WaitGroup
	per := n / 4
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			// user annotations, so the trace has tasks, regions and logs too
			ctx, task := trace.NewTask(context.Background(), "client")
			defer task.End()
			for i := 0; i < per; i++ {
				path := strconv.Itoa(c*per + i)
				if i%10 == 0 {
					trace.Log(ctx, "path", path)
				}
				trace.WithRegion(ctx, "get", func() {
					resp, err := client.Get(url + path)
					if err != nil {
						panic(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				})
			}
		}(c)
	}
	wg.Wait()
	trace.Stop()
	if err := f.Close(); err != nil {
		panic(err)
	}
	srv.Close()
}
