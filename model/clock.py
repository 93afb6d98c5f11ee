"""A virtual clock: every time-dependent operation reads it, nothing reads the wall clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

NS = 1_000_000_000
#: Default start of virtual time: 2026-01-01T00:00:00Z.
EPOCH_NS = 1_767_225_600 * NS


@dataclass
class VirtualClock:
    """Nanosecond virtual time that moves only when told to.

    >>> c = VirtualClock()
    >>> c.advance(90); c.seconds - EPOCH_NS // NS
    90
    >>> c.utc_date()
    '2026-01-01'
    """

    now_ns: int = EPOCH_NS

    @property
    def seconds(self) -> int:
        """Whole Unix seconds, as Asynq's scripts receive them."""
        return self.now_ns // NS

    @property
    def milliseconds(self) -> int:
        """Whole Unix milliseconds (unique-lock and counter deadlines)."""
        return self.now_ns // 1_000_000

    def advance(self, seconds: float) -> None:
        """Move forward; time never goes back."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.now_ns += int(seconds * NS)

    def set(self, now_ns: int) -> None:
        """Jump to an absolute time (not earlier than now)."""
        if now_ns < self.now_ns:
            raise ValueError(f"now_ns {now_ns} is before the current virtual time {self.now_ns}")
        self.now_ns = now_ns

    def utc_date(self) -> str:
        """The UTC date used by Asynq's daily counter keys."""
        return utc_date(self.seconds)


def utc_date(unix_seconds: int) -> str:
    """``YYYY-MM-DD`` of a Unix time in UTC."""
    return dt.datetime.fromtimestamp(unix_seconds, dt.UTC).strftime("%Y-%m-%d")
