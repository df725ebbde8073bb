"""The FrankyArm adapter against franky-sim (MuJoCo FR3 speaking the libfranka protocol) on loopback.

franky-sim enforces no limits and raises no reflexes, so these tests check our side: what we stream
stays inside the limits, the arm arrives where it was sent, a hold stops it. What the arm receives at
1 kHz, reflexes and the dry run against a robot are checked on the strict FR3 emulator (tests/robot/).
The loop runs in wall-clock time at 100 Hz. The simulator runs at about 0.9x real time on an idle
machine and much slower on a loaded one, so the tests wait for conditions (with generous timeouts)
instead of fixed durations, and move slowly enough that the lag stays below the tracking-error limit.
"""

import time

import numpy as np
import pytest

from mail_policy_node.control.chunks import ActionChunk
from mail_policy_node.control.controller import ArmController, ControllerConfig, Mode
from mail_policy_node.control.franky_arm import FrankyArm, FrankyArmConfig, run_cycle
from mail_policy_node.control.limits import dynamics_budget
from mail_policy_node.control.safety import SafetyConfig, check_command
from mail_policy_node.control.watchdog import WatchdogConfig
from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME

pytestmark = [pytest.mark.franky_sim, pytest.mark.slow]

NAMES = FR3_JOINT_NAMES + (GRIPPER_NAME,)
PERIOD = 0.01
ARRIVAL_TOLERANCE = 0.01  # [rad]


# slow limits: the simulated arm lags its commands when the machine is loaded (filter velocity 0.25 x table)
BUDGET = dynamics_budget(1.0, velocity_scale=0.3125, acceleration_scale=0.375, jerk_scale=0.125)


@pytest.fixture(scope="module")
def arm(franky_sim):
    a = FrankyArm(FrankyArmConfig(host=franky_sim, dry_run=False, realtime=False, budget=BUDGET, use_gripper=True))
    a.connect(timeout=20.0)
    yield a
    a.close()


def loop(ctrl, arm, seconds, chunk_fn=None, on_cycle=None, until=None):
    """Run the control loop at PERIOD for ``seconds`` or until ``until(arm_state)`` holds (returns True then);
    chunk_fn(k, now) may return a chunk to submit; on_cycle(out, arm) sees every cycle's output."""
    start = time.monotonic()
    k = 0
    while True:
        now = time.monotonic()
        if now - start > seconds:
            return False
        if until is not None and until(arm.read_state()):
            return True
        if chunk_fn is not None:
            chunk = chunk_fn(k, now)
            if chunk is not None:
                ctrl.submit_chunk(chunk, now)
        out = run_cycle(ctrl, arm, now)
        if on_cycle is not None:
            on_cycle(out, arm)
        k += 1
        time.sleep(max(0.0, start + k * PERIOD - time.monotonic()))


def controller(arm, timeout=0.5):
    safety = SafetyConfig(cycle_period=PERIOD, limits=BUDGET.filter)
    cfg = ControllerConfig(safety=safety, watchdog=WatchdogConfig(timeout=timeout))
    ctrl = ArmController(cfg)
    s = arm.read_state()
    ctrl.update_measurement(s.q, s.host_time, s.gripper_width)
    assert ctrl.enable(s.host_time)[0]
    return ctrl


def settle(arm, timeout=10.0):
    """Wait until the simulated arm's position is steady (it may lag the commands); returns its state.
    Position, not dq: at rest franky-sim reports a few 0.01 rad/s on joint 7 against its friction."""
    deadline = time.monotonic() + timeout
    last = arm.read_state()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        s = arm.read_state()
        if np.max(np.abs(s.q - last.q)) < 3e-4:
            return s
        last = s
    return last


def test_state_has_robot_time_and_seven_joints(arm):
    a = arm.read_state()
    time.sleep(0.1)
    b = arm.read_state()
    assert a.q.shape == (7,) and np.all(np.isfinite(a.q))
    assert b.robot_time > a.robot_time  # the robot's own clock advances


def test_joint7_moves_by_0p2_rad_and_arrives(arm):
    ctrl = controller(arm, timeout=2.0)
    q0 = arm.read_state().q
    target = q0.copy()
    target[6] += 0.2
    seq = iter(range(10**6))

    def chunks(k, now):
        if k % 10 == 0:
            return ActionChunk(now - 0.02, 0.0, 0.1, np.tile(np.r_[target, 0.04], (5, 1)), NAMES, policy_id="t",
                               sequence=next(seq))
        return None

    arrived = loop(ctrl, arm, 30.0, chunks, until=lambda st: abs(st.q[6] - target[6]) < 0.5 * ARRIVAL_TOLERANCE)
    s = settle(arm)
    err = float(abs(s.q[6] - target[6]))
    print(f"joint 7 arrival error {err * 1e3:.2f} mrad; other joints {np.max(np.abs(s.q[:6] - q0[:6])) * 1e3:.2f} mrad")
    assert arrived and err < ARRIVAL_TOLERANCE
    assert np.max(np.abs(s.q[:6] - q0[:6])) < ARRIVAL_TOLERANCE
    assert arm.last_error is None and ctrl.mode in (Mode.ENABLED, Mode.HOLDING)


def test_streamed_garbage_and_jumps_never_exceed_limits(arm):
    ctrl = controller(arm, timeout=0.5)
    cfg = ctrl.config.safety
    q0 = arm.read_state().q
    rng = np.random.default_rng(0)
    seq = iter(range(10**6))
    prev = [ctrl.command]
    measured_v, sent_v, violations = [], [], []

    def chunks(k, now):
        if k % 10:
            return None
        kind = k // 10 % 4
        rows = q0 + rng.uniform(-0.25, 0.25, 7) + np.linspace(0, 0.05, 6)[:, None]  # jumps between chunks
        if kind == 1:
            rows[2, 3] = np.nan
        elif kind == 2:
            rows[:, 5] = 4.4  # beyond the filter's joint range (inside the FR3's: clamped, not refused)
        return ActionChunk(now - 0.03, 0.0, 0.1, np.column_stack([rows, np.full(6, 0.03)]), NAMES, policy_id="g",
                           sequence=next(seq))

    def on_cycle(out, a):
        if out.send and prev[0] is not None:  # consecutive commands that were both sent
            violations.extend(check_command(cfg, prev[0], out.command))
        prev[0] = out.command if out.send else None
        s = a.read_state()
        measured_v.append(np.abs(s.dq))
        sent_v.append(np.abs(a.velocity_for(out.command, s.q)))

    loop(ctrl, arm, 3.0, chunks, on_cycle)
    ctrl.estop()
    loop(ctrl, arm, 1.0, None, on_cycle)
    assert violations == []
    # what franky is asked for: the filter's velocity plus the bounded feedback, inside the caps
    assert np.all(np.max(sent_v, axis=0) <= BUDGET.caps.dq_max + 1e-9)
    assert np.all(np.max(sent_v, axis=0) <= cfg.velocity_limit + BUDGET.max_correction + 1e-9)
    # the simulated arm's own velocity stays near what we commanded (10 % + 0.05 rad/s for its dynamics)
    assert np.all(np.max(measured_v, axis=0) <= 1.1 * BUDGET.caps.dq_max + 0.05)
    assert ctrl.counters.chunks_rejected > 0 and ctrl.counters.limit_hits > 0


def test_watchdog_hold_stops_the_arm(arm):
    ctrl = controller(arm, timeout=0.2)
    q0 = arm.read_state().q
    ramp = q0 + np.linspace(0.1, 0.5, 6)[:, None] * np.r_[1.0, np.zeros(6)]
    sent = []

    def chunks(k, now):  # one long chunk, then silence: the watchdog must trip after 0.2 s
        if k == 0:
            return ActionChunk(now, 0.0, 0.5, np.column_stack([ramp, np.full(6, 0.04)]), NAMES, policy_id="h",
                               sequence=0)
        return None

    loop(ctrl, arm, 1.5, chunks, lambda out, a: sent.append(out))
    assert ctrl.mode == Mode.HOLDING and ctrl.reason == "chunk_timeout"
    assert any(abs(o.command.dq[0]) > 0.05 for o in sent)  # it was moving when the watchdog tripped
    assert sent[-1].command.at_standstill
    held = sent[-1].command.q
    # keep cycling in HOLDING (as the node does): the lagging simulated arm converges on the held command
    assert loop(ctrl, arm, 20.0, until=lambda st: np.max(np.abs(st.q - held)) < 0.5 * ARRIVAL_TOLERANCE)
    assert ctrl.mode == Mode.HOLDING and np.array_equal(ctrl.command.q, held)  # the command never moved
    s = settle(arm)
    assert np.max(np.abs(s.q - held)) < ARRIVAL_TOLERANCE


def test_whole_chunks_arriving_after_their_plan_ran_out_keep_the_arm_going(arm):
    """The paper's whole-chunk execution: the policy observes after a chunk's last action, so the next
    chunk arrives one latency after the plan ran out (here 0.3 s, a loaded CPU's p99). The watchdog tripped
    0.25 s after the last action (chunk_consumed, latched until an enable) and the sim profile's episodes
    ended there. Now the arm settles on the last action, goes on with the next chunk, and holds only when
    no chunk comes within the timeout after the policy's replanning period (execute_horizon x dt)."""
    ctrl = controller(arm, timeout=0.3)
    q0 = arm.read_state().q
    start, fed, sent = time.monotonic(), [], []

    def chunks(k, now):  # chunk i observed at start + 0.5 i, arriving 0.3 s later; four, then silence
        i = len(fed)
        if i == 4 or now < start + 0.5 * i + 0.3:
            return None
        fed.append(now)
        rows = q0 + 0.005 * (5 * i + np.arange(1, 6))[:, None] * np.r_[1.0, np.zeros(6)]  # slow: the sim lags
        return ActionChunk(start + 0.5 * i, 0.0, 0.1, np.column_stack([rows, np.full(5, 0.04)]), NAMES,
                           policy_id="j", sequence=i, execute_horizon=5)

    def on_cycle(out, a):
        sent.append((time.monotonic(), out.mode))

    loop(ctrl, arm, 4.0, chunks, on_cycle, until=lambda st: ctrl.mode != Mode.ENABLED)
    assert len(fed) == 4 and ctrl.counters.chunks_rejected == 0, (fed, ctrl.mode, ctrl.reason, sent[-3:])
    tripped = next(t for t, mode in sent if mode == Mode.HOLDING)
    assert ctrl.reason == "chunk_timeout" and ctrl.counters.watchdog_trips == 1
    # not before the last chunk's deadline (its 0.5 s period + 0.3 s), and soon after it
    assert fed[-1] + 0.8 <= tripped <= fed[-1] + 0.8 + 0.1, (fed, tripped)
    target = q0[0] + 0.1
    assert abs(ctrl.command.q[0] - target) < ARRIVAL_TOLERANCE  # every chunk ran to its last action
    s = settle(arm)
    assert abs(s.q[0] - target) < 2 * ARRIVAL_TOLERANCE


def test_gripper_closes_with_a_grasp_and_opens_again(arm):
    """Commanded widths reach the simulated Hand as a grasp (closing) and a move (opening); the width
    it reports follows. franky-sim also finishes moves blocked by an object, which the real Hand does
    not: tests/control/test_gripper.py shows that case."""
    from mail_policy_node.control.safety import CommandState

    q = settle(arm).q

    def drive(width, until, seconds=15.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            arm.send(CommandState.at_rest(q, gripper=width), q)
            s = arm.read_state()
            if s.gripper_width is not None and until(s.gripper_width):
                return s.gripper_width
            time.sleep(PERIOD)
        return arm.read_state().gripper_width

    assert drive(0.08, lambda w: w > 0.075) > 0.075
    assert drive(0.0, lambda w: w < 0.005) < 0.005
    assert arm.commander.closed is True
    deadline = time.monotonic() + 5.0
    while not arm.hand.gripper.is_grasped and time.monotonic() < deadline:  # set once the fingers settle
        time.sleep(0.05)
    assert arm.hand.gripper.is_grasped  # nothing in between: the grasp ended at width 0 and holds
    assert drive(0.08, lambda w: w > 0.075) > 0.075
    assert arm.commander.closed is False


def test_streamed_sine_is_tracked_closely_on_the_robot_clock(arm):
    """Full stack (chunks -> scheduler -> filter -> velocity streaming) paced by the robot's own clock,
    so the result does not depend on how fast the loaded machine runs the simulator."""
    safety = SafetyConfig(cycle_period=PERIOD, limits=BUDGET.filter)
    ctrl = ArmController(ControllerConfig(safety=safety, watchdog=WatchdogConfig(timeout=1.0)))
    s = arm.read_state()
    ctrl.update_measurement(s.q, s.robot_time)
    assert ctrl.enable(s.robot_time)[0]
    q0, t0 = s.q.copy(), s.robot_time

    def target(t):
        q = q0.copy()
        q[0] += 0.1 * np.sin(2 * np.pi * 0.25 * (t - t0))
        q[6] += 0.2 * np.sin(2 * np.pi * 0.25 * (t - t0))
        return q

    errors, k = [], 0
    while True:
        s = arm.read_state()
        now = s.robot_time
        if now - t0 > 3.0:
            break
        if k % 10 == 0:  # a 10 Hz policy with 8-step chunks
            rows = np.array([np.r_[target(now + i * 0.1), 0.04] for i in range(8)])
            assert ctrl.submit_chunk(ActionChunk(now, 0.0, 0.1, rows, NAMES, policy_id="sine", sequence=k), now).ok
        ctrl.update_measurement(s.q, now)
        out = ctrl.step(now)
        arm.send(out.command, s.q)
        if now - t0 > 1.0:
            errors.append(s.q - target(now))
        k += 1
        deadline = time.monotonic() + 1.0
        while arm.read_state().robot_time < t0 + k * PERIOD - 1e-9 and time.monotonic() < deadline:
            time.sleep(0.0005)
    errors = np.abs(np.array(errors))
    rms = np.sqrt(np.mean(errors**2, axis=0))
    print(f"sine tracking vs policy target: rms j1 {rms[0] * 1e3:.2f} mrad, j7 {rms[6] * 1e3:.2f} mrad, "
          f"max {errors.max() * 1e3:.2f} mrad")
    assert arm.poll_error() is None and ctrl.mode == Mode.ENABLED
    assert errors.max() < 0.01


_ERROR_SCRIPT = r"""
import json, os, signal, subprocess, sys, time
import numpy as np
import franky
from mail_policy_node.control.controller import ArmController, ControllerConfig
from mail_policy_node.control.franky_arm import FrankyArm, FrankyArmConfig, run_cycle

exe, host = sys.argv[1], sys.argv[2]
sim = subprocess.Popen([exe, "-s", "mujoco", "--hostname", host], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
result = {}
try:
    arm = FrankyArm(FrankyArmConfig(host=host, dry_run=False, realtime=False, use_gripper=False))
    arm.connect(timeout=30.0)
    ctrl = ArmController(ControllerConfig())
    s = arm.read_state()
    ctrl.update_measurement(s.q, s.host_time)
    ctrl.enable(s.host_time)
    v = np.zeros(7)
    v[6] = 100.0  # far beyond franky's velocity limit: its planner fails inside the motion thread
    arm.robot.move(franky.JointMotion(franky.JointState(s.q, v)), asynchronous=True)
    deadline = time.monotonic() + 5.0
    err = None
    while err is None and time.monotonic() < deadline:
        err = arm.poll_error()
        time.sleep(0.01)
    result["error"] = err
    ctrl.set_error(err or "none")
    result["mode_after_error"] = int(ctrl.mode)
    arm.recover()
    result["recovered"] = ctrl.recovered()[0]
    s = arm.read_state()
    ctrl.update_measurement(s.q, s.host_time)
    result["enabled"] = ctrl.enable(s.host_time)[0]
    out = run_cycle(ctrl, arm)
    time.sleep(0.05)
    result["sent_after_recovery"] = bool(out.send)
    result["error_after_recovery"] = arm.poll_error()
finally:
    print(json.dumps(result), flush=True)
    sim.send_signal(signal.SIGINT)
    try:
        sim.wait(5)
    except subprocess.TimeoutExpired:
        sim.kill()
    os._exit(0)  # franky 2.0.0: tearing down a Robot after a failed async motion can hang or crash
"""


def test_motion_errors_surface_through_poll_error_and_recover(franky_sim, tmp_path):
    """Runs in its own process with its own simulator: with franky-control 2.0.0, destroying a Robot
    whose asynchronous motion failed (then recovered and moved again) hangs or segfaults, which must
    not take the test session down."""
    import json
    import os
    import subprocess
    import sys

    from .conftest import _franky_sim_command

    script = tmp_path / "error_path.py"
    script.write_text(_ERROR_SCRIPT)
    host = f"127.78.{os.getpid() // 250 % 250 + 1}.{os.getpid() % 250 + 1}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
        os.path.abspath(__import__("mail_policy_node").__file__))), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(script), _franky_sim_command()[0], host], capture_output=True,
                          text=True, timeout=120, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    r = json.loads(lines[-1])
    assert r["error"] and "error" in r["error"].lower()
    assert r["mode_after_error"] == int(Mode.ERROR)
    assert r["recovered"] and r["enabled"] and r["sent_after_recovery"]
    assert r["error_after_recovery"] is None
