"""What the Franka Hand is told, given the width the policy commands each cycle.

The Hand takes whole commands that run for a while (libfranka's ``move`` and ``grasp``), not a
stream of widths, and the two differ where it matters: a ``move`` whose fingers are blocked by an
object does not finish on the real Hand (it keeps pushing for minutes and every later command, an
open included, waits behind it), while a ``grasp`` finishes when the fingers stop, on the object or at
the width, and then holds the object with a set force. franky-sim finishes both, so only this
module's logic keeps the real Hand from getting stuck on the first object a policy picks up.

Two modes:
- ``binary`` (default): the commanded width is read as open or closed, with hysteresis. Closing sends a
  grasp to width 0 that counts any stop as a success (``epsilon_outer`` = the Hand's full width), so
  it ends on the object and holds it with ``grasp_force``; opening sends a move to the full width.
  Nothing is sent while the width stays on one side. Demonstrations of the stack's tasks command
  0.0 or 0.08 m, and so do policies trained on them.
- ``width``: every change of more than ``deadband`` is sent as a move to that width, as a stream of
  widths would be: for tasks without grasps, or a gripper that can be blocked safely.

Either way one command runs at a time: while one runs, the newest width waits for the next cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .limits import GRIPPER_WIDTH_MAX

GRIPPER_MODES = ("binary", "width")


@dataclass(frozen=True)
class GripperConfig:
    mode: str = "binary"
    speed: float = 0.05  # [m/s]
    grasp_force: float = 20.0  # [N] held on a grasped object (binary mode)
    close_below: float = 0.04  # [m] binary: a commanded width below this closes the Hand ...
    hysteresis: float = 0.01  # [m] ... and one above close_below + hysteresis opens it again
    deadband: float = 0.002  # [m] width mode: smaller changes are not sent

    def __post_init__(self):
        if self.mode not in GRIPPER_MODES:
            raise ValueError(f"gripper mode must be one of {GRIPPER_MODES}, got {self.mode!r}")
        if not 0.0 < self.speed <= 0.1:
            raise ValueError(f"gripper speed must be in (0, 0.1] m/s, got {self.speed}")
        if not 1.0 <= self.grasp_force <= 70.0:
            raise ValueError(f"gripper grasp_force must be in [1, 70] N, got {self.grasp_force}")
        if not 0.0 < self.close_below < self.close_below + self.hysteresis < GRIPPER_WIDTH_MAX:
            raise ValueError(f"gripper close_below ({self.close_below}) and close_below + hysteresis "
                             f"({self.close_below + self.hysteresis}) must lie inside (0, {GRIPPER_WIDTH_MAX}) m")
        if not 0.0 <= self.hysteresis <= 0.04:
            raise ValueError(f"gripper hysteresis must be in [0, 0.04] m, got {self.hysteresis}")
        if not 0.0 <= self.deadband <= 0.02:
            raise ValueError(f"gripper deadband must be in [0, 0.02] m, got {self.deadband}")


class HandCommand(NamedTuple):
    kind: str  # "move" | "grasp"
    width: float  # [m] target width (grasp: the object width expected; 0 = any)
    speed: float  # [m/s]
    force: float = 0.0  # [N] grasp only
    epsilon_inner: float = 0.0  # [m] grasp only: tolerated width below ``width``
    epsilon_outer: float = 0.0  # [m] grasp only: tolerated width above ``width``


class GripperCommander:
    """Commanded widths in, Hand commands out (module docstring). Pure logic: the caller sends the
    command and says whether the previous one still runs."""

    def __init__(self, config: GripperConfig = GripperConfig(), max_width: float = GRIPPER_WIDTH_MAX):
        self.config = config
        self.max_width = float(max_width)
        self.closed: bool | None = None  # binary: what was last sent (None: nothing yet)
        self.last_width: float | None = None  # width mode: what was last sent

    def reset(self) -> None:
        """Forget what was sent (a new connection: the Hand's state is unknown)."""
        self.closed, self.last_width = None, None

    def command(self, width: float, busy: bool) -> HandCommand | None:
        """The command to send for a commanded ``width`` [m] this cycle, or None. ``busy``: the previous
        command has not finished; nothing is sent and the same width is decided again next cycle."""
        c = self.config
        if busy or width != width:  # NaN: keep what runs
            return None
        width = min(max(float(width), 0.0), self.max_width)
        if c.mode == "width":
            if self.last_width is not None and abs(width - self.last_width) < c.deadband:
                return None
            self.last_width = width
            return HandCommand("move", width, c.speed)
        if self.closed is not True and width < c.close_below:
            self.closed = True
            return HandCommand("grasp", 0.0, c.speed, c.grasp_force, epsilon_inner=0.005,
                               epsilon_outer=self.max_width)
        if self.closed is not False and width > c.close_below + c.hysteresis:
            self.closed = False
            return HandCommand("move", self.max_width, c.speed)
        return None


def send_hand_command(gripper, cmd: HandCommand):
    """Start ``cmd`` on a franky ``Gripper``; returns its future."""
    if cmd.kind == "grasp":
        return gripper.grasp_async(cmd.width, cmd.speed, cmd.force, epsilon_inner=cmd.epsilon_inner,
                                   epsilon_outer=cmd.epsilon_outer)
    return gripper.move_async(cmd.width, cmd.speed)
