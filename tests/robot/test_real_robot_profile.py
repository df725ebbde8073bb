"""The `real_robot` profile, verbatim, against the strict FR3 emulator: through `mail-il up` and through the
real `ros2 launch` of a plain colcon install. Per path: the GPU-box part (two RealSense cameras playing
recordings, the policy) once, then per runbook stage the real-time-PC part (the controller) and a fresh
emulator: a dry run, then live at relative_dynamics_factor 0.1, 0.3, 0.6 and 1.0, each with the shipped
reach policy and then, swapped in by a parameter set while enabled, a random-weight policy whose chunks
jump around.

Per stage it asserts what the FR3 would have felt (from the emulator's recording of every 1 kHz command):
no reflex; every command's velocity / acceleration / jerk at most the FR3's limits, and at most the caps
(the FR3 table x the profile's scales x the factor) but for load spikes at motion switches (at most
MAX_OVER_CAPS_SHARE of the commands; each excursion reported); the first command after enable within one
cycle's step of the measured pose; the Hand not
commanded between an enable and the first chunk; the swap to another policy held until an enable; and
for the dry run, nothing sent to the arm at all. The figures are printed and, with MAIL_ROBOT_FIGURES=path,
written as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest

from mail_policy_node.control.limits import FR3_HW_DDDQ_MAX, FR3_HW_DDQ_MAX, FR3_HW_DQ_MAX
from mail_policy_node.control.params import controller_setup
from mail_policy_node.sim.franky import loopback_candidates
from tests.robot.stack import (SHIPPED, STAGES, Emulator, Process, arm_clock_rate, at_rest, drive, profile_params,
                               random_checkpoint, record_cameras, replan_period, stream_ratios, task_start)
from tests.rosutil import probe, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.franky_sim]

RUN_S = 5.0  # each policy drives this long per stage
RECORDING_S = 420.0  # camera recordings cover one path's stages (~300 s on a slow 2-core machine)
CAPS_TOLERANCE = 1e-3  # libfranka's own kLimitEps, as the emulator's checks
# The caps bound every plan franky makes, but not every 1 kHz command on this loaded 2-core machine: franky
# starts each motion that pre-empts the last from the robot state it read, and a late state steps the
# acceleration (jerk spikes up to 7.8x the cap and acceleration 1.7x on fresh-clone CI at factor 0.3; none in the
# 43,000 commands of a local run beside one busy process). The FR3's own limits are asserted on every command;
# the caps on the share of commands over them: a controller that did not set franky's limits to the caps is over
# them whenever it saturates (thousands of commands a stage at factor 0.3, where the policies hit the limits
# ~500 cycles), load spikes a few ms each. Each excursion over the caps is reported (where, how long, what the
# client's timing was then).
MAX_OVER_CAPS_SHARE = 0.005
# chunks the controller accepts from the shipped policy per stage: 2 s of driving (a chunk per replanning period).
# The cameras replay a still scene (the arm at its start), so once the arm has moved the policy plans from a
# picture that no longer shows it, and its chunks may start too far from the arm and be refused (far_from_arm),
# the check doing its job; a stage can then drive for less than its RUN_S (6 and 7 chunks where 8 were asked,
# at factor 0.3 on a machine whose emulated arm kept real time)
MIN_ACCEPTED = round(2.0 / replan_period())


@dataclass
class Scene:
    q0: np.ndarray
    cameras: dict
    root: Path  # checkpoint_root: the shipped policy and a random-weight one
    folder: Path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real_robot")
    q0, frames = task_start()
    cameras = record_cameras(folder, frames, RECORDING_S)
    root = folder / "checkpoints"
    shutil.copytree(SHIPPED / "reach_dma_small", root / "reach_dma_small")
    random_checkpoint(root)
    yield Scene(q0, cameras, root, folder)
    shutil.rmtree(folder, ignore_errors=True)  # ~0.4 GB of recordings


def stack_env(base: dict | None = None) -> dict:
    """The profile's own Fast DDS profile (shared memory for the 640x480 images between the camera and policy
    processes), not the suite's UDP-only one: 2 x 30 frames/s of 0.9 MB over fragmented UDP reached the
    policy at under 1 Hz. The suite runs in a namespace with a /dev/shm of its own (scripts/run_tests.sh)."""
    from mail_policy_node.rosenv import FASTDDS_PROFILE

    return {**(os.environ if base is None else base), "FASTRTPS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE)}


class Up:
    """The profile through `mail-il up` (this checkout's editable install); services through rclpy."""

    name = "mail-il up"

    def __init__(self, probe):
        self.p = probe

    def start(self, *args: str) -> Process:
        return Process([sys.executable, "-m", "mail_policy_node.cli", "up", "real_robot", *args], env=stack_env())

    def call(self, service: str) -> tuple[bool, str]:
        """One Trigger call. A response can be lost when the server has not yet matched this new client's
        reply reader (rmw: "failed to send response (timeout)", seen twice in CI on the last stage's fresh
        controller): the call is then made once more with a new client (the controller's services are
        idempotent: enabling an enabled arm answers "already enabled")."""
        from std_srvs.srv import Trigger

        for attempt in (1, 2):
            client = self.p.node.create_client(Trigger, service)
            try:
                assert client.wait_for_service(timeout_sec=20), service
                fut = client.call_async(Trigger.Request())
                try:
                    wait_for(fut.done, 10, what=service)
                except TimeoutError:
                    if attempt == 2:
                        raise
                    continue
                return fut.result().success, fut.result().message
            finally:
                self.p.node.destroy_client(client)

    def set_checkpoint(self, name: str) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = self.p.node.create_client(SetParameters, "/policy_node/set_parameters")
        assert client.wait_for_service(timeout_sec=20)
        req = SetParameters.Request(parameters=[Parameter(name="checkpoint", value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=name))])
        fut = client.call_async(req)
        wait_for(fut.done, 60, what="checkpoint set")
        assert fut.result().results[0].successful, fut.result().results[0].reason


class Launch(Up):
    """The profile through the real `ros2 launch` from the plain colcon install; services and parameters
    through the real `ros2 service call` / `ros2 param set`."""

    name = "ros2 launch"

    def __init__(self, probe):
        from tests.launch import install_env

        super().__init__(probe)
        self.env = stack_env(install_env("plain"))  # skips without ../shared/ros2-tools

    def start(self, *args: str) -> Process:
        from tests.launch import ROS2

        return Process([str(ROS2), "launch", "mail_bringup", "real_robot.launch.py", *args], env=self.env)

    def call(self, service: str) -> tuple[bool, str]:
        from tests.launch import ros2_until

        r = ros2_until(self.env, "service", "call", service, "std_srvs/srv/Trigger",
                       ok=lambda r: "success=" in r.stdout, timeout=60)
        assert "success=" in r.stdout, r.stdout + r.stderr
        return "success=True" in r.stdout, r.stdout.split("message=")[-1].strip(" ')\n")

    def set_checkpoint(self, name: str) -> None:
        from tests.launch import ros2_until

        r = ros2_until(self.env, "param", "set", "/policy_node", "checkpoint", name, timeout=90)
        assert "Set parameter successful" in r.stdout, r.stdout + r.stderr


def run_profile(driver_class, scene: Scene) -> list[dict]:
    from mail_msgs.msg import ActionChunk, ControllerStatus, PolicyStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    hosts = loopback_candidates(os.getpid() + (7 if driver_class is Launch else 0))
    params = profile_params()
    figures = []
    with probe(settle=15.0) as p:  # the stack's participants gone first (tests/rosutil.Probe.close)
        driver = driver_class(p)
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        policy = p.subscribe(PolicyStatus, "/mail/policy_status")
        chunks = p.subscribe(ActionChunk, "/mail/action_chunk",
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        commands = p.subscribe(JointState, "/mail/action_command")
        gpu = driver.start("machine:=gpu", "device:=cpu", f"checkpoint_root:={scene.root}",
                           "checkpoint:=reach_dma_small", f"agentview_playback_file:={scene.cameras['agentview']}",
                           f"wrist_playback_file:={scene.cameras['wrist']}")
        try:
            try:
                wait_for(lambda: (policy and policy[-1].checkpoint == "reach_dma_small") or gpu.proc.poll() is not None,
                         120, what="the policy loaded")
                assert gpu.proc.poll() is None, "the GPU part ended"
            except (TimeoutError, AssertionError):
                print("--- the GPU part's output\n" + gpu.output(80))
                raise
            for factor in (None, *STAGES):
                figures.append(run_stage(driver, scene, next(hosts), params, factor, status, chunks, commands, policy,
                                         p.arrivals["/mail/action_chunk"]))
        finally:
            rc = gpu.stop()
            gpu.kill_group()
    assert rc in (0, -2, 130), gpu.output()
    return figures


def run_stage(driver, scene, host, params, factor, status, chunks, commands, policy, arrivals) -> dict:
    from mail_msgs.msg import ControllerStatus

    dry = factor is None
    name = "dry_run" if dry else f"factor_{factor:g}"
    folder = scene.folder / f"{driver.name.replace(' ', '_')}_{name}"
    emu = Emulator(host, folder)
    rt = None
    try:
        args = [f"robot_ip:={host}", "realtime:=false", f"dry_run:={'true' if dry else 'false'}"]
        if not dry:
            args.append(f"relative_dynamics_factor:={factor}")
        t_start = time.time()
        rt = driver.start("machine:=rt", *args)
        fresh = lambda: [s for s in status if s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 > t_start]  # noqa: E731
        wait_for(lambda: fresh() and fresh()[-1].mode == ControllerStatus.MODE_DISABLED, 60, what="controller up")
        wait_for(lambda: arrivals and time.time() - arrivals[-1] < 0.5, 60, what="chunks flowing")
        n_cmd = len(commands)
        t_enable, t_enable_wall = time.monotonic(), time.time()
        ok, why = driver.call("/franka_controller/enable")
        assert ok, why
        trips = drive(lambda: fresh()[-1], commands, lambda: enable_again(driver), RUN_S,
                      lambda s: s.chunks_received - s.chunks_rejected >= MIN_ACCEPTED)
        s = fresh()[-1]
        figures = {"path": driver.name, "stage": name, "mode_after_shipped": int(s.mode), "reason": s.reason,
                   "rejections": _rejections(s),
                   "chunks_received": int(s.chunks_received), "watchdog_trips_while_driving": trips}
        gaps = np.diff([t for t in arrivals if t >= t_enable_wall])
        figures["chunk_gap_max_s"] = float(gaps.max()) if len(gaps) else None
        # the policy drove (what its chunks may be refused for is judged with the arm's clock rate, below)
        assert s.chunks_received - s.chunks_rejected >= MIN_ACCEPTED, (name, figures)
        if not dry:
            # another policy while enabled: refused (the arm holds) until an explicit enable
            driver.set_checkpoint("reach_random")
            wait_for(lambda: fresh()[-1].mode == ControllerStatus.MODE_HOLDING, 20, what="hold on the swapped policy")
            figures["swap_hold_reason"] = fresh()[-1].reason  # the load's gap in chunks may trip the watchdog first
            # the swapped-in policy's chunks reach the controller while the arm holds, and do not drive it: refused
            # as another policy's while the shipped one is bound to the enable; on a loaded machine the last enable
            # (after a watchdog hold) may have bound none yet, and they are refused by their own checks (too_fast,
            # far_from_arm) or scheduled for a hold that only an enable ends. Either way the arm holds
            wait_for(lambda: policy and policy[-1].checkpoint == "reach_random", 60, what="the swapped policy loaded")
            base = fresh()[-1]
            wait_for(lambda: fresh()[-1].chunks_received >= base.chunks_received + 3, 30,
                     what="the swapped policy's chunks at the controller")
            held = fresh()[-1]
            before = _rejections(base)
            figures["swap_refusals"] = {k: v - before.get(k, 0) for k, v in _rejections(held).items()
                                        if v > before.get(k, 0)}
            figures["mode_when_refused"] = int(held.mode)
            wait_for(lambda: fresh()[-1].mode == ControllerStatus.MODE_HOLDING and at_rest(commands), 10,
                     what="at rest")
            for _ in range(20):  # the operator enables again once the hold has come to rest
                ok, why = driver.call("/franka_controller/enable")
                if ok or "decelerating" not in why:
                    break
                time.sleep(0.1)
            assert ok, why
            drive(lambda: fresh()[-1], commands, lambda: enable_again(driver), RUN_S)
            s = fresh()[-1]
            figures["random_rejections"] = _rejections(s)
            figures["limit_hits"] = int(s.limit_hits)
            driver.set_checkpoint("reach_dma_small")
        driver.call("/franka_controller/disable")
        wait_for(lambda: fresh()[-1].mode == ControllerStatus.MODE_DISABLED, 20, what="disabled")
        cmd_q = np.array([c.position[:7] for c in commands[n_cmd:]])
        figures["commanded_travel_rad"] = float(np.max(np.ptp(cmd_q, axis=0))) if len(cmd_q) else 0.0
    except BaseException:
        print(f"--- {name}: the controller part's output\n" + (rt.output(80) if rt is not None else "(not started)"))
        print(f"--- the emulator's output\n{emu.output(30)}")
        raise
    finally:
        if rt is not None:
            rt.stop()
            rt.kill_group()
        summary = emu.finish()
    return judge(figures, summary, params, factor, t_enable)


def enable_again(driver) -> None:
    ok, why = driver.call("/franka_controller/enable")
    assert ok or "decelerating" in why, why


def _rejections(status) -> dict:
    return dict(zip(status.rejection_names, map(int, status.rejection_counts)))


def excursions(rec: dict, over: list[int], t_enable: float, most: int = 10) -> list[dict]:
    """The runs of consecutive commands over the caps (indices into the joint-interface commands): when (s
    after the enable), how many commands, whether a motion started there, the state-id gap before it and
    how late the client's answer to that state came (ms after the state was sent)."""
    joint = rec["commands_mode"] > 0
    ids, t, motion = rec["commands_message_id"][joint], rec["commands_t"][joint], rec["commands_motion"][joint]
    sent = dict(zip(rec["states_message_id"].tolist(), rec["states_t"].tolist()))
    runs = np.split(np.asarray(over, int), np.flatnonzero(np.diff(over) > 1) + 1) if over else []
    out = []
    for run in runs[:most]:
        i = int(run[0])
        out.append({"t_s": round(float(t[i] - t_enable), 4), "commands": len(run),
                    "motion_start": bool(i == 0 or motion[i] != motion[i - 1]),
                    "id_gap": int(ids[i] - ids[i - 1]) if i else None,
                    "answer_late_ms": round(float(t[i] - sent.get(int(ids[i]), np.nan)) * 1e3, 2)})
    return out


def judge(figures: dict, summary: dict, params: dict, factor, t_enable: float) -> dict:
    rec = summary["recording"]
    # The shipped policy's chunks are refused only for being late (all_stale) or for starting too far from the
    # arm (far_from_arm): the cameras replay a still scene, so a plan made after the arm moved does not follow it
    # (MIN_ACCEPTED). This was allowed only where the emulated arm's clock ran slow, and failed at factor 0.3
    # on a machine that kept it at real time (the old stack too): a watchdog hold after such refusals, then more
    figures["arm_clock_rate"] = round(arm_clock_rate(rec), 3)
    assert set(figures["rejections"]) <= {"all_stale", "far_from_arm"}, figures
    figures["reflexes"] = [r["errors"] for r in summary["reflexes"]]
    figures["hand_commands"] = [h["kind"] for h in summary["hand_commands"]]
    if factor is None:  # dry run: computed and published, nothing sent
        figures["emulator_commands"] = int(summary["commands"])
        print(json.dumps(figures))
        assert summary["commands"] == 0 and summary["hand_commands"] == [], figures
        assert figures["commanded_travel_rad"] > 1e-3, figures  # the commands were computed
        assert figures["reflexes"] == []
        return figures
    caps = controller_setup({**params, "relative_dynamics_factor": factor}).budget.caps
    ratios, over = stream_ratios(summary, caps, CAPS_TOLERANCE)
    fr3, _ = stream_ratios(summary, SimpleNamespace(dq_max=FR3_HW_DQ_MAX, ddq_max=FR3_HW_DDQ_MAX,
                                                    dddq_max=FR3_HW_DDDQ_MAX))
    figures["caps_ratios"] = {k: round(v, 4) for k, v in ratios.items()}
    figures["fr3_ratios"] = {k: round(v, 4) for k, v in fr3.items()}
    over_any = sorted(set().union(*over.values()))
    figures["commands"] = int(np.count_nonzero(rec["commands_mode"] > 0))
    figures["commands_over_caps"] = len(over_any)
    figures["excursions_over_caps"] = excursions(rec, over_any, t_enable)
    joint = rec["commands_mode"] > 0
    t_cmd, q_cmd = rec["commands_t"][joint], rec["commands_q"][joint]
    first = int(np.searchsorted(t_cmd, t_enable))
    states_t, states_q = rec["states_t"], rec["states_q"]
    k = min(int(np.searchsorted(states_t, t_cmd[first])), len(states_t) - 1)
    figures["first_command_from_measured_rad"] = float(np.max(np.abs(q_cmd[first] - states_q[k])))
    # an enable alone must not move the Hand: its first command comes with the first chunk, which is also
    # when the arm starts to move (both on the emulator's clock; 20 ms of the arm's clock for the Hand thread
    # and the cycle: CI's emulated arm at 0.26x real time moved 23 ms of wall time after the Hand's command)
    moving = np.flatnonzero(np.any(np.abs(rec["commands_v"][joint][first:]) > 1e-6, axis=1))
    t_motion = t_cmd[first + moving[0]] if len(moving) else float("inf")
    hand = [h["t"] for h in summary["hand_commands"] if h["t"] >= t_enable]
    figures["first_hand_command_after_first_motion_s"] = round(min(hand) - t_motion, 4) if hand else None
    slack = 0.02 / min(1.0, figures["arm_clock_rate"])
    figures["hand_before_first_chunk"] = sum(1 for t in hand if t < t_motion - slack)
    print(json.dumps(figures))
    record(figures)
    assert figures["reflexes"] == [], figures
    for name, r in fr3.items():
        assert r <= 1.0, (name, r, figures)
    assert figures["commands_over_caps"] <= MAX_OVER_CAPS_SHARE * figures["commands"], figures
    assert figures["first_command_from_measured_rad"] <= params["max_joint_step"], figures
    assert figures["hand_before_first_chunk"] == 0, figures
    assert figures["mode_when_refused"] == 2, figures  # HOLDING: the swapped-in policy did not drive unasked
    return figures


def record(figures: dict) -> None:
    path = os.environ.get("MAIL_ROBOT_FIGURES")
    if path:
        path = Path(path)
        data = json.loads(path.read_text()) if path.is_file() else []
        data.append(figures)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))


# Five stages of about a minute each (dry run, factors 0.1 ... 1): past pytest.ini's 300 s on a loaded machine.
PROFILE_RUN_TIMEOUT_S = 600


@pytest.mark.timeout(PROFILE_RUN_TIMEOUT_S)
def test_real_robot_profile_through_mail_il_up(scene):
    figures = run_profile(Up, scene)
    assert [f["stage"] for f in figures] == ["dry_run"] + [f"factor_{f:g}" for f in STAGES]


@pytest.mark.timeout(PROFILE_RUN_TIMEOUT_S)
def test_real_robot_profile_through_ros2_launch(scene):
    figures = run_profile(Launch, scene)
    assert [f["stage"] for f in figures] == ["dry_run"] + [f"factor_{f:g}" for f in STAGES]


def _pid(process: Process, node: str) -> int:
    import re

    pids = [int(m.group(1)) for ln in list(process.lines) if (m := re.search(rf"started {node} \(pid (\d+)\)", ln))]
    return pids[-1]


def test_faults_on_the_real_robot_profile(scene, tmp_path):
    """The fault tests of tests/nodes, on the real profile against the strict emulator (mail-il up, factor 0.6: at
    0.3 the shipped policy's chunks, planned from cameras replaying a still scene (MIN_ACCEPTED), are refused far
    from the slowed arm and the watchdog trips on its own while driving, as the two tests above record in
    watchdog_trips_while_driving, which left a fault nothing to trip): a reflex injected by the emulator, a
    spoofed chunk from a second publisher, the policy killed and hung, a camera lost, and an e-stop across a
    controller restart. Each: the arm holds (or errs) within the bound, control resumes only on an explicit
    (recover and) enable, and the FR3 saw no reflex but the injected one."""
    import signal

    from mail_msgs.msg import ActionChunk, ControllerStatus, PolicyStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool

    host = next(loopback_candidates(os.getpid() + 13))
    latch = tmp_path / "estop_latched"
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    rt_args = ["machine:=rt", f"robot_ip:={host}", "realtime:=false", "dry_run:=false",
               "relative_dynamics_factor:=0.6", f"franka_controller.estop_latch_file:={latch}"]
    figures = {}
    with probe(settle=15.0) as p:  # the stack's participants gone first (tests/rosutil.Probe.close)
        driver = Up(p)
        status = p.subscribe(ControllerStatus, "/mail/controller_status")
        policy = p.subscribe(PolicyStatus, "/mail/policy_status")
        p.subscribe(ActionChunk, "/mail/action_chunk", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        commands = p.subscribe(JointState, "/mail/action_command")
        arrivals = p.arrivals["/mail/action_chunk"]
        estop = p.node.create_publisher(Bool, "/mail/estop", reliable)
        gpu = driver.start("machine:=gpu", "device:=cpu", f"checkpoint_root:={scene.root}",
                           "checkpoint:=reach_dma_small", f"agentview_playback_file:={scene.cameras['agentview']}",
                           f"wrist_playback_file:={scene.cameras['wrist']}")
        emu = Emulator(host, tmp_path / "emulator")
        rt = driver.start(*rt_args)
        mode = lambda: status[-1].mode  # noqa: E731

        def flowing():
            wait_for(lambda: arrivals and time.time() - arrivals[-1] < 0.3, 90, what="chunks flowing")

        def resume(recover=False):
            flowing()
            time.sleep(0.5)
            held = mode() != ControllerStatus.MODE_ENABLED
            if recover:
                assert driver.call("/franka_controller/recover")[0]
            for _ in range(30):
                ok, why = driver.call("/franka_controller/enable")
                if ok or "decelerating" not in why:
                    break
                time.sleep(0.1)
            assert ok, why
            wait_for(lambda: mode() == ControllerStatus.MODE_ENABLED, 5, what="enabled again")
            time.sleep(1.5)
            return held

        def since(s) -> float:
            """When the controller entered the mode a status reports (its own time, this host's clock)."""
            return s.mode_since.sec + 1e-9 * s.mode_since.nanosec

        def hold_after(inject, expect=ControllerStatus.MODE_HOLDING, timeout=5.0):
            # the fault must find the arm driven: a controller that held on its own since the last resume (the
            # first chunk after an enable refused, far from the arm or from a respawned policy's old sequence,
            # and the next one later than the watchdog's timeout) is reported and enabled again first
            held_before = None
            for _ in range(5):
                if mode() == ControllerStatus.MODE_ENABLED:
                    break
                held_before = held_before or status[-1].reason
                resume()
            recent = [(s.mode, s.reason, _rejections(s)) for s in list(status)[-30::3]]
            assert mode() == ControllerStatus.MODE_ENABLED, ("the arm would not stay enabled", held_before, recent,
                                                             [round(a - time.time(), 2) for a in arrivals[-6:]])
            t0, n = time.time(), len(status)
            inject()
            # the hold the fault caused: the first status in that mode whose mode began after the fault, timed
            # by the controller's own mode_since (not when its status timer ran, nor when this test saw it)
            caused = lambda: next((s for s in list(status)[n:] if s.mode == expect and since(s) >= t0 - 0.01),  # noqa: E731
                                  None)
            first = wait_for(caused, timeout, what=f"mode {expect} after the fault ({status[-1].reason})")
            t1 = since(first)
            assert t1 <= first.header.stamp.sec + 1e-9 * first.header.stamp.nanosec + 1e-6, first
            last = max([t for t in arrivals if t <= t1], default=t0)
            wait_for(lambda: len(commands) > 5 and np.allclose(commands[-1].velocity[:7], 0, atol=1e-9), 10,
                     what=f"at rest ({status[-1].reason}; velocity {list(commands[-1].velocity[:7])})")
            return {"after_fault_s": round(t1 - t0, 3), "after_last_chunk_s": round(t1 - last, 3),
                    "reason": status[-1].reason, **({"held_before_fault": held_before} if held_before else {})}

        try:
            wait_for(lambda: policy and policy[-1].checkpoint == "reach_dma_small", 120, what="the policy loaded")
            wait_for(lambda: status and mode() == ControllerStatus.MODE_DISABLED, 60, what="controller up")
            resume()
            # a reflex (a collision), injected by the emulator
            f = hold_after(lambda: os.kill(emu.proc.pid, signal.SIGUSR1), ControllerStatus.MODE_ERROR)
            refused = driver.call("/franka_controller/enable")
            f["enable_refused_in_error"] = not refused[0]
            f["held_until_enable"] = resume(recover=True)
            figures["reflex_injected"] = f
            # a second publisher sends one chunk with the running policy's id and a huge sequence
            spoof = p.node.create_publisher(ActionChunk, "/mail/action_chunk", reliable)
            wait_for(lambda: spoof.get_subscription_count() > 0, 10, what="spoofer matched")
            real = [m for m in p.messages["/mail/action_chunk"]][-1]
            real.sequence += 10**9

            f = hold_after(lambda: spoof.publish(real))
            f["enable_refused_with_two_publishers"] = not driver.call("/franka_controller/enable")[0]
            p.node.destroy_publisher(spoof)
            time.sleep(0.5)
            f["held_until_enable"] = resume()
            figures["spoofed_chunk"] = f
            # the policy node killed (mail-il up respawns it), then hung
            figures["policy_killed"] = hold_after(lambda: os.kill(_pid(gpu, "policy_node"), signal.SIGKILL))
            wait_for(lambda: policy and policy[-1].checkpoint == "reach_dma_small" and
                     time.time() - arrivals[-1] < 0.3, 120, what="the respawned policy")
            figures["policy_killed"]["held_until_enable"] = resume()
            pid = _pid(gpu, "policy_node")
            figures["policy_hung"] = hold_after(lambda: os.kill(pid, signal.SIGSTOP))
            os.kill(pid, signal.SIGCONT)
            figures["policy_hung"]["held_until_enable"] = resume()
            # a camera lost (killed; respawned, its recording starts again)
            figures["camera_lost"] = hold_after(lambda: os.kill(_pid(gpu, "camera_wrist"), signal.SIGKILL))
            figures["camera_lost"]["held_until_enable"] = resume()
            # an e-stop, then the controller restarted: still held, enable refused until released
            f = hold_after(lambda: estop.publish(Bool(data=True)))
            rt.stop()
            rt = driver.start(*rt_args)
            t_restart = time.time()
            wait_for(lambda: status[-1].header.stamp.sec > t_restart and status[-1].estop_active, 60,
                     what="the restarted controller, e-stop latched")
            f["refused_after_restart"] = not driver.call("/franka_controller/enable")[0]
            estop.publish(Bool(data=False))
            wait_for(lambda: not status[-1].estop_active, 5, what="released")
            f["held_until_enable"] = resume()
            figures["estop_across_restart"] = f
        finally:
            rt.stop()
            rt.kill_group()
            gpu.stop()
            gpu.kill_group()
            summary = emu.finish()
    figures["reflexes"] = [r["errors"] for r in summary["reflexes"]]
    print(json.dumps(figures))
    record({"faults_on_real_profile": figures})
    assert figures["reflexes"] == [["cartesian_reflex"]], figures  # the injected one, nothing else
    # the next chunk is due one replanning period after the last; the watchdog trips its timeout later
    bound = replan_period() + profile_params()["watchdog_timeout"] + 0.01 + 0.1 + 0.3  # + status period + scheduling
    for fault in ("policy_killed", "policy_hung", "camera_lost"):
        assert figures[fault]["after_last_chunk_s"] <= bound, (fault, figures[fault])
    for fault in ("reflex_injected", "spoofed_chunk", "policy_killed", "policy_hung", "camera_lost",
                  "estop_across_restart"):
        assert figures[fault]["held_until_enable"], (fault, figures[fault])
    assert "cartesian_reflex" in figures["reflex_injected"]["reason"] and \
        figures["reflex_injected"]["enable_refused_in_error"]
    assert "2 publishers" in figures["spoofed_chunk"]["reason"] and \
        figures["spoofed_chunk"]["enable_refused_with_two_publishers"]
    assert figures["estop_across_restart"]["refused_after_restart"]
