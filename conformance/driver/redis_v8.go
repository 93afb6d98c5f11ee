//go:build keysim_redis_v8

// go-redis v8 (Asynq v0.24.0 and before): its names for redis_client.go, and its hooks.
package main

import (
	"context"

	"github.com/go-redis/redis/v8"
	"github.com/hibiken/asynq/internal/timeutil"
)

// The go-redis v8 names redis_client.go is written against.
type (
	universalClient     = redis.UniversalClient
	redisOptions        = redis.Options
	redisClusterOptions = redis.ClusterOptions
	redisClient         = redis.Client
	redisClusterClient  = redis.ClusterClient
)

var (
	parseRedisURL         = redis.ParseURL
	newRedisClient        = redis.NewClient
	newRedisClusterClient = redis.NewClusterClient
	redisNil              = redis.Nil
)

// statsHook applies shiftStatsExpiry to every command before it is sent.
type statsHook struct{ clock *timeutil.SimulatedClock }

func (h statsHook) BeforeProcess(ctx context.Context, cmd redis.Cmder) (context.Context, error) {
	return ctx, shiftStatsExpiry(cmd.Args(), h.clock.Now())
}

func (h statsHook) AfterProcess(context.Context, redis.Cmder) error { return nil }

func (h statsHook) BeforeProcessPipeline(ctx context.Context, cmds []redis.Cmder) (context.Context, error) {
	for _, cmd := range cmds {
		if err := shiftStatsExpiry(cmd.Args(), h.clock.Now()); err != nil {
			return ctx, err
		}
	}
	return ctx, nil
}

func (h statsHook) AfterProcessPipeline(context.Context, []redis.Cmder) error { return nil }

// routeHook notes a cluster node's misrouting replies (see misroutes).
type routeHook struct{ misrouted *misroutes }

func (h routeHook) BeforeProcess(ctx context.Context, _ redis.Cmder) (context.Context, error) {
	return ctx, nil
}

func (h routeHook) AfterProcess(_ context.Context, cmd redis.Cmder) error {
	h.misrouted.note(cmd.Err())
	return nil
}

func (h routeHook) BeforeProcessPipeline(ctx context.Context, _ []redis.Cmder) (context.Context, error) {
	return ctx, nil
}

func (h routeHook) AfterProcessPipeline(_ context.Context, cmds []redis.Cmder) error {
	for _, cmd := range cmds {
		h.misrouted.note(cmd.Err())
	}
	return nil
}
