"""Workloads in virtual time against a broker variant, with Redis memory curves.

* :mod:`simulations.spec` — the workload spec (dataclasses, TOML loading, validation);
* :mod:`simulations.engine` — the discrete-event engine driving a :class:`broker.Broker`;
* :mod:`simulations.batch` — pipelining independent script calls;
* :mod:`simulations.measure` / :mod:`simulations.estimator` — keys, bytes and leaks per sample;
  the estimator is calibrated against real Redis by :mod:`simulations.calibrate`;
* :mod:`simulations.output` / :mod:`simulations.compare` — run directories, CSV, summary, PNGs;
* :mod:`simulations.presets` — the shipped scenarios; :mod:`benchmarks.simulator` — throughput.

Command line: ``keysim simulate PRESET|FILE``, ``keysim plot RUN``, ``keysim compare RUN…``.
"""
