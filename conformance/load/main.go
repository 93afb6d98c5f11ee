// Command keysimload keeps Asynq busy on one Redis database through its public API only
// (Client, Server, Inspector), and logs every task it enqueues and every time a handler runs, so
// that a test can tell whether anything else (keysim audit --apply) destroyed a healthy task.
//
// It is built like the conformance driver (conformance/build.sh v0.26.0 load): compiled inside a
// downloaded copy of github.com/hibiken/asynq with `go build -overlay`. Nothing of Asynq is
// copied into asynq-keysim.
//
// Usage: keysimload -redis redis://host:port/db -queue busy -seconds 20 -rate 100
//
// With -role server, client or inspect it plays one part of that run only, so that several OS
// processes can share the work and be killed one by one (keysim soak; see soak.go). The default
// role, all, is the one process described here.
//
// Tasks are enqueued at a steady rate, cycling through a mix of options (see mixes): plain,
// retried twice before succeeding, unique, scheduled, kept as completed (retention, with a
// result), archived at the first failure, grouped (aggregated by the server), unique and
// scheduled. The payload of each task is a marker ("m<n>") that the handler logs back; an
// aggregated task's payload is its members' markers joined by ",".
//
// Output, JSON lines on stdout:
//
//	{"ev":"start"}
//	{"ev":"enqueued","id":"…","mix":"retry","marker":"m3"}
//	{"ev":"handled","id":"…","markers":["m3"],"retried":2,"ok":true}
//	{"ev":"drained","seconds":3.2}      (or {"ev":"undrained", …} when the queue did not empty)
//	{"ev":"final","tasks":{"<id>":{"state":"completed","result":"ok:m6"}, …},"queue":{…}}
//
// "final" gives, for every task enqueued, its state according to Inspector.GetTaskInfo after the
// server shut down ("missing" when Asynq reports no such task), and the queue's counts.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

// mixes is the enqueue cycle; the names are what the test expects of each task.
var mixes = []string{"plain", "retry", "unique", "scheduled", "retention", "archive", "group",
	"plain", "unique-scheduled", "retry"}

type emitter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (e *emitter) emit(v map[string]any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enc.Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "keysimload: stdout:", err)
		os.Exit(1)
	}
}

func main() {
	url := flag.String("redis", "", "redis://host:port/db")
	queue := flag.String("queue", "busy", "queue to use")
	seconds := flag.Float64("seconds", 20, "how long to enqueue")
	rate := flag.Float64("rate", 100, "tasks enqueued per second")
	drain := flag.Duration("drain", 40*time.Second, "how long to wait for the queue to empty")
	role := flag.String("role", "all", "all, or one part of it: server, client or inspect (soak.go)")
	proc := flag.String("proc", "", "server role: the name this process logs its handler runs under")
	concurrency := flag.Int("concurrency", 8, "server role: Asynq's Config.Concurrency")
	work := flag.Duration("work", 0, "server role: how long each handler call works")
	flag.Parse()
	var err error
	switch *role {
	case "all":
		err = run(*url, *queue, time.Duration(*seconds*float64(time.Second)), *rate, *drain)
	case "server":
		err = serve(*url, *queue, *concurrency, handlerOptions{proc: *proc, work: *work})
	case "client":
		err = enqueueOnly(*url, *queue, time.Duration(*seconds*float64(time.Second)), *rate)
	case "inspect":
		err = inspect(*url, *queue)
	default:
		err = fmt.Errorf("-role must be all, server, client or inspect, got %q", *role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "keysimload:", err)
		os.Exit(1)
	}
}

func run(url, queue string, duration time.Duration, rate float64, drain time.Duration) error {
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return err
	}
	if rate <= 0 {
		return errors.New("-rate must be positive")
	}
	out := &emitter{enc: json.NewEncoder(os.Stdout)}
	srv := asynq.NewServer(opt, serverConfig(queue, 8))
	if err := srv.Start(handler(out, handlerOptions{})); err != nil {
		return err
	}
	out.emit(map[string]any{"ev": "start"})
	client := asynq.NewClient(opt)
	defer client.Close()
	ids, err := enqueueAll(client, out, queue, duration, rate, mixes, nil)
	if err != nil {
		srv.Shutdown()
		return err
	}
	inspector := asynq.NewInspector(opt)
	defer inspector.Close()
	waitDrained(inspector, out, queue, drain)
	srv.Shutdown()
	return final(inspector, out, queue, ids)
}

// serverConfig is the server of every role: short intervals, so that retries, scheduled tasks,
// aggregation and the janitor all happen within seconds.
func serverConfig(queue string, concurrency int) asynq.Config {
	return asynq.Config{
		Concurrency:              concurrency,
		Queues:                   map[string]int{queue: 1},
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 300 * time.Millisecond },
		DelayedTaskCheckInterval: 500 * time.Millisecond,
		TaskCheckInterval:        100 * time.Millisecond,
		GroupGracePeriod:         time.Second,
		GroupMaxSize:             4,
		GroupAggregator:          asynq.GroupAggregatorFunc(aggregate),
		JanitorInterval:          time.Second,
		ShutdownTimeout:          5 * time.Second,
		LogLevel:                 asynq.ErrorLevel,
	}
}

// enqueueAll enqueues cycle's mixes at rate for duration; after each enqueue, after(mix, id)
// (when given) may act on the task, e.g. delete it.
func enqueueAll(client *asynq.Client, out *emitter, queue string, duration time.Duration,
	rate float64, cycle []string, after func(mix, id string) error) ([]string, error) {
	var ids []string
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	deadline := time.Now().Add(duration)
	for n := 0; time.Now().Before(deadline); n++ {
		<-tick.C
		mix := cycle[n%len(cycle)]
		marker := fmt.Sprintf("m%d", n)
		info, err := client.Enqueue(asynq.NewTask("load:"+mix, []byte(marker)), options(mix, queue, n)...)
		if err != nil {
			return nil, fmt.Errorf("enqueue %s %s: %w", mix, marker, err)
		}
		ids = append(ids, info.ID)
		ev := map[string]any{"ev": "enqueued", "id": info.ID, "mix": mix, "marker": marker}
		if info.Group != "" {
			ev["group"] = info.Group
		}
		out.emit(ev)
		if after != nil {
			if err := after(mix, info.ID); err != nil {
				return nil, err
			}
		}
	}
	return ids, nil
}

func options(mix, queue string, n int) []asynq.Option {
	opts := []asynq.Option{asynq.Queue(queue)}
	switch mix {
	case "retry":
		opts = append(opts, asynq.MaxRetry(5))
	case "unique":
		opts = append(opts, asynq.Unique(time.Minute))
	case "scheduled":
		opts = append(opts, asynq.ProcessIn(time.Duration(1+n%3)*time.Second))
	case "retention":
		opts = append(opts, asynq.Retention(time.Hour))
	case "archive":
		opts = append(opts, asynq.MaxRetry(0))
	case "group":
		opts = append(opts, asynq.Group(fmt.Sprintf("g%d", n%3)))
	case "unique-scheduled":
		opts = append(opts, asynq.Unique(time.Minute), asynq.ProcessIn(2*time.Second))
	case "delete":
		opts = append(opts, asynq.ProcessIn(time.Hour)) // deleted by the client before it is due
	}
	return opts
}

func aggregate(group string, tasks []*asynq.Task) *asynq.Task {
	markers := make([]string, len(tasks))
	for i, t := range tasks {
		markers[i] = string(t.Payload())
	}
	return asynq.NewTask("load:batch", []byte(strings.Join(markers, ",")))
}

// handlerOptions: proc, when set, is logged with each run, and a "running" event precedes the
// work (so a run a kill cuts short shows); work is how long each call takes.
type handlerOptions struct {
	proc string
	work time.Duration
}

func handler(out *emitter, o handlerOptions) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		retried, _ := asynq.GetRetryCount(ctx)
		markers := strings.Split(string(t.Payload()), ",")
		if o.proc != "" {
			out.emit(map[string]any{"ev": "running", "id": id, "markers": markers, "retried": retried,
				"proc": o.proc})
		}
		if o.work > 0 {
			select {
			case <-time.After(o.work):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var err error
		switch t.Type() {
		case "load:retry":
			if retried < 2 {
				err = errors.New("planned failure")
			}
		case "load:archive":
			err = errors.New("planned failure, archived")
		case "load:retention":
			_, err = t.ResultWriter().Write([]byte("ok:" + markers[0]))
		}
		ev := map[string]any{"ev": "handled", "id": id, "markers": markers, "retried": retried,
			"ok": err == nil}
		if o.proc != "" {
			ev["proc"] = o.proc
		}
		out.emit(ev)
		return err
	}
}

func waitDrained(inspector *asynq.Inspector, out *emitter, queue string, limit time.Duration) {
	start := time.Now()
	for {
		q, err := inspector.GetQueueInfo(queue)
		busy := err != nil || q.Pending+q.Active+q.Scheduled+q.Retry+q.Aggregating > 0
		if !busy || time.Since(start) > limit {
			ev := map[string]any{"ev": "drained", "seconds": time.Since(start).Seconds()}
			if busy {
				ev["ev"] = "undrained"
			}
			out.emit(ev)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func final(inspector *asynq.Inspector, out *emitter, queue string, ids []string) error {
	tasks := make(map[string]any, len(ids))
	for _, id := range ids {
		info, err := inspector.GetTaskInfo(queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			tasks[id] = map[string]any{"state": "missing"}
		case err != nil:
			return fmt.Errorf("GetTaskInfo %s: %w", id, err)
		default:
			tasks[id] = map[string]any{"state": info.State.String(), "result": string(info.Result)}
		}
	}
	q, err := inspector.GetQueueInfo(queue)
	if err != nil {
		return fmt.Errorf("GetQueueInfo: %w", err)
	}
	out.emit(map[string]any{"ev": "final", "tasks": tasks, "queue": map[string]int{
		"pending": q.Pending, "active": q.Active, "scheduled": q.Scheduled, "retry": q.Retry,
		"archived": q.Archived, "completed": q.Completed, "aggregating": q.Aggregating,
		"processed_total": q.ProcessedTotal}})
	return nil
}
