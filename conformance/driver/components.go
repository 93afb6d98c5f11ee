//go:build !keysim_nogroups

// Driver ops that run Asynq's own server components (recoverer, forwarder, janitor, aggregator,
// processor's finish path, syncer) one pass at a time, through the entry points that
// conformance/components/*.go adds to package asynq. They register themselves in otherOps.
//
// Asynq's components read the wall clock (time.Now) where the scripts take the RDB's clock:
// the recoverer's cutoff and retry time, the processor's retry time, context deadlines built
// from a lease or an aggregation set's deadline. componentBroker, the base.Broker the
// components get, translates at that boundary only: at the start of an op the wall clock's
// instant is pinned to the virtual now, a time a component computes from time.Now() is moved
// to virtual time (rounded to whole seconds: the components add whole-second durations, and
// one op lasts far less than half a second), and a virtual deadline a component turns into a
// context deadline is moved to the wall clock. Everything else goes to the RDB unchanged.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynq/internal/base"
	"github.com/hibiken/asynq/internal/timeutil"
)

// componentArgs are the fields of a component op's "args" object.
type componentArgs struct {
	Part       string            `json:"part"`        // recover: "leases", "aggregation_sets" or ""
	Delays     map[string]int64  `json:"delays"`      // retry delay (s) by "<id>:<retried>"
	SetIDs     map[string]string `json:"set_ids"`     // aggregate: the set id per group
	TaskIDs    map[string]string `json:"task_ids"`    // aggregate: the aggregated task's id per group
	Ending     string            `json:"ending"`      // finish: success, failure, ...
	Error      string            `json:"error"`       // finish: the handler's error text
	Lease      int64             `json:"lease"`       // finish: the worker's lease deadline (Unix s)
	FailWrites int               `json:"fail_writes"` // finish: this many writes fail (connection lost)
}

// syncQueue holds the failed writes the processor handed to its syncer ("reset" empties it).
var syncQueue = asynq.NewKeysimSyncQueue()

func init() {
	otherOps["component_recover"] = (*driver).componentRecover
	otherOps["component_forward"] = (*driver).componentForward
	otherOps["component_janitor"] = (*driver).componentJanitor
	otherOps["component_aggregate"] = (*driver).componentAggregate
	otherOps["component_sync"] = (*driver).componentSync
	otherOps["component_finish"] = (*driver).componentFinish
	reset := otherOps["reset"]
	otherOps["reset"] = func(d *driver, q *request) (interface{}, error) {
		syncQueue = asynq.NewKeysimSyncQueue()
		return reset(d, q)
	}
}

func parseArgs(q *request) (componentArgs, error) {
	var a componentArgs
	if len(q.Args) > 0 {
		if err := json.Unmarshal(q.Args, &a); err != nil {
			return a, badRequest{fmt.Sprintf("args: %v", err)}
		}
	}
	return a, nil
}

// componentBroker is the RDB as the components see it (see the file comment).
type componentBroker struct {
	base.Broker
	virtualNow, wallNow time.Time
	args                componentArgs
	listed              []*base.TaskMessage // the recoverer's list, in its order, not yet ended
	ended               int                 // Retry/Archive calls that succeeded
	failWrites          int
}

func (d *driver) componentBroker(a componentArgs) *componentBroker {
	return &componentBroker{Broker: d.r, virtualNow: d.clock.Now(), wallNow: time.Now(), args: a,
		failWrites: a.FailWrites}
}

func (b *componentBroker) toVirtual(wall time.Time) time.Time {
	return b.virtualNow.Add(wall.Sub(b.wallNow).Round(time.Second))
}

func (b *componentBroker) toWall(virtual time.Time) time.Time {
	return b.wallNow.Add(virtual.Sub(b.virtualNow))
}

// shift: what turns a time on the pinned wall clock back into virtual time.
func (b *componentBroker) shift() time.Duration { return b.virtualNow.Sub(b.wallNow) }

var errConnectionLost = errors.New("keysim: connection lost before the write reached Redis")

// lost: whether this write is one of the first FailWrites (it then never reaches Redis).
func (b *componentBroker) lost() bool {
	if b.failWrites > 0 {
		b.failWrites--
		return true
	}
	return false
}

func (b *componentBroker) ListLeaseExpired(cutoff time.Time, qnames ...string) ([]*base.TaskMessage, error) {
	msgs, err := b.Broker.ListLeaseExpired(b.toVirtual(cutoff), qnames...)
	b.listed = msgs
	return msgs, err
}

// delay is the RetryDelayFunc: Asynq passes no task id, so the message is the next one the
// recoverer has listed and not yet ended (it ends them in order), or the one being finished.
func (b *componentBroker) delay(n int, _ error, t *asynq.Task) time.Duration {
	id := ""
	if len(b.listed) > 0 && b.listed[0].Retried == n && b.listed[0].Type == t.Type() {
		id = b.listed[0].ID
	}
	secs, ok := b.args.Delays[fmt.Sprintf("%s:%d", id, n)]
	if !ok {
		panic(fmt.Sprintf("no retry delay given for task %q after %d retries", id, n))
	}
	return time.Duration(secs) * time.Second
}

func (b *componentBroker) pop(msg *base.TaskMessage, err error) error {
	if len(b.listed) > 0 && b.listed[0] == msg {
		b.listed = b.listed[1:]
	}
	if err == nil {
		b.ended++
	}
	return err
}

func (b *componentBroker) Retry(ctx context.Context, msg *base.TaskMessage, at time.Time, errMsg string, isFailure bool) error {
	if b.lost() {
		return b.pop(msg, errConnectionLost)
	}
	return b.pop(msg, b.Broker.Retry(ctx, msg, b.toVirtual(at), errMsg, isFailure))
}

func (b *componentBroker) Archive(ctx context.Context, msg *base.TaskMessage, errMsg string) error {
	if b.lost() {
		return b.pop(msg, errConnectionLost)
	}
	return b.pop(msg, b.Broker.Archive(ctx, msg, errMsg))
}

func (b *componentBroker) Done(ctx context.Context, msg *base.TaskMessage) error {
	if b.lost() {
		return errConnectionLost
	}
	return b.Broker.Done(ctx, msg)
}

func (b *componentBroker) MarkAsComplete(ctx context.Context, msg *base.TaskMessage) error {
	if b.lost() {
		return errConnectionLost
	}
	return b.Broker.MarkAsComplete(ctx, msg)
}

func (b *componentBroker) Requeue(ctx context.Context, msg *base.TaskMessage) error {
	if b.lost() {
		return errConnectionLost
	}
	return b.Broker.Requeue(ctx, msg)
}

// AggregationCheck: Asynq names the set with uuid.NewString(); the requested id is fed to it.
func (b *componentBroker) AggregationCheck(qname, gname string, t time.Time, grace, maxDelay time.Duration, maxSize int) (string, error) {
	feedUUID(b.args.SetIDs[gname])
	return b.Broker.AggregationCheck(qname, gname, t, grace, maxDelay, maxSize)
}

// ReadAggregationSet: the deadline becomes a context deadline (wall clock); the aggregated
// task's id, which the Client draws next with uuid.NewString(), is fed as requested.
func (b *componentBroker) ReadAggregationSet(qname, gname, setID string) ([]*base.TaskMessage, time.Time, error) {
	msgs, deadline, err := b.Broker.ReadAggregationSet(qname, gname, setID)
	feedUUID(b.args.TaskIDs[gname])
	return msgs, b.toWall(deadline), err
}

// feedUUID makes the next uuid.NewString() return id (a canonical v4 UUID); "" leaves it random.
func feedUUID(id string) {
	parsed, err := uuid.Parse(id)
	if id == "" || err != nil {
		uuid.SetRand(nil)
		return
	}
	uuid.SetRand(bytes.NewReader(parsed[:]))
}

// componentAnswer: what the component did, and what it logged (its only report of failures).
type componentAnswer struct {
	Count int         `json:"count"`
	Log   []string    `json:"log"`
	Extra interface{} `json:"extra,omitempty"`
}

func (d *driver) componentRecover(q *request) (interface{}, error) {
	a, err := parseArgs(q)
	if err != nil {
		return nil, err
	}
	var due int64 // reclaiming takes every set due: count them first, as "reclaim" does
	if a.Part == "aggregation_sets" {
		if due, err = d.due(base.AllAggregationSets(q.Queue)); err != nil {
			return nil, err
		}
	}
	b, lg := d.componentBroker(a), &asynq.KeysimLog{}
	asynq.KeysimRecover(b, []string{q.Queue}, a.Part, b.delay, lg)
	return componentAnswer{Count: b.ended + int(due), Log: lg.Lines}, nil
}

func (d *driver) componentForward(q *request) (interface{}, error) {
	n, err := d.dueSum(base.ScheduledKey(q.Queue), base.RetryKey(q.Queue))
	if err != nil {
		return nil, err
	}
	lg := &asynq.KeysimLog{}
	asynq.KeysimForward(d.componentBroker(componentArgs{}), []string{q.Queue}, lg)
	return componentAnswer{Count: int(n), Log: lg.Lines}, nil
}

func (d *driver) componentJanitor(q *request) (interface{}, error) {
	n, err := d.due(base.CompletedKey(q.Queue))
	if err != nil {
		return nil, err
	}
	lg := &asynq.KeysimLog{}
	asynq.KeysimJanitor(d.componentBroker(componentArgs{}), []string{q.Queue}, q.Batch, lg)
	return componentAnswer{Count: int(n), Log: lg.Lines}, nil
}

// aggregated is one task the aggregator's handler was given, as it enqueued it.
type aggregated struct {
	Group    string   `json:"group"`
	Payloads [][]byte `json:"payloads"`
}

// AggregatedType is the type of the task the recording handler returns; its payload is the
// members' payloads joined by "|" (what AsynqGoBroker.aggregate documents).
const aggregatedType = "aggregated"

func (d *driver) componentAggregate(q *request) (interface{}, error) {
	a, err := parseArgs(q)
	if err != nil {
		return nil, err
	}
	var seen []aggregated
	handler := asynq.GroupAggregatorFunc(func(group string, tasks []*asynq.Task) *asynq.Task {
		payloads := make([][]byte, len(tasks))
		for i, t := range tasks {
			payloads[i] = t.Payload()
		}
		seen = append(seen, aggregated{group, payloads})
		return asynq.NewTask(aggregatedType, bytes.Join(payloads, []byte("|")))
	})
	defer uuid.SetRand(nil)
	lg := &asynq.KeysimLog{}
	asynq.KeysimAggregate(d.componentBroker(a), []string{q.Queue}, d.clock.Now(), seconds(q.Grace),
		seconds(q.MaxDelay), q.MaxSize, handler, lg)
	return componentAnswer{Count: len(seen), Log: lg.Lines, Extra: seen}, nil
}

// componentFinish ends the message as the processor does for the handler result "ending".
func (d *driver) componentFinish(q *request) (interface{}, error) {
	a, err := parseArgs(q)
	if err != nil {
		return nil, err
	}
	msg, err := decode(q.Msg)
	if err != nil {
		return nil, err
	}
	handlerErr, abort, isFailure, err := handlerResult(a.Ending, a.Error)
	if err != nil {
		return nil, err
	}
	b, lg := d.componentBroker(a), &asynq.KeysimLog{}
	b.listed = []*base.TaskMessage{msg}
	lease := base.NewLease(b.toWall(time.Unix(a.Lease, 0)))
	lease.Clock = timeutil.NewSimulatedClock(b.wallNow)
	asynq.KeysimFinish(b, msg, lease, handlerErr, abort, b.delay, isFailure, syncQueue, b.shift(), lg)
	return componentAnswer{Count: syncQueue.Len(), Log: lg.Lines}, nil
}

// handlerResult: what a handler returns for each of asynq-keysim's endings (model/endings.py),
// and the server's IsFailure (Asynq's default counts every error; uncounted_failure is a
// handler error the application's IsFailure does not count).
func handlerResult(ending, text string) (error, bool, func(error) bool, error) {
	counted := func(err error) bool { return err != nil }
	handlerErr := errors.New(text)
	marked := func(sentinel error) error { return handlerError{text, sentinel} }
	switch ending {
	case "success":
		return nil, false, counted, nil
	case "failure":
		return handlerErr, false, counted, nil
	case "uncounted_failure":
		return handlerErr, false, func(error) bool { return false }, nil
	case "skip_retry":
		return marked(asynq.KeysimSkipRetry), false, counted, nil
	case "revoke":
		if asynq.KeysimRevokeTask == nil {
			return nil, false, nil, badRequest{"this Asynq version has no RevokeTask"}
		}
		return marked(asynq.KeysimRevokeTask), false, counted, nil
	case "aborted":
		return nil, true, counted, nil
	}
	return nil, false, nil, badRequest{fmt.Sprintf("unknown ending %q", ending)}
}

// handlerError is a handler's error with its own text that errors.Is a sentinel (SkipRetry,
// RevokeTask): Asynq stores the text, as it would an application's.
type handlerError struct {
	text     string
	sentinel error
}

func (e handlerError) Error() string { return e.text }
func (e handlerError) Unwrap() error { return e.sentinel }

// syncAnswer is one syncer tick: writes run again, failed again (kept), dropped (deadline
// passed), the failures' messages, and how many wait now.
type syncAnswer struct {
	Ran     int      `json:"ran"`
	Failed  int      `json:"failed"`
	Dropped int      `json:"dropped"`
	Errors  []string `json:"errors"`
	Waiting int      `json:"waiting"`
}

func (d *driver) componentSync(*request) (interface{}, error) {
	ran, failed, dropped, errs := syncQueue.KeysimSyncPass(d.clock.Now())
	for i, e := range errs { // keep answers short and free of the wall clock
		errs[i] = strings.TrimSpace(e)
	}
	return syncAnswer{ran, failed, dropped, errs, syncQueue.Len()}, nil
}
