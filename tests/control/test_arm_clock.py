"""ArmClockPacer: the control loop's pace on the arm's own clock, on a simulated pair of clocks (the wall
clock and an arm clock running at a given rate). Against franky-sim at a third of real time:
tests/robot/test_arm_on_fr3.py::test_the_loop_keeps_to_an_arm_whose_clock_runs_slow."""

import pytest

from mail_policy_node.control.franky_arm import ArmClockPacer

PERIOD = 0.01


class Clocks:
    """A wall clock the loop sleeps on and an arm clock at ``rate`` x the wall (0: stopped)."""

    def __init__(self, rate: float, arm_offset: float = 100.0):
        self.wall, self.rate, self.arm0 = 0.0, rate, arm_offset

    def arm(self) -> float:
        return self.arm0 + self.rate * self.wall

    def sleep(self, s: float) -> None:
        self.wall += s


def loop(clocks: Clocks, cycles: int, max_wait: float = 10 * PERIOD):
    """The node's loop: a wall-clock period per cycle, then the pacer. Returns the arm time of each cycle."""
    pacer = ArmClockPacer(PERIOD, max_wait)
    stamps = []
    for _ in range(cycles):
        clocks.sleep(PERIOD)  # the wall-clock pacing (the cycle's own work takes no time here)
        pacer.wait(clocks.arm, clock=lambda: clocks.wall, sleep=clocks.sleep)
        stamps.append(clocks.arm())
    return pacer, stamps


def test_an_arm_keeping_real_time_is_never_waited_for():
    clocks = Clocks(1.0)
    pacer, _ = loop(clocks, 500)
    assert pacer.waits == 0
    assert clocks.wall == pytest.approx(500 * PERIOD)


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.9])
def test_an_arm_slower_than_the_wall_gets_one_period_of_its_own_time_per_cycle(rate):
    clocks = Clocks(rate)
    _, stamps = loop(clocks, 300)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= PERIOD - 0.002  # never less than a period but for the slack (a state is a tick old)
    assert max(gaps) <= PERIOD + 1e-3  # and no slower than the arm allows
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(PERIOD, abs=1e-3)
    assert clocks.wall == pytest.approx(300 * PERIOD / rate, rel=0.05)


def test_a_stopped_arm_clock_delays_each_cycle_by_at_most_max_wait():
    """A lost arm must not stop the loop: it reads the arm's errors, the e-stop and the watchdog."""
    clocks = Clocks(0.0)
    pacer, _ = loop(clocks, 20, max_wait=0.05)
    assert clocks.wall <= 20 * (PERIOD + 0.05 + 0.001)
    assert pacer.waits >= 19


def test_an_arm_clock_ahead_of_the_loop_is_not_caught_up_with_a_burst():
    """After the loop was late (a stall of 0.5 s), the next cycles keep one period apart on the wall clock."""
    clocks = Clocks(1.0)
    pacer = ArmClockPacer(PERIOD, 10 * PERIOD)
    for _ in range(10):
        clocks.sleep(PERIOD)
        pacer.wait(clocks.arm, clock=lambda: clocks.wall, sleep=clocks.sleep)
    clocks.sleep(0.5)
    before = pacer.waits
    for _ in range(10):
        clocks.sleep(PERIOD)
        assert pacer.wait(clocks.arm, clock=lambda: clocks.wall, sleep=clocks.sleep) == 0.0
    assert pacer.waits == before


def test_pacer_settings_are_checked():
    with pytest.raises(ValueError):
        ArmClockPacer(0.01, 0.005)
    with pytest.raises(ValueError):
        ArmClockPacer(0.01, 0.1, slack=0.02)
