// The go-redis plumbing both major versions share: connecting, the cluster client that follows
// no redirection, and the reads the driver makes itself. redis_v8.go and redis_v9.go name the
// version's types and functions (the only difference here is the import path) and its hooks.
package main

import (
	"context"
	"errors"

	"github.com/hibiken/asynq/internal/rdb"
	"github.com/hibiken/asynq/internal/timeutil"
)

type goredisClient struct{ c universalClient }

// openClient connects to one server, or (misrouted non-nil) to the cluster the URL's node
// belongs to. Either way the stats hook sees every command before it is sent.
func openClient(url string, clock *timeutil.SimulatedClock, misrouted *misroutes) (rawClient, error) {
	opts, err := parseRedisURL(url)
	if err != nil {
		return nil, err
	}
	var c universalClient
	if misrouted == nil {
		c = newRedisClient(opts)
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
	return goredisClient{c}, nil
}

// newClusterClient: a ClusterClient seeded with the URL's node. It follows no redirection
// (MaxRedirects -1): every node's client notes a misrouting reply, which fails the call.
func newClusterClient(seed *redisOptions, misrouted *misroutes) *redisClusterClient {
	return newRedisClusterClient(&redisClusterOptions{
		Addrs:        []string{seed.Addr},
		Username:     seed.Username,
		Password:     seed.Password,
		TLSConfig:    seed.TLSConfig,
		MaxRedirects: -1,
		NewClient: func(opt *redisOptions) *redisClient {
			node := newRedisClient(opt)
			node.AddHook(routeHook{misrouted})
			return node
		},
	})
}

func (v goredisClient) rdbClient() *rdb.RDB { return rdb.NewRDB(v.c) }

func (v goredisClient) zcount(key, min, max string) (int64, error) {
	return v.c.ZCount(context.Background(), key, min, max).Result()
}

func (v goredisClient) hasScore(key, member string) (bool, error) {
	err := v.c.ZScore(context.Background(), key, member).Err()
	if err == redisNil {
		return false, nil
	}
	return err == nil, err
}

func (v goredisClient) isNil(err error) bool { return errors.Is(err, redisNil) }
