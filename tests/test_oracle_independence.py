"""The oracle decides on its own: a one-line bug in the broker's recover composite is caught.

The reference model and the implementations used to recover lease-expired tasks with one shared
function, so a bug in it changed both sides alike and no check could see it. Now the broker's
recoverer (``broker.processor.recover_expired``) and the model's (``ReferenceModel.recover``)
decide separately; here the broker's retry limit is made off by one (``>=`` → ``>``) and the
stateful check must fail.
"""

from __future__ import annotations

import pytest

from broker import processor
from harness.check import CheckResult, default_check, run_check
from harness.machine import MachineConfig
from model.message import TaskMessage

#: The rules that reach the recoverer (``jump`` passes the lease and serves, ``recoverer``
#: recovers); no worker rule, so the mutant can act through the recoverer alone.
RECOVER_RULES = frozenset({"enqueue", "dequeue", "jump", "recoverer"})


def _check() -> CheckResult:
    return run_check(MachineConfig(rules=RECOVER_RULES), max_examples=60, steps=20, seed=0)


def test_the_check_catches_an_off_by_one_retry_limit_in_the_broker_recoverer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def off_by_one(msg: TaskMessage) -> bool:
        asked.append(msg.id)
        return msg.retried > msg.retry  # the mutant: `>=` became `>`

    monkeypatch.setattr(processor, "retries_exhausted", off_by_one)
    result = _check()
    assert asked, "the broker's recoverer never consulted its retry limit"
    assert not result.passed
    assert result.failure is not None and result.failure.invariant == "agreement"
    assert "jump(serve=True, to='lease')" in result.program or "recoverer(" in result.program


def test_the_same_check_passes_without_the_mutant() -> None:
    result = _check()
    assert result.passed, result.summary()


def test_the_default_keysim_check_catches_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """No focus: exactly what ``keysim check`` runs (coverage rule, drawn policies, scenarios)."""
    def off_by_one(msg: TaskMessage) -> bool:
        return msg.retried > msg.retry

    monkeypatch.setattr(processor, "retries_exhausted", off_by_one)
    result = default_check(seed=0)
    assert result.verdict == "FAIL" and result.failure is not None
    assert result.failure.invariant == "agreement"
