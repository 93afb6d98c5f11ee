"""The Hypothesis settings profiles of the stateful machine, registered here and only here.

``keysim check --profile`` and :func:`harness.check.run_check` pick one by name.

>>> from hypothesis import settings
>>> [settings.get_profile(name).stateful_step_count for name in PROFILES]
[30, 40, 80]
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

#: The profiles, from quick to thorough.
PROFILES = ("dev", "ci", "deep")

settings.register_profile("dev", max_examples=60, stateful_step_count=30, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("ci", max_examples=150, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("deep", max_examples=3000, stateful_step_count=80, deadline=None,
                          suppress_health_check=list(HealthCheck), print_blob=True)
