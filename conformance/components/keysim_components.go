// Entry points into Asynq's own server components, for asynq-keysim's conformance driver.
//
// conformance/build.sh adds this file to Asynq's root package (package asynq) with
// `go build -overlay`, so it can construct Asynq's unexported components — recoverer,
// forwarder, janitor, aggregator, processor — around a broker the driver supplies, and run
// exactly one pass of each. Nothing of Asynq is copied: every decision is taken by Asynq's code.
// Where a component only loops inside a goroutine driven by timers, the smallest unit that can
// be called once is called (see each function).
package asynq

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq/internal/base"
	"github.com/hibiken/asynq/internal/log"
)

// KeysimLog collects what the components log (Asynq reports failed writes only there).
type KeysimLog struct {
	mu    sync.Mutex
	Lines []string
}

func (k *KeysimLog) add(level string, args ...interface{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.Lines = append(k.Lines, level+": "+fmt.Sprint(args...))
}

func (k *KeysimLog) Debug(args ...interface{}) {}
func (k *KeysimLog) Info(args ...interface{})  { k.add("info", args...) }
func (k *KeysimLog) Warn(args ...interface{})  { k.add("warn", args...) }
func (k *KeysimLog) Error(args ...interface{}) { k.add("error", args...) }
func (k *KeysimLog) Fatal(args ...interface{}) { k.add("fatal", args...) }

func (k *KeysimLog) logger() *log.Logger {
	l := log.NewLogger(k)
	l.SetLevel(log.InfoLevel)
	return l
}

// KeysimRecover runs the recoverer once: part "leases" is recoverLeaseExpiredTasks (list the
// leases expired 30 s ago, then Retry or Archive each), "aggregation_sets" is
// recoverStaleAggregationSets, "" is recover(), both in that order (what its loop runs per tick).
func KeysimRecover(b base.Broker, queues []string, part string, delay RetryDelayFunc, lg *KeysimLog) {
	r := newRecoverer(recovererParams{logger: lg.logger(), broker: b, queues: queues,
		interval: time.Minute, retryDelayFunc: delay, isFailureFunc: defaultIsFailureFunc})
	switch part {
	case "leases":
		r.recoverLeaseExpiredTasks()
	case "aggregation_sets":
		r.recoverStaleAggregationSets()
	default:
		r.recover()
	}
}

// KeysimForward runs the forwarder's exec() once.
func KeysimForward(b base.Broker, queues []string, lg *KeysimLog) {
	newForwarder(forwarderParams{logger: lg.logger(), broker: b, queues: queues,
		interval: time.Second}).exec()
}

// KeysimAggregate runs one aggregation pass at t over queues with handler ga. The aggregator's
// exec(t) starts aggregate(t) in a goroutine once it holds a semaphore token; here the token
// is taken the same way and aggregate(t) runs on the caller's goroutine, so the pass is over
// when this returns.
func KeysimAggregate(b base.Broker, queues []string, t time.Time, grace, maxDelay time.Duration,
	maxSize int, ga GroupAggregator, lg *KeysimLog) {
	a := newAggregator(aggregatorParams{logger: lg.logger(), broker: b, queues: queues,
		gracePeriod: grace, maxDelay: maxDelay, maxSize: maxSize, groupAggregator: ga})
	a.sema <- struct{}{} // what exec(t) does before `go a.aggregate(t)`
	a.aggregate(t)
}

// KeysimSyncQueue is the syncer's list of failed writes a processor handed over.
type KeysimSyncQueue struct {
	ch       chan *syncRequest
	requests []*syncRequest
	// shift turns each request's deadline (on the caller's clock) into virtual time.
	shift []time.Duration
}

func NewKeysimSyncQueue() *KeysimSyncQueue {
	return &KeysimSyncQueue{ch: make(chan *syncRequest, 64)}
}

// Len is how many failed writes wait for the next sync pass.
func (q *KeysimSyncQueue) Len() int { return len(q.requests) }

// collect moves what the processor just sent into the list (the syncer's `case req :=
// <-s.requestsCh`), remembering how far the caller's clock was from virtual time.
func (q *KeysimSyncQueue) collect(shift time.Duration) {
	for {
		select {
		case req := <-q.ch:
			q.requests = append(q.requests, req)
			q.shift = append(q.shift, shift)
		default:
			return
		}
	}
}

// KeysimSyncPass is one tick of the syncer's loop (syncer.start, `case <-time.After`), which
// exists only inline in that goroutine: a request whose deadline is before now is dropped,
// the others run their write again (Asynq's own closure, with the context it captured) and
// stay when it fails. now is virtual time. Returns how many ran, failed and were dropped.
func (q *KeysimSyncQueue) KeysimSyncPass(now time.Time) (ran, failed, dropped int, errs []string) {
	var keep []*syncRequest
	var keepShift []time.Duration
	for i, req := range q.requests {
		if req.deadline.Add(q.shift[i]).Before(now) {
			dropped++
			continue
		}
		ran++
		if err := req.fn(); err != nil {
			failed++
			errs = append(errs, req.errMsg+": "+err.Error())
			keep = append(keep, req)
			keepShift = append(keepShift, q.shift[i])
		}
	}
	q.requests, q.shift = keep, keepShift
	return ran, failed, dropped, errs
}

// KeysimFinish ends one active task as Asynq's processor does when its handler returns:
// handlerErr nil is handleSucceededMessage, abort is requeue (the shutdown timeout), anything
// else handleFailedMessage. lease is the worker's lease (its Clock says what now is); a write
// that fails is handed to q, as the processor hands it to the syncer. shift is added to a
// deadline on the lease's clock to get virtual time.
func KeysimFinish(b base.Broker, msg *base.TaskMessage, lease *base.Lease, handlerErr error,
	abort bool, delay RetryDelayFunc, isFailure func(error) bool, q *KeysimSyncQueue,
	shift time.Duration, lg *KeysimLog) {
	p := newProcessor(processorParams{logger: lg.logger(), broker: b,
		baseCtxFn: context.Background, retryDelayFunc: delay, isFailureFunc: isFailure,
		syncCh: q.ch, cancelations: base.NewCancelations(), concurrency: 1,
		queues: map[string]int{msg.Queue: 1}, shutdownTimeout: time.Second})
	switch {
	case abort:
		p.requeue(lease, msg)
	case handlerErr == nil:
		p.handleSucceededMessage(lease, msg)
	default:
		p.handleFailedMessage(context.Background(), lease, msg, handlerErr)
	}
	q.collect(shift)
}

// KeysimSkipRetry is the sentinel error a handler returns to be archived at once.
var KeysimSkipRetry = SkipRetry
