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

type v8Client struct{ c redis.UniversalClient }

// openClient connects to one server, or (misrouted non-nil) to the cluster the URL's node
// belongs to. Either way the stats hook sees every command before it is sent.
func openClient(url string, clock *timeutil.SimulatedClock, misrouted *misroutes) (rawClient, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	var c redis.UniversalClient
	if misrouted == nil {
		c = redis.NewClient(opts)
	} else {
		if err := checkClusterDB(opts.DB); err != nil {
			return nil, err
		}
		c = newClusterClient(opts, misrouted)
	}
	c.AddHook(statsHook{clock})
	if err := c.Ping(context.Background()).Err(); err != nil {
		return nil, err
	}
	return v8Client{c}, nil
}

// newClusterClient: a ClusterClient seeded with the URL's node. It follows no redirection
// (MaxRedirects -1): every node's client notes a misrouting reply, which fails the call.
func newClusterClient(seed *redis.Options, misrouted *misroutes) *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        []string{seed.Addr},
		Username:     seed.Username,
		Password:     seed.Password,
		TLSConfig:    seed.TLSConfig,
		MaxRedirects: -1,
		NewClient: func(opt *redis.Options) *redis.Client {
			node := redis.NewClient(opt)
			node.AddHook(routeHook{misrouted})
			return node
		},
	})
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
