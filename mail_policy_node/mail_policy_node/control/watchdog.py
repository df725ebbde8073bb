"""Watchdog: decides when the controller must stop executing and hold.

It trips when no fresh chunk was accepted within ``timeout`` seconds, when the active chunk's actions
are all consumed (``consumed_grace`` after the last one was due: without it, the hold would brake
the arm short of the final action by the tracking lag), or immediately on an e-stop. Once tripped it stays tripped
until ``rearm`` (the controller calls it on an explicit enable). Checked once per control cycle, so
a trip is noticed at most one cycle after the deadline.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .safety_limits import check_limits, safety_limit


class TripReason(str, enum.Enum):
    CHUNK_TIMEOUT = "chunk_timeout"
    CHUNK_CONSUMED = "chunk_consumed"
    ESTOP = "estop"


@dataclass(frozen=True)
class WatchdogConfig:
    timeout: float = safety_limit(0.5, "s", 0.01, 10.0, "without a fresh chunk the arm holds (the longest gap "
                                  "allowed between accepted chunks)", parameter="watchdog_timeout")
    consumed_grace: float = 0.25  # [s] the last action stays the target this long, so the arm settles on it

    def __post_init__(self):
        check_limits(self)
        if not 0.0 <= self.consumed_grace <= 10.0:
            raise ValueError(f"consumed_grace must be in [0, 10] s, got {self.consumed_grace}")

    def holds_between(self, replan_period: float) -> bool:
        """Whether a policy that sends a chunk every ``replan_period`` seconds is held between its chunks
        (the controller refuses such chunks: `slower_than_watchdog`)."""
        return replan_period >= self.timeout


class Watchdog:
    def __init__(self, config: WatchdogConfig | None = None):
        self.config = config or WatchdogConfig()
        self.tripped: TripReason | None = None
        self.trips = 0
        self._last_feed: float | None = None

    def rearm(self, now: float) -> None:
        """Clear a trip and restart the timeout from ``now`` (explicit enable)."""
        self.tripped = None
        self._last_feed = now

    def feed(self, now: float) -> None:
        """A fresh chunk was accepted."""
        self._last_feed = now

    def estop(self) -> TripReason:
        return self._trip(TripReason.ESTOP)

    def check(self, now: float, last_due: float | None) -> TripReason | None:
        """Trip reason (new or latched) at time ``now``; ``last_due`` = due time of the active chunk's
        last action (None: no chunk)."""
        if self.tripped is not None:
            return self.tripped
        if self._last_feed is None or now - self._last_feed > self.config.timeout:
            return self._trip(TripReason.CHUNK_TIMEOUT)
        if last_due is not None and now > last_due + self.config.consumed_grace:
            return self._trip(TripReason.CHUNK_CONSUMED)
        return None

    def _trip(self, reason: TripReason) -> TripReason:
        if self.tripped is None:
            self.trips += 1
        self.tripped = reason
        return reason
