"""Watchdog: decides when the controller must stop executing and hold.

Every accepted chunk says how often its policy replans: its ``execute_horizon`` actions of ``dt`` (the
replanning period, at most the chunk's own length and at most ``max_replan_period``, so a dead policy is
noticed within ``max_replan_period + timeout`` whatever its chunks said). The next chunk is due one period
after this one was accepted; the watchdog trips when none was accepted within ``timeout`` of that deadline (a chunk that
does not say, execute_horizon 0, has a period of 0: the next one is due within ``timeout``), or at once
on an e-stop. Once tripped it stays tripped until ``rearm`` (the controller calls it on an explicit
enable). Checked once per control cycle, so a trip is noticed at most one cycle after the deadline.

A plan that runs out before the next chunk arrives is not a trip: the last action stays the target, the
arm settles on it (ChunkScheduler.target) and the deadline keeps running. A policy executing whole chunks
(the paper's J) observes after its last action, so every next chunk arrives one inference latency after
the plan ran out; the watchdog used to trip there 0.25 s after the last action, and a chunk that late on
a loaded machine ended the episode. A dead policy still holds the arm ``timeout`` after its period.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .safety_limits import check_limits, safety_limit


class TripReason(str, enum.Enum):
    CHUNK_TIMEOUT = "chunk_timeout"
    ESTOP = "estop"


@dataclass(frozen=True)
class WatchdogConfig:
    timeout: float = safety_limit(0.5, "s", 0.01, 10.0, "how late a chunk may be: without a fresh chunk this long "
                                  "after the policy's replanning period (its execute_horizon x dt) the arm holds",
                                  parameter="watchdog_timeout")
    max_replan_period: float = safety_limit(2.0, "s", 0.0, 10.0, "the longest replanning period a chunk may claim "
                                            "(execute_horizon x dt): a longer one counts as this long")

    def __post_init__(self):
        check_limits(self)


class Watchdog:
    def __init__(self, config: WatchdogConfig | None = None):
        self.config = config or WatchdogConfig()
        self.tripped: TripReason | None = None
        self.trips = 0
        self._deadline: float | None = None

    def rearm(self, now: float, period: float = 0.0) -> None:
        """Clear a trip (explicit enable at ``now``); the first chunk is due as any next one: ``period`` (the
        replanning period the policy's last chunk said, 0 if none came) and ``timeout`` after ``now``. With
        the timeout alone, an enable on a stale start-up chunk of a policy replanning every 0.5 s (whole
        chunks) held the arm before that policy's next chunk could come (CI: an episode that never moved)."""
        self.tripped = None
        self.feed(now, period)

    def feed(self, now: float, period: float = 0.0) -> None:
        """A fresh chunk was accepted at ``now``; its policy sends the next one ``period`` seconds later."""
        self._deadline = now + min(max(0.0, period), self.config.max_replan_period) + self.config.timeout

    def estop(self) -> TripReason:
        return self._trip(TripReason.ESTOP)

    def check(self, now: float) -> TripReason | None:
        """Trip reason (new or latched) at time ``now``."""
        if self.tripped is not None:
            return self.tripped
        if self._deadline is None or now > self._deadline:
            return self._trip(TripReason.CHUNK_TIMEOUT)
        return None

    def _trip(self, reason: TripReason) -> TripReason:
        if self.tripped is None:
            self.trips += 1
        self.tripped = reason
        return reason
