"""The stateful harness: the reference model drives a system under test step by step.

* :mod:`harness.machine` — the Hypothesis state machine (rules, checks, drain);
* :mod:`harness.config` — what one run tests (:class:`harness.config.MachineConfig`);
* :mod:`harness.backends` — where the broker runs: fakeredis pools, real Redis, Asynq's Go code;
* :mod:`harness.faults` — the keyspace as the checks judge it after injected faults;
* :mod:`harness.fault_rules` — faults as actions (failover, connloss, skew, cache, abort);
* :mod:`harness.attribution` — which bug-zoo defect a failure points to;
* :mod:`harness.leaks` — what a failed check raises (:class:`harness.leaks.LeakFound`);
* :mod:`harness.swarm` — swarm testing: a subset of rules per example;
* :mod:`harness.profiles` — the Hypothesis settings profiles;
* :mod:`harness.check`, :mod:`harness.zoo` — ``keysim check`` and ``keysim zoo``;
* :mod:`harness.replay` — every explored sequence replayed against a broker;
* :mod:`harness.conform` — the differential test against Asynq's own Go code;
* :mod:`harness.observe` — the keyspace read in the round trip of each broker call;
* :mod:`harness.fakeserver` — the one place that knows fakeredis' internals.
"""
