"""The Franka Hand of the simulated tasks, driven as the controller drives the real one.

The Hand is not a position servo: the controller turns the stream of widths a policy commands into Hand
commands (`control.gripper.GripperCommander`: in the default binary mode a grasp to 0 once the width drops
below ``close_below``, a move to the full width once it rises above ``close_below`` + ``hysteresis``), and
the fingers then travel to that command's width at its speed, one command at a time. `TaskEnv` moves its
gripper actuator the same way, so the widths a demonstration records, the ones the synchronous evaluation
observes and the ones the deployed Hand (franky-sim's included) reports follow one law. Before, the
simulated gripper followed the commanded width at once: a push policy trained on that saw a gripper that
stayed open behind the stack's Hand and fell from 14/30 to 0/30 on the same seeds (docs/results).
"""

from __future__ import annotations

from ..control.gripper import GripperCommander, GripperConfig
from ..control.limits import GRIPPER_WIDTH_MAX


def finger_travel(set_point: float, goal: float, speed: float, dt: float) -> float:
    """The fingers' set point [m] after ``dt`` seconds of travel towards ``goal`` at ``speed`` [m/s]: the
    Hand's one law of motion, here and in franky-sim's Hand (`sim.franky.honour_hand_speed`)."""
    reach = speed * dt
    return set_point + min(max(goal - set_point, -reach), reach)


class SimulatedHand:
    """Commanded widths in, the fingers' commanded width out (the actuator's set point), step by step."""

    def __init__(self, config: GripperConfig | None = None, max_width: float = GRIPPER_WIDTH_MAX):
        self.commander = GripperCommander(config or GripperConfig(), max_width)
        self.reset(max_width)

    def reset(self, width: float) -> None:
        """A new episode with the fingers at ``width`` [m] and nothing sent yet."""
        self.commander.reset()
        self.width = self.goal = float(width)
        self.speed = self.commander.config.speed

    @property
    def moving(self) -> bool:
        """A Hand command still runs (the next one waits for it, as on the Hand)."""
        return self.width != self.goal

    def step(self, commanded: float, dt: float) -> float:
        """The fingers' set point [m] after ``dt`` seconds during which ``commanded`` [m] was asked for."""
        cmd = self.commander.command(commanded, busy=self.moving)
        if cmd is not None:
            self.goal, self.speed = float(cmd.width), float(cmd.speed)
        self.width = finger_travel(self.width, self.goal, self.speed, dt)
        return self.width
