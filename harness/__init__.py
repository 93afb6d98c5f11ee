"""The stateful harness: the reference model drives a system under test step by step.

* :mod:`harness.machine` — the Hypothesis state machine (rules, checks, drain);
* :mod:`harness.check`, :mod:`harness.zoo` — ``keysim check`` and ``keysim zoo``;
* :mod:`harness.replay` — every explored sequence replayed against a broker;
* :mod:`harness.conform` — the differential test against Asynq's own Go code;
* :mod:`harness.observe` — the keyspace read in the round trip of each broker call;
* :mod:`harness.fakelua` — the one place that knows fakeredis' internals.
"""
