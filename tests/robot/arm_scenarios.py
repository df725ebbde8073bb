"""Scenarios of the controller core (ArmController + FrankyArm + run_cycle, as the node wires them) on the
strict FR3 emulator, each run in a child process by test_arm_on_fr3.py:

    python tests/robot/arm_scenarios.py SCENARIO      -> one JSON line on stdout

A child process because franky-control 2.0.0 can hang or crash tearing down a Robot whose motion failed
(it leaves with os._exit). Each scenario starts its own emulator on a loopback address of its own.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from mail_policy_node.control.chunks import ActionChunk
from mail_policy_node.control.controller import ArmController
from mail_policy_node.control.franky_arm import ArmClockPacer, FrankyArm, run_cycle
from mail_policy_node.control.params import controller_setup
from mail_policy_node.nodes.franka_controller_node import ARM_CLOCK_WAIT_CYCLES
from mail_policy_node.sim.fr3_emulator import StrictFR3
from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME

START = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785])
NAMES = FR3_JOINT_NAMES + (GRIPPER_NAME,)
PARAMS = {"dry_run": False, "realtime": False, "relative_dynamics_factor": 1.0, "max_tracking_error": 0.2,
          "collision_torque": [30.0, 30.0, 28.0, 28.0, 26.0, 24.0, 22.0],
          "collision_force": [31.0, 32.0, 33.0, 34.0, 35.0, 36.0], "load_mass": 0.4}


class Rig:
    def __init__(self, paced=True, realtime=1.0, **params):
        self.fr3 = StrictFR3(initial_q=START, gripper_width=params.pop("gripper_width", 0.08),
                             realtime=realtime).start()
        self.setup = controller_setup({**PARAMS, **params, "robot_ip": self.fr3.hostname})
        self.arm = FrankyArm(self.setup.arm)
        self.arm.connect(timeout=30.0)
        self.ctrl = ArmController(self.setup.controller, clock=time.monotonic, wall_clock=time.time)
        self.emu = self.fr3.emulator
        self.seq = 0
        self.outs = []
        period = self.setup.controller.safety.cycle_period
        self.pacer = ArmClockPacer(period, ARM_CLOCK_WAIT_CYCLES * period) if paced else None  # as the node
        run_cycle(self.ctrl, self.arm)  # the first joint state

    def chunk(self, offset, gripper=0.08, horizon=8, task=""):
        """A 10 Hz policy's chunk: from the arm's command to START + offset in ``horizon`` steps of 0.1 s."""
        here = self.ctrl.command.q
        rows = here + np.arange(1, horizon + 1)[:, None] / horizon * (START + np.asarray(offset) - here)
        self.seq += 1
        return ActionChunk(time.time(), 0.1, 0.1, np.column_stack([rows, np.full(horizon, gripper)]), NAMES,
                           policy_id="scenario", sequence=self.seq, task=task)

    def run(self, seconds, chunk_fn=None):
        period = self.setup.controller.safety.cycle_period
        t0, k = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            if chunk_fn is not None and k % 10 == 0:
                c = chunk_fn()
                if c is not None:
                    self.ctrl.submit_chunk(c)
            self.outs.append(run_cycle(self.ctrl, self.arm))
            k += 1
            time.sleep(max(0.0, t0 + k * period - time.monotonic()))
            if self.pacer is not None:
                self.pacer.wait(self.arm.arm_time)

    def state(self):
        return np.asarray(self.arm.read_state().q)


def limits():
    r = Rig()
    caps = r.setup.budget.caps
    got = r.arm.franky_limits()
    return {"franky": got, "caps": {"velocity": caps.dq_max.tolist(), "acceleration": caps.ddq_max.tolist(),
                                    "jerk": caps.dddq_max.tolist()},
            "configuration": r.emu.configuration}


def dry_run():
    r = Rig(dry_run=True)
    before = r.state()
    assert r.ctrl.enable()[0]
    r.run(1.5, lambda: r.chunk([0.15, 0, 0, 0, 0, 0, 0.15], gripper=0.0))
    commanded = r.ctrl.command.q
    return {"moved_command": float(np.max(np.abs(commanded - before))), "measured_change":
            float(np.max(np.abs(r.state() - before))), "measured_is_real": bool(r.arm.robot is not None),
            "emulator_commands": r.emu.n_commands, "hand_commands": r.emu.hand_commands,
            "configuration": r.emu.configuration}


def enable_keeps_hand():
    r = Rig(gripper_width=0.06)  # holding a 6 cm object (above close_below: "open" to a binary reader)
    assert r.ctrl.enable()[0]
    r.run(0.4)  # enabled, no chunk yet (inside the 0.5 s watchdog)
    before_chunk = list(r.emu.hand_commands)
    r.run(1.0, lambda: r.chunk([0, 0, 0, 0, 0, 0, 0.05], gripper=0.0))
    time.sleep(0.3)  # the Hand worker sends from its own thread
    return {"before_chunk": before_chunk, "after_chunk": [h["kind"] for h in r.emu.hand_commands],
            "mode": r.ctrl.mode.name}


def first_command():
    r = Rig()
    mark = r.emu.mark()
    measured = r.state()
    assert r.ctrl.enable()[0]
    r.run(1.0, lambda: r.chunk([0.1, 0, 0, 0, 0, 0, 0]))
    c = r.emu.commands(mark)
    return {"first_q": c["q"][0].tolist(), "measured": measured.tolist(), "first_v": c["v"][0].tolist(),
            "max_joint_step": r.setup.controller.safety.max_joint_step, "reflexes": len(r.emu.reflexes)}


def reflex():
    r = Rig()
    assert r.ctrl.enable()[0]
    mark = r.emu.mark()
    r.run(1.0, lambda: r.chunk([0.2, 0, 0, 0, 0, 0, 0.2]))
    before = r.emu.n_commands - mark  # the emulated arm's command rate on this machine, before the reflex
    injected = r.emu.inject_reflex("cartesian_reflex")
    r.run(0.3, lambda: r.chunk([0.2, 0, 0, 0, 0, 0, 0.2]))
    out = {"injected": injected, "mode_after_reflex": r.ctrl.mode.name, "reason": r.ctrl.reason,
           "enable_in_error": list(r.ctrl.enable())}
    r.arm.recover()
    out["recovered"] = list(r.ctrl.recovered())
    out["mode_after_recover"] = r.ctrl.mode.name
    r.run(0.2)
    out["enable_after_recover"] = list(r.ctrl.enable())
    mark = r.emu.mark()
    r.run(1.5, lambda: r.chunk([-0.1, 0, 0, 0, 0, 0, -0.1]))
    out["commands_after"] = r.emu.n_commands - mark
    out["commands_before"] = before
    out["mode_at_end"] = r.ctrl.mode.name
    out["reflexes"] = [x["errors"] for x in r.emu.reflexes]
    return out


def task_change():
    """A multi-task policy drives joint 1 toward +0.15 rad on task "reach"; then its task is set to "push",
    whose chunks head for -0.15 rad; the operator enables at once (too early: the enabled task still drives),
    and again once the arm holds."""
    r = Rig()
    assert r.ctrl.enable()[0]
    r.run(1.0, lambda: r.chunk([0.15, 0, 0, 0, 0, 0, 0], task="reach"))
    at_switch = float(r.state()[0])
    rejected = r.ctrl.counters.rejections.get("other_policy", 0)
    j1 = []

    def push():
        j1.append(float(r.state()[0]))
        return r.chunk([-0.15, 0, 0, 0, 0, 0, 0], task="push")

    r.run(0.2, push)
    early = {"mode": r.ctrl.mode.name, "answer": list(r.ctrl.enable())}
    r.run(1.3, push)
    out = {"moved_on_reach": at_switch - START[0], "lowest_after_switch": min(j1), "at_switch": at_switch,
           "early_enable": early,
           "mode_after_switch": r.ctrl.mode.name, "reason": r.ctrl.reason,
           "refused_other_policy": r.ctrl.counters.rejections.get("other_policy", 0) - rejected,
           "push_chunks": len(j1)}
    out["enable"] = list(r.ctrl.enable())
    r.run(1.5, lambda: r.chunk([-0.15, 0, 0, 0, 0, 0, 0], task="push"))
    out["after_enable"] = float(r.state()[0])
    out["mode_at_end"] = r.ctrl.mode.name
    out["reflexes"] = len(r.emu.reflexes)
    return out


def slow_arm(paced: bool):
    """An arm whose clock runs at a third of real time (franky-sim on a loaded machine), driven 3 s toward
    0.25 rad away at factor 0.3, tracking checked at the profile's 0.1 rad."""
    r = Rig(paced=paced, realtime=1 / 3, relative_dynamics_factor=0.3, max_tracking_error=0.1)
    assert r.ctrl.enable()[0]
    t_arm = r.arm.arm_time()
    errors = []

    def chunk():
        errors.append(float(np.max(np.abs(r.state() - r.ctrl.command.q))))
        return r.chunk([0.25, 0, 0, 0, 0, 0, 0.25])

    r.run(3.0, chunk)
    return {"mode": r.ctrl.mode.name, "reason": r.ctrl.reason, "max_tracking_error": max(errors),
            "arm_seconds": r.arm.arm_time() - t_arm, "travel": float(np.max(np.abs(r.state() - START))),
            "reflexes": len(r.emu.reflexes), "waits": 0 if r.pacer is None else r.pacer.waits}


def slow_arm_paced():
    return slow_arm(True)


def slow_arm_unpaced():
    return slow_arm(False)


if __name__ == "__main__":
    result = {}
    try:
        result = globals()[sys.argv[1]]()
    except Exception as exc:  # reported to the test
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result, default=float), flush=True)
    os._exit(0)
