"""The strict FR3 emulator (sim/fr3_emulator.py): real franky (libfranka 0.21.2) against franky-sim with
the FR3's limit checks and reflexes, on loopback.

The franky client runs in a child process (this file run as a script): with franky-control 2.0.0 a
Robot whose motion failed may hang or crash when destroyed, which must not take the test session down
(see tests/control/test_franky_sim.py). The child runs every scenario against one bare FR3 (plus one
started outside the joint range) and reports JSON, which the tests below check one part each. The
standalone process (`python -m mail_policy_node.sim.fr3_emulator`) is started as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow]

ACC = "joint_motion_generator_velocity_discontinuity"  # what exceeding 10 rad/s^2 is called
JERK = "joint_motion_generator_acceleration_discontinuity"  # and 5000 rad/s^3


def _env() -> dict:
    import mail_policy_node

    root = os.path.dirname(os.path.dirname(os.path.abspath(mail_policy_node.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


def _requirements() -> None:
    pytest.importorskip("franky")
    pytest.importorskip("franky_sim")


# ------------------------------------------------------------------------------- the client (child process)
def _scenarios(out: Path) -> None:
    import types

    import franky
    from franky import Duration, JointMotion, JointVelocityMotion

    from mail_policy_node.control.limits import FR3_HW_Q_MAX, FR3_HW_Q_MIN
    from mail_policy_node.sim.fr3_emulator import StrictFR3

    res: dict = {}

    def record(name, fn):
        try:
            res[name] = fn()
        except Exception as exc:  # reported, the test of that part fails with it
            res[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out.write_text(json.dumps(res))

    def attempt(fn):
        try:
            fn()
            return None
        except Exception as exc:
            return [type(exc).__name__, str(exc)]

    def wait_commands(mark, k, timeout=20.0):
        """Until ``k`` commands came after ``mark``: the simulator's time, not the wall clock's (it runs
        slower than real time on a loaded machine)."""
        deadline = time.monotonic() + timeout
        while emu.mark() - mark < k and time.monotonic() < deadline:
            time.sleep(0.005)
        return emu.mark() - mark >= k

    def settle(rob, timeout=10.0):
        """Until the measured joints stop moving (positions: franky-sim's joint 7 velocity is not 0 at rest)."""
        deadline = time.monotonic() + timeout
        last = np.array(rob.state.q)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            q = np.array(rob.state.q)
            if np.abs(q - last).max() < 2e-4:
                return True
            last = q
        return False

    # bound to a loopback_candidates address. Lock-step up to 50 ms: on a loaded 2-core machine franky's
    # answer to a state sometimes takes longer than the default 5 ms, and a command applied a tick late
    # bends the next one (CI: joint 1 at 1.62 rad/s^2 where franky plans 1.5); this test measures franky's
    # own trajectory, which a real FR3's real-time client delivers inside the cycle
    fr3 = StrictFR3(command_wait_ms=50.0).start()
    emu = fr3.emulator
    robot = franky.Robot(fr3.hostname, realtime_config=franky.RealtimeConfig.Ignore)
    res["hostname"] = fr3.hostname

    def smooth():
        robot.relative_dynamics_factor = 0.1
        mark, motions = emu.mark(), emu.counters["motions"]
        robot.move(JointVelocityMotion([0.15, 0, 0, 0, 0, 0, 0.2], duration=Duration(300)), asynchronous=True)
        wait_commands(mark, 200)  # then pre-empt it with the opposite direction
        robot.move(JointVelocityMotion([-0.1, 0, 0, 0, 0, 0, -0.15], duration=Duration(150)), asynchronous=True)
        robot.join_motion(30.0)
        c = emu.commands(mark)
        ids = c["message_id"]
        scaled = types.SimpleNamespace(dq_max=np.full(7, 0.5), ddq_max=np.full(7, 2.0), dddq_max=np.full(7, 1000.0))
        return {"reflexes": len(emu.reflexes), "moves": emu.counters["motions"] - motions, "n": int(len(ids)),
                "not_in_time": emu.counters["commands_not_in_time"],
                "id_span": int(ids[-1] - ids[0] + 1), "finished": int(c["finished"].sum()),
                "v1": [float(c["v"][:, 0].min()), float(c["v"][:, 0].max())],
                "ratios": emu.peak_ratios(scaled, since=mark), "states": emu.n_states,
                "peaks": {k: v.tolist() for k, v in emu.peaks(mark).items()}}

    def reject():
        robot.relative_dynamics_factor = 1.0
        for limit in (robot.joint_velocity_limit, robot.joint_acceleration_limit, robot.joint_jerk_limit):
            limit.set(limit.max)  # franky's own maxima: the Panda's (15 rad/s^2 on joint 1)
        n, before = len(emu.reflexes), dict(emu.counters)
        exc = attempt(lambda: robot.move(JointVelocityMotion([1.5, 0, 0, 0, 0, 0, 0], duration=Duration(300))))
        late = {k: emu.counters[k] - before[k] for k in ("commands_not_in_time", "missing_ids", "stale_commands")}
        s = robot.state
        refused = attempt(lambda: robot.move(JointVelocityMotion([0.05, 0, 0, 0, 0, 0, 0], duration=Duration(50))))
        time.sleep(0.5)
        held = emu.states()["q"][-300:]  # positions: franky-sim's joint 7 velocity reads ~0.08 rad/s at rest
        return {"exception": exc, "reflex": emu.reflexes[n] if len(emu.reflexes) > n else None, "late": late,
                "robot_mode": str(s.robot_mode), "current_errors": str(s.current_errors),
                "last_motion_errors": str(s.last_motion_errors), "refused": refused, "in_reflex": emu.in_reflex,
                "moves_refused": emu.counters["moves_refused"], "held_drift": float(np.abs(held - held[0]).max())}

    def recover():
        ok = robot.recover_from_errors()
        s = robot.state
        robot.relative_dynamics_factor = 0.1
        n, mark = len(emu.reflexes), emu.mark()
        exc = attempt(lambda: robot.move(JointVelocityMotion([-0.1, 0, 0, 0, 0, 0, 0], duration=Duration(200))))
        return {"recovered": bool(ok), "robot_mode": str(s.robot_mode), "current_errors": str(s.current_errors),
                "exception": exc, "new_reflexes": len(emu.reflexes) - n, "commands": emu.mark() - mark}

    def inject():
        robot.relative_dynamics_factor = 0.1
        n = len(emu.reflexes)
        start = emu.mark()
        robot.move(JointVelocityMotion([0.1, 0, 0, 0, 0, 0, 0.1], duration=Duration(3000)), asynchronous=True)
        moving = wait_commands(start, 300)
        mark = emu.mark()
        applied = emu.inject_reflex("cartesian_reflex")
        t = time.monotonic()
        exc = attempt(lambda: robot.join_motion(20.0))
        elapsed = time.monotonic() - t
        after = emu.mark() - mark
        ok = robot.recover_from_errors()
        return {"applied": applied, "exception": exc, "elapsed": elapsed, "commands_after": after,
                "reflex": emu.reflexes[n] if len(emu.reflexes) > n else None, "recovered": bool(ok),
                "moving_before": moving}

    def approach():
        """A position motion towards a target past joint 4's lower end, at half of franky's dynamics."""
        settle(robot)  # after the injected reflex
        robot.relative_dynamics_factor = 0.5
        n, mark = len(emu.reflexes), emu.mark()
        q = list(robot.state.q)
        q[3] = -3.2  # the FR3's range ends at -3.0421
        exc = attempt(lambda: robot.move(JointMotion([float(x) for x in q])))
        c = emu.commands(mark)
        return {"exception": exc, "reflex": emu.reflexes[n] if len(emu.reflexes) > n else None,
                "q4_min_commanded": float(c["q"][:, 3].min()), "q_min": FR3_HW_Q_MIN.tolist()}

    def start_outside():
        """Joint 4 held past its upper end (franky-sim's MJCF limit only pushes back softly)."""
        out_of_range = StrictFR3(initial_q=(0.0, -0.3, 0.0, -0.10, 0.0, 1.9, 0.785)).start()
        robot2 = franky.Robot(out_of_range.hostname, realtime_config=franky.RealtimeConfig.Ignore)
        robot2.relative_dynamics_factor = 0.1
        settle(robot2)  # on the MJCF's soft limit
        s = robot2.state
        q = list(s.q)
        q[3] = -0.5
        exc = attempt(lambda: robot2.move(JointMotion([float(x) for x in q])))
        time.sleep(0.3)
        e2 = out_of_range.emulator
        res["_keep"] = id(robot2)  # never destroyed: the process ends with os._exit
        return {"q4": float(s.q[3]), "q_max4": float(FR3_HW_Q_MAX[3]), "exception": exc,
                "reflex": e2.reflexes[0] if e2.reflexes else None,
                "q4_after": float(e2.states()["q"][-1, 3]), "commands": e2.n_commands}

    record("smooth", smooth)
    record("reject", reject)
    record("recover", recover)
    record("inject", inject)
    record("approach", approach)
    robot.recover_from_errors()
    record("start_outside", start_outside)
    res["check_cost_us"] = emu.check_cost_us()
    res["summary_counters"] = emu.summary()["counters"]
    out.write_text(json.dumps(res))


def _touch(host: str) -> None:
    """A small motion against a running standalone emulator."""
    import franky

    robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = 0.1
    robot.move(franky.JointVelocityMotion([0, 0, 0, 0, 0, 0, 0.1], duration=franky.Duration(100)))
    print(json.dumps({"moved": True, "mode": str(robot.state.robot_mode)}), flush=True)


# ------------------------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    _requirements()
    out = tmp_path_factory.mktemp("fr3emu") / "scenarios.json"
    proc = subprocess.run([sys.executable, __file__, "scenarios", str(out)], capture_output=True, text=True,
                          timeout=240, env=_env())
    assert out.exists(), f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    res = json.loads(out.read_text())
    print(json.dumps({k: res.get(k) for k in ("check_cost_us", "summary_counters")}))
    return res


def part(res: dict, name: str) -> dict:
    r = res.get(name)
    assert r is not None, f"scenario {name} did not run: {sorted(res)}"
    assert "error" not in r, f"scenario {name} failed: {r['error']}"
    return r


def test_smooth_motion_stays_inside_every_limit(scenarios):
    r = part(scenarios, "smooth")
    assert r["reflexes"] == 0
    # every 1 ms state of the motion was answered, and the pre-empting motion sent no new Move
    assert r["n"] >= 0.98 * r["id_span"] and r["n"] > 200
    assert r["moves"] == 1 and r["finished"] == 1
    assert r["v1"][1] > 0.1 and r["v1"][0] < -0.05  # it really reversed within the one Move
    fr3 = r["ratios"]["fr3"]
    for q in ("velocity", "acceleration", "jerk", "velocity_bound"):
        assert 0.0 < fr3[q]["max"] < 1.0, (q, fr3[q])
    # franky at factor 0.1 keeps joint 1 within 0.1 x its (Panda) acceleration limit of 15 rad/s^2
    assert fr3["acceleration"]["per_joint"][0] <= 0.15 + 0.01, (fr3["acceleration"], r["not_in_time"])
    # ratios to the given limits describe the same peaks
    peaks = r["peaks"]
    assert np.allclose(r["ratios"]["limits"]["acceleration"]["per_joint"], np.array(peaks["acceleration"]) / 2.0,
                       atol=1e-3)
    assert r["states"] > r["n"]  # the measured state of every physics step is recorded too


def test_panda_dynamics_on_an_fr3_end_in_a_reflex_named_by_franky(scenarios):
    r = part(scenarios, "reject")
    assert r["exception"] is not None, "the FR3 must abort an acceleration of 15 rad/s^2"
    kind, text = r["exception"]
    reflex = r["reflex"]
    # franky's planner ramps joint 1 up at 7500 rad/s^3 to 15 rad/s^2; after libfranka's low-pass filter
    # either bound may fail first (it depends on the state the motion starts from)
    assert reflex["errors"] in ([ACC], [JERK], [ACC, JERK]) and reflex["aborted_motion"]
    assert kind == "ControlException" and "motion aborted by reflex" in text
    assert f'[{", ".join(chr(34) + e + chr(34) for e in reflex["errors"])}]' in text  # franky names exactly these
    # On time, the first command over the FR3's bound is within franky's (Panda) one: 11.3 rad/s^2 in every local
    # run, loaded or not (its commands before: 1.4, 5.2, 9.0). CI saw 17.1 rad/s^2 once (2026-12-07, counters then
    # unrecorded) with the jerk bound not failed: after 9.0 that is a 2 ms step (4,100 rad/s^3), i.e. libfranka
    # answered no state in one cycle and franky's next command covers two. A missed or late answer bends the
    # stream by up to one cycle's change, so then the bound is twice the Panda's: still far below the
    # 150-200 rad/s^2 a stream without the lock-step showed.
    on_time = not any(r["late"].values())
    for d in reflex["detail"]:
        assert d["joint"] == 1 and d["quantity"] in ("acceleration", "jerk")
        fr3, panda = (10.0, 15.0) if d["quantity"] == "acceleration" else (5000.0, 7500.0)
        assert fr3 < abs(d["value"]) <= (1.05 if on_time else 2.0) * panda, (d, r["late"])
    assert r["robot_mode"] == "RobotMode.Reflex"
    for e in reflex["errors"]:
        assert e in r["current_errors"] and e in r["last_motion_errors"]
    # in reflex a new motion is refused, and the arm holds still
    kind, text = r["refused"]
    assert kind == "CommandException" and "Reflex" in text
    assert r["in_reflex"] and r["moves_refused"] >= 1
    assert r["held_drift"] < 2e-3  # over the last 0.3 s


def test_recover_from_errors_then_a_good_motion_runs(scenarios):
    part(scenarios, "reject")
    r = part(scenarios, "recover")
    assert r["recovered"] is True
    assert r["robot_mode"] == "RobotMode.Idle" and r["current_errors"] == "[]"
    assert r["exception"] is None and r["new_reflexes"] == 0 and r["commands"] > 150


def test_injected_collision_reflex_aborts_the_running_motion(scenarios):
    r = part(scenarios, "inject")
    assert r["applied"] and r["moving_before"]
    kind, text = r["exception"]
    assert kind == "ControlException" and "cartesian_reflex" in text
    assert r["reflex"]["source"] == "injected" and r["reflex"]["errors"] == ["cartesian_reflex"]
    assert r["reflex"]["aborted_motion"]
    assert r["elapsed"] < 1.5  # the 3 s motion ended at once
    assert r["commands_after"] <= 5
    assert r["recovered"] is True


def test_approaching_the_joint_range_end_is_refused_before_it(scenarios):
    r = part(scenarios, "approach")
    kind, text = r["exception"]
    assert kind == "ControlException" and "joint_motion_generator_velocity_limits_violation" in text
    assert any(d["quantity"] == "velocity" and d["joint"] == 4 for d in r["reflex"]["detail"])
    assert r["q4_min_commanded"] > r["q_min"][3]  # no command ever left the range


def test_commanded_position_outside_the_range_is_refused(scenarios):
    r = part(scenarios, "start_outside")
    assert r["q4"] > r["q_max4"], "the arm must start past joint 4's upper end"
    kind, text = r["exception"]
    assert kind == "ControlException" and "joint_motion_generator_position_limits_violation" in text
    assert r["reflex"]["errors"] == ["joint_motion_generator_position_limits_violation"]
    assert r["reflex"]["detail"][0]["joint"] == 4 and r["reflex"]["detail"][0]["value"] > r["q_max4"]
    assert r["commands"] == 1  # the very first command was refused
    assert abs(r["q4_after"] - r["q4"]) < 0.01  # and the arm did not move towards -0.5


def _free_host(seed: int) -> str:
    from mail_policy_node.sim.franky import loopback_candidates

    for host in loopback_candidates(seed):
        with socket.socket() as s:
            try:
                s.bind((host, 1337))
                return host
            except OSError:
                continue
    raise RuntimeError("no free loopback address")


def test_standalone_process_serves_injects_and_writes_its_recording(tmp_path):
    _requirements()
    host = _free_host(os.getpid() + 17)
    rec = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "-m", "mail_policy_node.sim.fr3_emulator", "--hostname", host,
                             "--task", "reach", "--seed", "0", "--record", str(rec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 90.0
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            if line.startswith("fr3-emulator ready"):
                break
        assert line.strip() == f"fr3-emulator ready {host}", (line, proc.poll())
        client = subprocess.run([sys.executable, __file__, "touch", host], capture_output=True, text=True,
                                timeout=60, env=_env())
        assert '"moved": true' in client.stdout, client.stdout + client.stderr[-2000:]
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert "fr3-emulator stopped" in out
    summary = json.loads((rec / "fr3_emulator_summary.json").read_text())
    assert summary["hostname"] == host and summary["counters"]["motions"] == 1
    assert summary["commands"] > 80 and summary["commands_per_ms"] > 0.95
    assert [r["errors"] for r in summary["reflexes"]] == [["cartesian_reflex"]]
    assert summary["reflexes"][0]["source"] == "injected" and not summary["reflexes"][0]["aborted_motion"]
    assert summary["ratios"]["fr3"]["acceleration"]["max"] < 1.0
    data = np.load(rec / "fr3_emulator.npz")
    assert len(data["commands_message_id"]) == summary["commands"]
    assert data["commands_value"].shape == (summary["commands"], 7)
    assert len(data["states_q"]) == summary["states"] > summary["commands"]


def test_mail_il_has_the_fr3_emulator_subcommand(capsys):
    from mail_policy_node.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fr3-emulator", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--initial-q" in text and "--record" in text and "--task" in text


def test_error_flag_order_is_libfrankas():
    """Each index of ERROR_NAMES, set alone in franky's own Errors, names that error."""
    franky = pytest.importorskip("franky")
    from mail_policy_node.sim.fr3_emulator import ERROR_NAMES

    assert len(ERROR_NAMES) == 41
    for i, name in enumerate(ERROR_NAMES):
        errors = franky.Errors.__new__(franky.Errors)
        flags = [False] * 41
        flags[i] = True
        errors.__setstate__(tuple(flags))
        assert getattr(errors, name) is True, (i, name)
        assert str(errors).lower().startswith(f'["{name}')  # libfranka's text: tau_J_..., ..._frame_flag


def test_fr3_velocity_bounds_shrink_to_zero_at_the_ends_of_the_range():
    from mail_policy_node.control.limits import FR3_HW_DQ_MAX, FR3_HW_Q_MAX, FR3_HW_Q_MIN, fr3_velocity_bounds

    mid = 0.5 * (FR3_HW_Q_MIN + FR3_HW_Q_MAX)
    lo, hi = fr3_velocity_bounds(mid)
    assert np.allclose(hi, FR3_HW_DQ_MAX) and np.all(lo < 0) and np.all(lo >= -FR3_HW_DQ_MAX)
    lo, hi = fr3_velocity_bounds(FR3_HW_Q_MAX)
    assert np.all(hi < 0.01) and np.allclose(lo, -FR3_HW_DQ_MAX)  # towards the end: (almost) nothing left
    lo, hi = fr3_velocity_bounds(FR3_HW_Q_MIN)
    assert np.all(lo > -0.01) and np.allclose(hi, FR3_HW_DQ_MAX)
    # vectorised over positions, and monotone: closer to the upper end, a lower upper bound
    path = np.linspace(mid, FR3_HW_Q_MAX, 50)
    _, hi = fr3_velocity_bounds(path)
    assert hi.shape == (50, 7) and np.all(np.diff(hi, axis=0) <= 1e-12)


if __name__ == "__main__":
    mode = sys.argv[1]
    try:
        if mode == "scenarios":
            _scenarios(Path(sys.argv[2]))
        elif mode == "touch":
            _touch(sys.argv[2])
    finally:
        sys.stdout.flush()
        os._exit(0)  # franky-control 2.0.0 can hang destroying a Robot whose motion failed
