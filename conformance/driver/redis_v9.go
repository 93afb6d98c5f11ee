//go:build !keysim_redis_v8

// go-redis v9 plumbing (Asynq v0.24.1 and later).
package main

import (
	"context"
	"errors"

	"github.com/hibiken/asynq/internal/rdb"
	"github.com/hibiken/asynq/internal/timeutil"
	"github.com/redis/go-redis/v9"
)

type v9Client struct{ c *redis.Client }

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
	return v9Client{c}, nil
}

func (v v9Client) rdbClient() *rdb.RDB { return rdb.NewRDB(v.c) }

func (v v9Client) zcount(key, min, max string) (int64, error) {
	return v.c.ZCount(context.Background(), key, min, max).Result()
}

func (v v9Client) hasScore(key, member string) (bool, error) {
	err := v.c.ZScore(context.Background(), key, member).Err()
	if err == redis.Nil {
		return false, nil
	}
	return err == nil, err
}

func (v v9Client) isNil(err error) bool { return errors.Is(err, redis.Nil) }

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
