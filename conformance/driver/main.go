// Command keysimdriver applies asynq-keysim's operations through Asynq's own Redis layer.
//
// It is compiled *inside* a downloaded copy of github.com/hibiken/asynq (see
// conformance/build.sh, which adds this directory to the module with `go build -overlay`), so it
// can import Asynq's internal packages. Nothing of Asynq is copied into asynq-keysim.
//
// Usage: keysimdriver <redis-url>
//
// <redis-url> is redis://host:port/db for one server, or redis+cluster://host:port (any node of
// a Redis Cluster, database 0) for a cluster: every call, Asynq's and the driver's own, then goes
// through go-redis's ClusterClient, which routes each command by its keys' slot. A cluster node's
// MOVED, ASK, CROSSSLOT, TRYAGAIN or CLUSTERDOWN reply (or a script's access to a key of another
// slot) is never followed or hidden: the call answers {"ok": false, "kind": "misrouted"}.
//
// Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
//
//	{"op": "enqueue", "now": <virtual Unix ns>, "msg": "<base64 protobuf TaskMessage>"}
//	-> {"ok": true, "result": null}
//	-> {"ok": false, "kind": "conflict", "error": "..."}
//
// Every request carries the virtual time; the driver sets Asynq's simulated clock to it (in UTC)
// before calling rdb.RDB. "kind" is one of asynq-keysim's outcomes (model/transitions.py:
// not_found, conflict, duplicate, task_active, already, queue_not_empty, queue_not_found), or
// "script_error" for any other Asynq error (a script that failed part-way), "bad_request", or
// "unsupported" for an operation the release does not have ("features" says which it has).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq/internal/base"
	"github.com/hibiken/asynq/internal/errors"
	"github.com/hibiken/asynq/internal/rdb"
	"github.com/hibiken/asynq/internal/timeutil"
)

// ttlShiftSeconds moves absolute expiry times (EXPIREAT of the daily counters) into the shifted
// time base asynq-keysim's brokers use: PEXPIREAT(virtual deadline + 2e12 ms).
const ttlShiftSeconds = 2_000_000_000

// statsTTL is Asynq's daily-counter lifetime (rdb.statsTTL, unexported).
const statsTTL = 90 * 24 * time.Hour

type request struct {
	Op        string          `json:"op"`
	Now       int64           `json:"now"`
	Queue     string          `json:"queue"`
	Msg       []byte          `json:"msg"`
	TTL       int64           `json:"ttl"`
	ProcessAt int64           `json:"process_at"`
	Group     string          `json:"group"`
	RetryAt   int64           `json:"retry_at"`
	Error     string          `json:"error"`
	IsFailure bool            `json:"is_failure"`
	Cutoff    int64           `json:"cutoff"`
	IDs       []string        `json:"ids"`
	ID        string          `json:"id"`
	SetID     string          `json:"set_id"`
	Grace     int64           `json:"grace"`
	MaxDelay  int64           `json:"max_delay"`
	MaxSize   int             `json:"max_size"`
	Batch     int             `json:"batch"`
	Data      []byte          `json:"data"`
	State     string          `json:"state"`
	Force     bool            `json:"force"`
	Args      json.RawMessage `json:"args"` // component ops (components.go), decoded by parseArgs
}

type response struct {
	OK     bool        `json:"ok"`
	Result interface{} `json:"result"`
	Kind   string      `json:"kind,omitempty"`
	Error  string      `json:"error,omitempty"`
}

// aggregationSet is read_aggregation_set's answer.
type aggregationSet struct {
	Msgs     [][]byte `json:"msgs"`
	Deadline int64    `json:"deadline"`
}

// driver holds one RDB (recreated by "reset", which also empties its queuesPublished cache).
type driver struct {
	raw   rawClient
	clock *timeutil.SimulatedClock
	r     *rdb.RDB
	// misrouted records the cluster nodes' misrouting replies (nil on one server).
	misrouted *misroutes
}

// rawClient is what the driver needs besides RDB: plain reads to compute the counts Asynq's
// methods do not return. Implemented per go-redis major version (redis_v8.go / redis_v9.go).
type rawClient interface {
	rdbClient() *rdb.RDB
	zcount(key, min, max string) (int64, error)
	hasScore(key, member string) (bool, error)
	isNil(err error) bool
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: keysimdriver <redis-url>")
		os.Exit(2)
	}
	clock := timeutil.NewSimulatedClock(time.Unix(0, 0).UTC())
	seed, cluster := parseTarget(os.Args[1])
	var misrouted *misroutes
	if cluster {
		misrouted = &misroutes{}
	}
	raw, err := openClient(seed, clock, misrouted)
	if err != nil {
		fmt.Fprintf(os.Stderr, "keysimdriver: %v\n", err)
		os.Exit(2)
	}
	d := &driver{raw: raw, clock: clock, misrouted: misrouted}
	d.reset()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for in.Scan() {
		var req request
		var resp response
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			resp = response{Kind: "bad_request", Error: err.Error()}
		} else {
			resp = d.handle(&req)
		}
		if err := enc.Encode(resp); err != nil {
			fmt.Fprintf(os.Stderr, "keysimdriver: %v\n", err)
			os.Exit(1)
		}
		if err := out.Flush(); err != nil {
			os.Exit(1)
		}
	}
}

func (d *driver) reset() {
	d.r = d.raw.rdbClient()
	d.r.SetClock(d.clock)
}

func (d *driver) handle(req *request) (resp response) {
	defer func() {
		if p := recover(); p != nil {
			resp = response{Kind: "script_error", Error: fmt.Sprintf("panic: %v", p)}
		}
	}()
	// UTC: Asynq computes the archive cutoff with AddDate, which is DST-dependent in local time.
	d.clock.SetTime(time.Unix(0, req.Now).UTC())
	result, err := d.dispatch(req)
	if reply := d.misrouted.take(); reply != "" {
		return response{Kind: "misrouted", Error: reply}
	}
	if err != nil {
		// A script error stays a script error (e.g. DeleteTask on a hash its state's index does
		// not hold): the differential test compares answers by their exact kind.
		return response{Kind: d.classify(err), Error: err.Error()}
	}
	return response{OK: true, Result: result}
}

func (d *driver) dispatch(req *request) (interface{}, error) {
	if fn, ok := clientOps[req.Op]; ok {
		msg, err := decode(req.Msg)
		if err != nil {
			return nil, err
		}
		return nil, fn(d, req, msg)
	}
	if fn, ok := otherOps[req.Op]; ok {
		return fn(d, req)
	}
	return nil, badRequest{fmt.Sprintf("unknown op %q", req.Op)}
}

type badRequest struct{ text string }

func (b badRequest) Error() string { return b.text }

// unsupported: an operation this Asynq release does not have (see nogroups.go).
type unsupported struct{ text string }

func (u unsupported) Error() string { return u.text }

func decode(data []byte) (*base.TaskMessage, error) {
	if data == nil {
		return nil, badRequest{"msg is required"}
	}
	msg, err := base.DecodeMessage(data)
	if err != nil {
		return nil, badRequest{fmt.Sprintf("msg is not a TaskMessage: %v", err)}
	}
	return msg, nil
}

func ctx() context.Context { return context.Background() }

func seconds(n int64) time.Duration { return time.Duration(n) * time.Second }

// clientOps take a message: the enqueue family and the processor's outcomes.
var clientOps = map[string]func(*driver, *request, *base.TaskMessage) error{
	"enqueue": func(d *driver, _ *request, m *base.TaskMessage) error { return d.r.Enqueue(ctx(), m) },
	"enqueue_unique": func(d *driver, q *request, m *base.TaskMessage) error {
		return d.r.EnqueueUnique(ctx(), m, seconds(q.TTL))
	},
	"schedule": func(d *driver, q *request, m *base.TaskMessage) error {
		return d.r.Schedule(ctx(), m, time.Unix(q.ProcessAt, 0))
	},
	"schedule_unique": func(d *driver, q *request, m *base.TaskMessage) error {
		return d.r.ScheduleUnique(ctx(), m, time.Unix(q.ProcessAt, 0), seconds(q.TTL))
	},
	"done":             func(d *driver, _ *request, m *base.TaskMessage) error { return d.r.Done(ctx(), m) },
	"mark_as_complete": func(d *driver, _ *request, m *base.TaskMessage) error { return d.r.MarkAsComplete(ctx(), m) },
	"requeue":          func(d *driver, _ *request, m *base.TaskMessage) error { return d.r.Requeue(ctx(), m) },
	"retry": func(d *driver, q *request, m *base.TaskMessage) error {
		return d.r.Retry(ctx(), m, time.Unix(q.RetryAt, 0), q.Error, q.IsFailure)
	},
	"archive": func(d *driver, q *request, m *base.TaskMessage) error { return d.r.Archive(ctx(), m, q.Error) },
}

// otherOps take names and numbers; each returns its JSON result.
var otherOps = map[string]func(*driver, *request) (interface{}, error){
	"ping":                           func(*driver, *request) (interface{}, error) { return "pong", nil },
	"features":                       func(*driver, *request) (interface{}, error) { return releaseFeatures, nil },
	"reset":                          func(d *driver, _ *request) (interface{}, error) { d.reset(); return nil, nil },
	"dequeue":                        (*driver).dequeue,
	"forward_if_ready":               (*driver).forward,
	"delete_expired_completed_tasks": (*driver).janitor,
	"list_lease_expired":             (*driver).listLeaseExpired,
	"extend_lease":                   (*driver).extendLease,
	"write_result": func(d *driver, q *request) (interface{}, error) {
		return d.r.WriteResult(q.Queue, q.ID, q.Data)
	},
	"pause":       func(d *driver, q *request) (interface{}, error) { return nil, d.r.Pause(q.Queue) },
	"unpause":     func(d *driver, q *request) (interface{}, error) { return nil, d.r.Unpause(q.Queue) },
	"delete_task": func(d *driver, q *request) (interface{}, error) { return nil, d.r.DeleteTask(q.Queue, q.ID) },
	"archive_task": func(d *driver, q *request) (interface{}, error) {
		return nil, d.r.ArchiveTask(q.Queue, q.ID)
	},
	"run_task":          func(d *driver, q *request) (interface{}, error) { return nil, d.r.RunTask(q.Queue, q.ID) },
	"delete_all_tasks":  (*driver).deleteAll,
	"archive_all_tasks": (*driver).archiveAll,
	"run_all_tasks":     (*driver).runAll,
	"remove_queue": func(d *driver, q *request) (interface{}, error) {
		return nil, d.r.RemoveQueue(q.Queue, q.Force)
	},
}

func (d *driver) dequeue(q *request) (interface{}, error) {
	msg, _, err := d.r.Dequeue(q.Queue)
	if errors.Is(err, errors.ErrNoProcessableTask) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return base.EncodeMessage(msg)
}

// due counts the members of key scored at or before now: what the next Asynq call will take.
func (d *driver) due(key string) (int64, error) {
	return d.raw.zcount(key, "-inf", fmt.Sprint(d.clock.Now().Unix()))
}

// forward: RDB.ForwardIfReady moves every due scheduled and retry id (dangling ones included),
// so the number moved is the number due before the call.
func (d *driver) forward(q *request) (interface{}, error) {
	n, err := d.dueSum(base.ScheduledKey(q.Queue), base.RetryKey(q.Queue))
	if err != nil {
		return nil, err
	}
	return n, d.r.ForwardIfReady(q.Queue)
}

func (d *driver) dueSum(keys ...string) (int64, error) {
	var total int64
	for _, key := range keys {
		n, err := d.due(key)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func (d *driver) janitor(q *request) (interface{}, error) {
	n, err := d.due(base.CompletedKey(q.Queue))
	if err != nil {
		return nil, err
	}
	return n, deleteExpiredCompleted(d.r, q.Queue, q.Batch)
}

func (d *driver) listLeaseExpired(q *request) (interface{}, error) {
	msgs, err := d.r.ListLeaseExpired(time.Unix(q.Cutoff, 0), q.Queue)
	if err != nil {
		return nil, err
	}
	return encodeAll(msgs)
}

func encodeAll(msgs []*base.TaskMessage) ([][]byte, error) {
	out := [][]byte{}
	for _, m := range msgs {
		data, err := base.EncodeMessage(m)
		if err != nil {
			return nil, err
		}
		out = append(out, data)
	}
	return out, nil
}

// extendLease: ExtendLease is ZADD XX, so the ids that count are those with a lease before.
func (d *driver) extendLease(q *request) (interface{}, error) {
	if len(q.IDs) == 0 {
		return 0, nil // ZADD needs at least one member; the heartbeater never sends none
	}
	n := 0
	for _, id := range q.IDs {
		ok, err := d.raw.hasScore(base.LeaseKey(q.Queue), id)
		if err != nil {
			return nil, err
		}
		if ok {
			n++
		}
	}
	_, err := d.r.ExtendLease(q.Queue, q.IDs...)
	return n, err
}

func (d *driver) deleteAll(q *request) (interface{}, error) {
	switch q.State {
	case "pending":
		return d.r.DeleteAllPendingTasks(q.Queue)
	case "scheduled":
		return d.r.DeleteAllScheduledTasks(q.Queue)
	case "retry":
		return d.r.DeleteAllRetryTasks(q.Queue)
	case "archived":
		return d.r.DeleteAllArchivedTasks(q.Queue)
	case "completed":
		return d.r.DeleteAllCompletedTasks(q.Queue)
	case "aggregating":
		return deleteAllAggregating(d, q)
	}
	return nil, badRequest{fmt.Sprintf("delete_all_tasks: no state %q", q.State)}
}

func (d *driver) archiveAll(q *request) (interface{}, error) {
	switch q.State {
	case "pending":
		return d.r.ArchiveAllPendingTasks(q.Queue)
	case "scheduled":
		return d.r.ArchiveAllScheduledTasks(q.Queue)
	case "retry":
		return d.r.ArchiveAllRetryTasks(q.Queue)
	case "aggregating":
		return archiveAllAggregating(d, q)
	}
	return nil, badRequest{fmt.Sprintf("archive_all_tasks: no state %q", q.State)}
}

func (d *driver) runAll(q *request) (interface{}, error) {
	switch q.State {
	case "scheduled":
		return d.r.RunAllScheduledTasks(q.Queue)
	case "retry":
		return d.r.RunAllRetryTasks(q.Queue)
	case "archived":
		return d.r.RunAllArchivedTasks(q.Queue)
	case "aggregating":
		return runAllAggregating(d, q)
	}
	return nil, badRequest{fmt.Sprintf("run_all_tasks: no state %q", q.State)}
}

// classify maps an Asynq error onto asynq-keysim's outcome names.
func (d *driver) classify(err error) string {
	var bad badRequest
	if errors.As(err, &bad) {
		return "bad_request"
	}
	var missing unsupported
	if errors.As(err, &missing) {
		return "unsupported"
	}
	text := err.Error()
	switch {
	case errors.Is(err, errors.ErrTaskIdConflict):
		return "conflict"
	case errors.Is(err, errors.ErrDuplicateTask):
		return "duplicate"
	case errors.IsQueueNotFound(err):
		return "queue_not_found"
	case errors.IsQueueNotEmpty(err):
		return "queue_not_empty"
	case errors.IsTaskNotFound(err), strings.HasSuffix(text, "NOT FOUND"):
		return "not_found"
	case d.raw.isNil(err): // ReadAggregationSet: ZSCORE of a set that is not registered
		return "not_found"
	case errors.IsTaskAlreadyArchived(err), strings.Contains(text, "already in pending state"),
		strings.Contains(text, "is already paused"), strings.Contains(text, "is not paused"):
		return "already"
	case strings.Contains(text, "already running"), strings.Contains(text, "in active state"),
		strings.Contains(text, "with active tasks"):
		return "task_active"
	}
	return "script_error"
}

// shiftStatsExpiry rewrites, in place, the stats-expiry argument of Asynq's counting scripts
// (done, markAsComplete, retry, archive): EXPIREAT(now + 90 days) becomes EXPIREAT(now + 90 days
// + ttlShiftSeconds), asynq-keysim's time base for TTL keys. The argument is found by the
// script's key layout and checked against the expected value, so nothing else is ever touched.
func shiftStatsExpiry(args []interface{}, now time.Time) error {
	if len(args) < 3 {
		return nil
	}
	name, _ := args[0].(string)
	if name = strings.ToLower(name); name != "evalsha" && name != "eval" {
		return nil
	}
	numKeys, ok := args[2].(int)
	if !ok || len(args) < 3+numKeys {
		return nil
	}
	keys := make([]string, numKeys)
	for i := range keys {
		keys[i], _ = args[3+i].(string)
	}
	argv := args[3+numKeys:]
	pos := statsArgPosition(keys)
	if pos == 0 {
		return nil
	}
	if pos < 0 {
		return fmt.Errorf("keysimdriver: unknown counting script with KEYS %v", keys)
	}
	want := now.Add(statsTTL).Unix()
	if pos > len(argv) {
		return fmt.Errorf("keysimdriver: stats script has no ARGV[%d]", pos)
	}
	got, ok := argv[pos-1].(int64)
	if !ok || got != want {
		return fmt.Errorf("keysimdriver: stats expiry ARGV[%d] = %v, want %d", pos, argv[pos-1], want)
	}
	argv[pos-1] = got + ttlShiftSeconds
	return nil
}

// statsArgPosition: the 1-based ARGV index of the stats expiry for a counting script's KEYS, or
// 0 when the script counts nothing.
func statsArgPosition(keys []string) int {
	daily := -1
	for i, k := range keys {
		if isDailyKey(k) {
			daily = i
			break
		}
	}
	switch {
	case daily < 0:
		return 0
	case daily == 3: // done: active, lease, task, processed:<date>
		return 2
	case len(keys) > 2 && strings.HasSuffix(keys[2], ":completed"): // markAsComplete
		return 2
	case len(keys) > 3 && strings.HasSuffix(keys[3], ":retry"): // retry
		return 4
	case len(keys) > 3 && strings.HasSuffix(keys[3], ":archived"): // archive
		return 6
	}
	return -1 // an unknown counting script: fail loudly (checked by the caller)
}

func isDailyKey(key string) bool {
	i := strings.LastIndex(key, ":processed:")
	if i < 0 {
		return false
	}
	_, err := time.Parse("2006-01-02", key[i+len(":processed:"):])
	return err == nil
}

// clusterScheme names a Redis Cluster: redis+cluster://host:port is any node of it.
const clusterScheme = "redis+cluster://"

// parseTarget: the redis:// URL to connect with, and whether it names a cluster's node.
func parseTarget(url string) (string, bool) {
	if !strings.HasPrefix(url, clusterScheme) {
		return url, false
	}
	return "redis://" + strings.TrimPrefix(url, clusterScheme), true
}

// checkClusterDB refuses a cluster URL that names a database other than 0 (a cluster has no
// other), after the version file parsed it.
func checkClusterDB(db int) error {
	if db != 0 {
		return fmt.Errorf("a Redis Cluster has database 0 only, the URL names %d", db)
	}
	return nil
}

// misroutes keeps the first misrouting reply any cluster node sent since the last take. A nil
// *misroutes (one server) records nothing.
type misroutes struct {
	mu    sync.Mutex
	first string
}

func (m *misroutes) note(err error) {
	if m == nil || err == nil || !isMisrouted(err.Error()) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.first == "" {
		m.first = err.Error()
	}
}

func (m *misroutes) take() string {
	if m == nil {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	first := m.first
	m.first = ""
	return first
}

// isMisrouted: a node's reply saying the command reached the wrong node or spanned slots.
func isMisrouted(text string) bool {
	for _, prefix := range []string{"MOVED ", "ASK ", "CROSSSLOT", "TRYAGAIN", "CLUSTERDOWN"} {
		if strings.HasPrefix(text, prefix) {
			return true
		}
	}
	// Redis: "Script attempted to access a non local key ..."; Valkey: "Attempted to access ...".
	return strings.Contains(strings.ToLower(text), "attempted to access a non local key")
}
