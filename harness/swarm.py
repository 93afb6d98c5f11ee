"""Swarm testing: each example of the machine may use only a subset of its rules.

Fewer rules per example make specific multi-step sequences far likelier; the shrunk program
shows the set that was needed. A ``focus`` fixes the set instead of drawing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RULE_MARKER, RuleBasedStateMachine, initialize, precondition


def rule_names(machine: type[RuleBasedStateMachine]) -> list[str]:
    """The names of ``machine``'s rules, sorted."""
    return sorted(n for n in dir(machine) if getattr(getattr(machine, n), RULE_MARKER, None))


def _enabled(name: str, always: bool) -> Callable[[Any], bool]:
    def allowed(self: Any) -> bool:
        return always or name in self.enabled
    return allowed


def swarm_rules(bases: tuple[type[RuleBasedStateMachine], ...],
                focus: frozenset[str] | None) -> dict[str, Any]:
    """Swarm testing: an ``initialize`` rule draws which rules this example may use, and every
    rule gets that as a precondition. Fewer rules per example make specific multi-step
    sequences far likelier; the shrunk program shows the set that was needed. With a
    ``focus`` the set is fixed instead of drawn."""
    probe = type("SwarmProbe", bases, {})
    names = rule_names(probe)
    if focus is not None:
        unknown = sorted(focus - set(names))
        if unknown:
            raise ValueError(f"rules: unknown rule names {unknown}; the machine has {names}")
    # ``tick`` stays on unless a focus rule can always run: an example must never be stuck
    # with every rule's precondition false.
    free = {n for n in names if not getattr(getattr(probe, n), RULE_MARKER).preconditions}
    always = "tick" if focus is None or not focus & free else ""
    body: dict[str, Any] = {}
    for name in names:
        body[name] = precondition(_enabled(name, name == always))(getattr(probe, name))

    def swarm(self: Any, enabled: frozenset[str]) -> None:
        """This example uses only the rules in ``enabled``."""
        self.enabled = frozenset(enabled)

    if focus is not None:
        body["enabled"] = focus
        return body
    make: Callable[..., Any] = initialize
    body["swarm"] = make(enabled=st.frozensets(st.sampled_from(names), min_size=1))(swarm)
    return body
