"""GripperCommander: commanded widths -> Franka Hand commands, and why the default mode grasps."""

import math

import pytest

from mail_policy_node.control.gripper import GripperCommander, GripperConfig, HandCommand

OPEN = 0.08


def test_binary_closes_with_a_grasp_and_opens_with_a_move_once_per_change():
    hand = GripperCommander(GripperConfig(grasp_force=30.0))
    assert hand.command(OPEN, busy=False) == HandCommand("move", OPEN, 0.05)
    assert hand.command(0.079, busy=False) is None  # still open: nothing new
    close = hand.command(0.02, busy=False)
    assert close.kind == "grasp" and close.width == 0.0 and close.force == 30.0
    assert close.epsilon_outer == OPEN  # any stop counts as grasped: the grasp ends on the object
    for width in (0.0, 0.01, 0.039, 0.045):  # closed, and inside the hysteresis band
        assert hand.command(width, busy=False) is None
    assert hand.command(0.06, busy=False) == HandCommand("move", OPEN, 0.05)  # any width above: fully open


def test_one_command_at_a_time_and_the_newest_width_decides():
    hand = GripperCommander()
    assert hand.command(OPEN, busy=False).kind == "move"
    assert hand.command(0.0, busy=True) is None  # the open still runs: the close waits ...
    assert hand.command(0.0, busy=True) is None
    assert hand.command(0.0, busy=False).kind == "grasp"  # ... and goes once it is done
    assert hand.command(OPEN, busy=True) is None
    assert hand.command(0.01, busy=False) is None  # the open was never sent and is no longer wanted


def test_width_mode_streams_changes_beyond_the_deadband():
    hand = GripperCommander(GripperConfig(mode="width", deadband=0.002))
    assert hand.command(0.05, busy=False) == HandCommand("move", 0.05, 0.05)
    assert hand.command(0.051, busy=False) is None
    assert hand.command(0.04, busy=False) == HandCommand("move", 0.04, 0.05)
    assert hand.command(0.2, busy=False) == HandCommand("move", OPEN, 0.05)  # clamped to the Hand
    assert hand.command(-1.0, busy=False) == HandCommand("move", 0.0, 0.05)


def test_nan_keeps_what_runs_and_reset_forgets():
    hand = GripperCommander()
    assert hand.command(math.nan, busy=False) is None
    assert hand.command(0.0, busy=False).kind == "grasp"
    hand.reset()  # reconnected: the Hand's state is unknown, so the same width is sent again
    assert hand.command(0.0, busy=False).kind == "grasp"


@pytest.mark.parametrize("kw", [dict(mode="stream"), dict(speed=0.0), dict(grasp_force=100.0),
                                dict(close_below=0.0), dict(close_below=0.075, hysteresis=0.01),
                                dict(deadband=0.05)])
def test_config_is_checked(kw):
    with pytest.raises(ValueError, match="gripper"):
        GripperConfig(**kw)


class BlockingHand:
    """A scripted Hand with an object 4 cm wide between its fingers, behaving as the real Franka Hand
    does and franky-sim does not: a move blocked by the object never finishes, a grasp finishes on
    contact. (A fake, because this fault cannot be produced with franky-sim.)"""

    def __init__(self, object_width=0.04):
        self.object_width, self.width, self.running = object_width, OPEN, None

    def start(self, cmd: HandCommand):
        assert self.running is None, "the commander sent a command while one ran"
        self.running = cmd

    def tick(self):
        cmd = self.running
        if cmd is None:
            return
        target = max(cmd.width, self.object_width) if cmd.width < self.width else cmd.width
        self.width = target
        blocked = cmd.kind == "move" and cmd.width < self.object_width
        if not blocked:  # a move to the width, or a grasp stopped on the object: done
            self.running = None


@pytest.mark.parametrize("mode,released", [("binary", True), ("width", False)])
def test_a_grasped_object_is_released_only_when_closing_grasps(mode, released):
    hand, real = GripperCommander(GripperConfig(mode=mode)), BlockingHand()
    widths = [OPEN] * 5 + [0.06, 0.04, 0.02, 0.0] + [0.0] * 10 + [OPEN] * 20  # pick, hold, release
    for w in widths:
        cmd = hand.command(w, busy=real.running is not None)
        if cmd is not None:
            real.start(cmd)
        real.tick()
    assert (real.width == OPEN) is released  # width mode: stuck on the object, the open never sent
