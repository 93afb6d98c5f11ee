//go:build keysim_redis_v8

// go-redis v8 plumbing (Asynq v0.24.0).
package main

import (
	"context"
	"errors"

	"github.com/go-redis/redis/v8"
	"github.com/hibiken/asynq/internal/rdb"
	"github.com/hibiken/asynq/internal/timeutil"
)

type v8Client struct{ c *redis.Client }

func openClient(url string, clock *timeutil.SimulatedClock) (rawClient, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	c := redis.NewClient(opts)
	c.AddHook(statsHook{clock})
	if err := c.Ping(context.Background()).Err(); err != nil {
		return nil, err
	}
	return v8Client{c}, nil
}

func (v v8Client) rdbClient() *rdb.RDB { return rdb.NewRDB(v.c) }

func (v v8Client) zcount(key, min, max string) (int64, error) {
	return v.c.ZCount(context.Background(), key, min, max).Result()
}

func (v v8Client) hasScore(key, member string) (bool, error) {
	err := v.c.ZScore(context.Background(), key, member).Err()
	if err == redis.Nil {
		return false, nil
	}
	return err == nil, err
}

func (v v8Client) isNil(err error) bool { return errors.Is(err, redis.Nil) }

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
