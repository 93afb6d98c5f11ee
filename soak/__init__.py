"""``keysim soak``: Asynq's own servers as OS processes on one real Redis, killed and restarted
at random, drained, accounted for from their own logs and audited.

A room of its own: it runs Asynq's code (conformance/load), reads the keyspace with the audit
(:mod:`audit`) and names defects with the harness's attribution (:mod:`harness.attribution`).
:mod:`soak.run` drives the processes; :mod:`soak.ledger` keeps the books and gives the verdict.
"""
