"""Harness for the `real_robot` profile against the strict FR3 emulator, as a lab runs it.

- Cameras: two RealSense recordings (librealsense .db3, 640x480 at 30 fps, the profile's camera settings)
  of the reach scene at the emulated arm's start pose, played by the profile's own camera nodes
  (`playback_file`).
- The arm: `mail-il fr3-emulator` (franky-sim with the FR3's 1 kHz checks and reflexes) on a loopback
  address of its own, a fresh process per stage; its recording and summary are read when it stops.
- The profile, verbatim but for what a lab changes (robot_ip, playback files, device, the checkpoint; and
  `realtime:=false`: this kernel has no PREEMPT_RT), started in the two parts labs deploy on two machines:
  `machine:=gpu` (cameras, policy) once, `machine:=rt` (the controller) per stage, through `mail-il up` or
  the real `ros2 launch` from a colcon install.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "mail_bringup" / "checkpoints"
TASK, SEED = "reach", 0
FPS = 30
STAGES = (0.1, 0.3, 0.6, 1.0)  # the runbook's relative_dynamics_factor stages


def profile_params(node: str = "franka_controller") -> dict:
    """A node's parameters in real_robot.yaml, as shipped."""
    import yaml

    from mail_bringup.graph import params_file

    return yaml.safe_load(params_file("real_robot").read_text())[node]["ros__parameters"]


def replan_period() -> float:
    """[s] between the shipped policy's chunks on the profile: its execution_horizon (0: the checkpoint's J)
    x the checkpoint's dt. The controller's watchdog expects each chunk this long after the last."""
    spec = json.loads((SHIPPED / "reach_dma_small" / "config.json").read_text())["policy"]["spec"]
    horizon = profile_params("policy_node")["execution_horizon"] or spec["action_horizon"]
    return horizon * spec["dt"]


def task_start():
    """The reach scene's start joints for SEED and one 640x480 frame per camera there."""
    from mail_policy_node.sim.env import make_task
    from mail_policy_node.sim.scene import CAMERA_NAMES

    env = make_task(TASK, render=True, image_size=(480, 640))
    try:
        env.reset(SEED)
        return env.joint_state()[:7].copy(), {c: env.render(c) for c in CAMERA_NAMES}
    finally:
        env.close()


def at_rest(commands) -> bool:
    """The controller's last published command (/mail/action_command) stands still."""
    return len(commands) > 5 and np.allclose(commands[-1].velocity[:7], 0.0, atol=1e-9)


def drive(latest, commands, enable, seconds: float, done=lambda status: True) -> int:
    """Let the policy drive for ``seconds``, and on (up to 3x as long) until ``done(latest())`` (the newest
    ControllerStatus). On a loaded 2-core machine a chunk can come past real_robot.yaml's 0.3 s watchdog: the
    arm holds, as it must, and the operator calls ``enable()`` again once it is at rest (at most 3 times).
    Returns those watchdog trips."""
    from mail_msgs.msg import ControllerStatus

    start, trips = time.monotonic(), 0
    while True:
        s = latest()
        elapsed = time.monotonic() - start
        if elapsed >= 3 * seconds or (elapsed >= seconds and done(s)):
            break
        if s.mode == ControllerStatus.MODE_HOLDING and s.reason == "chunk_timeout" and at_rest(commands) \
                and trips < 3:
            trips += 1
            enable()
        time.sleep(0.1)
    return trips


def record_cameras(folder: Path, frames: dict, seconds: float) -> dict[str, Path]:
    """One recording per camera: its frame repeated for `seconds` (a still scene, as before a task). Every
    frame is in the file when this returns (record_realsense_file waits for librealsense's writer)."""
    from mail_policy_node.data.cameras import record_realsense_file

    out = {}
    for camera, rgb in frames.items():
        path = folder / f"{camera}.db3"
        n = int(seconds * FPS)
        assert record_realsense_file(str(path), (rgb for _ in range(n)), fps=FPS) == n
        out[camera] = path
    return out


def random_checkpoint(folder: Path, seed: int = 0) -> Path:
    """The shipped policy's architecture with random weights: chunks that jump around."""
    import torch

    from mail_policy_node.model.checkpoint import load_checkpoint, save_checkpoint

    policy = load_checkpoint(SHIPPED / "reach_dma_small")
    torch.manual_seed(seed)
    with torch.no_grad():
        for _name, p in policy.named_parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=1.5 / np.sqrt(p.shape[-1]))
            else:
                torch.nn.init.normal_(p, std=0.5)
    out = folder / "reach_random"
    save_checkpoint(policy, out, metadata={"test": "random weights"})
    return out


class Process:
    """A child process with its output collected by a thread."""

    def __init__(self, cmd: list[str], env: dict | None = None, cwd=None):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def wait_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in ln for ln in list(self.lines)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"no {text!r} from {' '.join(self.cmd[:4])} within {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self._pump.join(timeout=5)
        return rc

    def kill_group(self) -> None:
        """Whatever the process left running in its session (a launch's nodes)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Emulator(Process):
    """`python -m mail_policy_node.sim.fr3_emulator` on the reach scene, recording into `folder`."""

    def __init__(self, host: str, folder: Path, wrap=lambda cmd: cmd):
        """``wrap``: the command line as run (e.g. inside a network namespace)."""
        self.folder = folder
        super().__init__(wrap([sys.executable, "-m", "mail_policy_node.sim.fr3_emulator", "--hostname", host,
                               "--task", TASK, "--seed", str(SEED), "--record", str(folder)]))
        self.wait_line(f"fr3-emulator ready {host}", 120)

    def finish(self) -> dict:
        rc = self.stop()
        assert rc == 0, f"the emulator exited with {rc}:\n{self.output()}"
        summary = json.loads((self.folder / "fr3_emulator_summary.json").read_text())
        summary["recording"] = dict(np.load(self.folder / "fr3_emulator.npz"))
        return summary


def arm_clock_rate(rec: dict) -> float:
    """The emulated arm's seconds per wall-clock second over its recording (1.0: it kept real time)."""
    sim_t, wall_t = rec["states_sim_time"], rec["states_t"]
    if len(wall_t) < 2 or wall_t[-1] <= wall_t[0]:
        return float("nan")
    return float((sim_t[-1] - sim_t[0]) / (wall_t[-1] - wall_t[0]))


def stream_ratios(summary: dict, limits, tolerance: float = 0.0) -> tuple[dict[str, float], dict[str, list]]:
    """Peak |velocity|, |acceleration|, |jerk| of the 1 kHz command stream over ``limits`` (anything with
    dq_max, ddq_max, dddq_max: the caps, or the FR3's own table), each the worst joint; and per quantity
    the indices (into the joint-interface commands) of the commands over ``limits`` + ``tolerance``."""
    rec = summary["recording"]
    joint = rec["commands_mode"] > 0
    peaks, over = {}, {}
    for key, name, bound in (("commands_v", "velocity", limits.dq_max), ("commands_a", "acceleration", limits.ddq_max),
                             ("commands_j", "jerk", limits.dddq_max)):
        ratio = np.max(np.abs(rec[key][joint]) / bound, axis=1) if joint.any() else np.zeros(0)
        peaks[name] = float(ratio.max()) if ratio.size else 0.0
        over[name] = np.flatnonzero(ratio > 1.0 + tolerance).tolist()
    return peaks, over
