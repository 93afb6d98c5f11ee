//go:build !keysim_redis_v8

// go-redis v9 (Asynq v0.24.1 and later): its names for redis_client.go, and its hooks.
package main

import (
	"context"

	"github.com/hibiken/asynq/internal/timeutil"
	"github.com/redis/go-redis/v9"
)

// The go-redis v9 names redis_client.go is written against.
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

func (h statsHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h statsHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := shiftStatsExpiry(cmd.Args(), h.clock.Now()); err != nil {
			return err
		}
		return next(ctx, cmd)
	}
}

func (h statsHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := shiftStatsExpiry(cmd.Args(), h.clock.Now()); err != nil {
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// routeHook notes a cluster node's misrouting replies (see misroutes).
type routeHook struct{ misrouted *misroutes }

func (h routeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h routeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd) // a node's reply error is returned here, set on cmd only later
		h.misrouted.note(err)
		return err
	}
}

func (h routeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.misrouted.note(err)
		for _, cmd := range cmds {
			h.misrouted.note(cmd.Err())
		}
		return err
	}
}
