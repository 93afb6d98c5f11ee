"""Benchmarks: commands that print figures next to a baseline measured in the same run.

Each is ``python -m benchmarks.<name>``: ``machine`` (stateful steps/s ÷ a no-op machine),
``lifecycles`` (broker scripts/s ÷ a trivial EVALSHA), ``simulator`` (simulated calls/s ÷ the
pipelined ceiling), ``audit`` (keys audited per second and peak memory).
"""
