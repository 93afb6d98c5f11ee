// The roles of keysim soak (harness/soak.py): one run of main.go split over OS processes, so
// that servers can be SIGKILLed and restarted while a client keeps enqueuing.
//
//	-role server  -proc p1.2 -concurrency 4 -work 50ms   an Asynq Server until SIGTERM/SIGINT:
//	    {"ev":"start","proc":"p1.2"}
//	    {"ev":"running","id":"…","markers":["m3"],"retried":0,"proc":"p1.2"}   (handler entered)
//	    {"ev":"handled","id":"…","markers":["m3"],"retried":0,"ok":true,"proc":"p1.2"}
//	    {"ev":"stopped","proc":"p1.2"}                  (after a graceful Server.Shutdown)
//	-role client  -seconds 20 -rate 50                  enqueues soakMixes, then exits:
//	    {"ev":"enqueued","id":"…","mix":"group","marker":"m6","group":"g0"}
//	    {"ev":"deleted","id":"…","by":"Inspector.DeleteTask"}
//	-role inspect                                       task ids on stdin, one a line:
//	    {"ev":"final","tasks":{"<id>":{"state":…,"result":…,"last_err":…,"group":…}},
//	     "listed":{"archived":[ids…],…},"queue":{…}}
//	    (a task GetTaskInfo fails on: {"state":"unreadable","error":…}; when GetQueueInfo
//	    fails, "queue_error" instead of "queue")
//
// "listed" holds every id each of Inspector's List*Tasks reports (aggregating: of every group),
// so that a task nobody enqueued, or one listed in two states, shows.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
)

// soakMixes is mixes plus a task the client deletes through the Inspector (a named operation).
var soakMixes = append(append([]string{}, mixes...), "delete")

func serve(url, queue string, concurrency int, o handlerOptions) error {
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return err
	}
	out := &emitter{enc: json.NewEncoder(os.Stdout)}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	srv := asynq.NewServer(opt, serverConfig(queue, concurrency))
	if err := srv.Start(handler(out, o)); err != nil {
		return err
	}
	out.emit(map[string]any{"ev": "start", "proc": o.proc})
	<-stop
	srv.Shutdown()
	out.emit(map[string]any{"ev": "stopped", "proc": o.proc})
	return nil
}

func enqueueOnly(url, queue string, duration time.Duration, rate float64) error {
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return err
	}
	if rate <= 0 {
		return errors.New("-rate must be positive")
	}
	out := &emitter{enc: json.NewEncoder(os.Stdout)}
	client := asynq.NewClient(opt)
	defer client.Close()
	inspector := asynq.NewInspector(opt)
	defer inspector.Close()
	deleteSome := func(mix, id string) error {
		if mix != "delete" {
			return nil
		}
		if err := inspector.DeleteTask(queue, id); err != nil {
			return fmt.Errorf("DeleteTask %s: %w", id, err)
		}
		out.emit(map[string]any{"ev": "deleted", "id": id, "by": "Inspector.DeleteTask"})
		return nil
	}
	_, err = enqueueAll(client, out, queue, duration, rate, soakMixes, deleteSome)
	return err
}

func inspect(url, queue string) error {
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return err
	}
	out := &emitter{enc: json.NewEncoder(os.Stdout)}
	inspector := asynq.NewInspector(opt)
	defer inspector.Close()
	tasks := map[string]any{}
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		id := lines.Text()
		if id == "" {
			continue
		}
		info, err := inspector.GetTaskInfo(queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			tasks[id] = map[string]any{"state": "missing"}
		case err != nil: // Asynq's own answer about a broken task: for the books, not a crash
			tasks[id] = map[string]any{"state": "unreadable", "error": err.Error()}
		default:
			tasks[id] = map[string]any{"state": info.State.String(), "result": string(info.Result),
				"last_err": info.LastErr, "group": info.Group, "retried": info.Retried}
		}
	}
	if err := lines.Err(); err != nil {
		return err
	}
	listed, err := listAll(inspector, queue)
	if err != nil {
		return err
	}
	ev := map[string]any{"ev": "final", "tasks": tasks, "listed": listed}
	// GetQueueInfo fails on a dangling index id in Asynq v0.26.0 (its memory sample does
	// arithmetic on a nil MEMORY USAGE, BZ-21): reported, the books go on without it.
	if q, err := inspector.GetQueueInfo(queue); err != nil {
		ev["queue_error"] = err.Error()
	} else {
		ev["queue"] = map[string]int{"pending": q.Pending, "active": q.Active,
			"scheduled": q.Scheduled, "retry": q.Retry, "archived": q.Archived,
			"completed": q.Completed, "aggregating": q.Aggregating}
	}
	out.emit(ev)
	return nil
}

type lister func(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)

// listAll: the ids of every task Inspector lists, by state.
func listAll(inspector *asynq.Inspector, queue string) (map[string][]string, error) {
	listed := map[string][]string{}
	for state, list := range map[string]lister{
		"pending": inspector.ListPendingTasks, "active": inspector.ListActiveTasks,
		"scheduled": inspector.ListScheduledTasks, "retry": inspector.ListRetryTasks,
		"archived": inspector.ListArchivedTasks, "completed": inspector.ListCompletedTasks,
	} {
		ids, err := pages(func(opts ...asynq.ListOption) ([]*asynq.TaskInfo, error) {
			return list(queue, opts...)
		})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", state, err)
		}
		listed[state] = ids
	}
	groups, err := inspector.Groups(queue)
	if err != nil {
		return nil, fmt.Errorf("Groups: %w", err)
	}
	listed["aggregating"] = []string{}
	for _, g := range groups {
		ids, err := pages(func(opts ...asynq.ListOption) ([]*asynq.TaskInfo, error) {
			return inspector.ListAggregatingTasks(queue, g.Group, opts...)
		})
		if err != nil {
			return nil, fmt.Errorf("list aggregating %s: %w", g.Group, err)
		}
		listed["aggregating"] = append(listed["aggregating"], ids...)
	}
	return listed, nil
}

func pages(list func(opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)) ([]string, error) {
	const size = 1000
	ids := []string{}
	for page := 1; ; page++ {
		infos, err := list(asynq.PageSize(size), asynq.Page(page))
		if err != nil {
			return nil, err
		}
		for _, info := range infos {
			ids = append(ids, info.ID)
		}
		if len(infos) < size {
			return ids, nil
		}
	}
}
