#!/usr/bin/env python3
"""What the FR3 would see of our controller: the 1 kHz command stream's peaks, and its reflexes.

Drives the project's own controller core exactly as the controller node does (``ArmController`` +
``FrankyArm`` + ``run_cycle`` at 100 Hz, paced like ``FrankaControllerNode.control_loop``, with the
``ControllerConfig`` the node builds from the ``franka_controller`` section of a bringup profile,
default ``mail_bringup/config/real_robot.yaml``, but with ``dry_run`` off and franky's real-time check
off: no RT kernel here) against the strict FR3 emulator (``sim.fr3_emulator.StrictFR3``: franky-sim with
the FR3's limit checks and reflexes). ActionChunks are fed to the controller directly (10 Hz, 8 actions
0.1 s apart), once it is enabled, from a fixed sequence on joints 1, 4 and 7:

    0.0 - 1.5 s  ramp to q0 + [0.3, 0, 0, 0.25, 0, 0, 0.5] over 1.2 s, then hold
    1.5 - 3.0 s  reverse: to q0 + [-0.2, 0, 0, -0.15, 0, 0, -0.3] in 0.3 s (up to 2.7 rad/s asked: the
                 filter brakes and reverses at its limits; a step would be refused as too fast)
    3.0 - 3.8 s  hold there (stop); then no more chunks: the watchdog holds the arm
    until 5.0 s  the loop keeps cycling

once per relative_dynamics_factor (each in its own process, with a fresh emulator), optionally with
busy processes loading the CPU (``--load N``). Writes a JSON with, per factor: the peak |velocity|,
|acceleration|, |jerk| of the 1 kHz stream as ratios to the FR3's limits, to the caps (control/limits.py
DynamicsBudget: what franky is told) and to the safety filter's limits, the reflexes (with the errors
franky raised), and the controller's final mode.

    .venv/bin/python scripts/fr3_stream_peaks.py                     # factors 0.1 0.2 0.3 0.6 1.0
    .venv/bin/python scripts/fr3_stream_peaks.py --factors 0.2 0.6 --load 1 --out runs/fr3_peaks_load.json

The configuration is the node's own (``control.params.controller_setup``). This script only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "mail_policy_node"))

DEFAULT_PROFILE = ROOT / "mail_bringup" / "config" / "real_robot.yaml"
START_Q = (0.0, -0.3, 0.0, -2.2, 0.0, 1.9, 0.785)  # the node's dry_run_start: TCP at about (0.46, 0, 0.40) m
RAMP = np.array([0.3, 0.0, 0.0, 0.25, 0.0, 0.0, 0.5])
REVERSE = np.array([-0.2, 0.0, 0.0, -0.15, 0.0, 0.0, -0.3])
T_RAMP, T_REVERSE, T_STOP, T_SILENT, T_END = 1.2, 1.5, 3.0, 3.8, 5.0
T_REVERSE_RAMP = 0.3
GRIPPER_OPEN = 0.08

def load_params(profile: Path) -> dict:
    import yaml

    return dict(yaml.safe_load(profile.read_text())["franka_controller"]["ros__parameters"])


def build_setup(p: dict, host: str):
    """The node's own configuration (control.params.controller_setup) of the profile's parameters, live
    against ``host``: dry_run off, franky's real-time check off (no RT kernel on this machine), and the
    widest ``max_start_distance`` so the sequence's reversal (a step of up to 0.8 rad) reaches the filter."""
    from mail_policy_node.control.params import controller_setup

    return controller_setup({**p, "robot_ip": host, "dry_run": False, "realtime": False, "max_start_distance": 1.0})


def target(t: float, q0: np.ndarray) -> np.ndarray:
    if t < T_REVERSE:
        return q0 + RAMP * min(1.0, max(0.0, t) / T_RAMP)
    w = min(1.0, (t - T_REVERSE) / T_REVERSE_RAMP)
    return q0 + (1.0 - w) * RAMP + w * REVERSE


def run_factor(factor: float, profile: Path, save: Path | None, command_wait_ms: float = 5.0) -> dict:
    """One factor against a fresh emulator (called in a child process: see main)."""
    from mail_policy_node.control.chunks import ActionChunk
    from mail_policy_node.control.controller import ArmController
    from mail_policy_node.control.franky_arm import FrankyArm, run_cycle
    from mail_policy_node.sim.fr3_emulator import StrictFR3
    from mail_policy_node.spec import FR3_JOINT_NAMES, GRIPPER_NAME

    params = load_params(profile)
    params["relative_dynamics_factor"] = float(factor)
    params["dry_run"] = False
    fr3 = StrictFR3(initial_q=START_Q, command_wait_ms=command_wait_ms).start()
    setup = build_setup(params, fr3.hostname)
    config, caps = setup.controller, setup.budget.caps
    result = {"relative_dynamics_factor": factor, "host": fr3.hostname}
    emu = fr3.emulator
    arm = FrankyArm(setup.arm)
    arm.connect(timeout=30.0)
    result["franky_limits"] = arm.franky_limits()
    ctrl = ArmController(config, clock=time.monotonic, wall_clock=time.time)
    run_cycle(ctrl, arm)  # the first joint state
    ok, why = ctrl.enable()
    result["enabled"] = [ok, why]
    q0 = np.array(START_Q)
    names = FR3_JOINT_NAMES + (GRIPPER_NAME,)
    period = config.safety.cycle_period
    t0, m0 = time.time(), time.monotonic()
    start_mark, start_steps = emu.mark(), emu.n_states
    transitions = [(0.0, ctrl.mode.name, ctrl.reason)]
    next_t = time.monotonic()
    cycle = overruns = 0
    seq = 0
    while True:
        now = time.time()
        t = now - t0
        if t > T_END:
            break
        if cycle % 10 == 0 and t < T_SILENT:  # a 10 Hz policy
            rows = np.array([np.r_[target(t + i * 0.1, q0), GRIPPER_OPEN] for i in range(8)])
            ctrl.submit_chunk(ActionChunk(now, 0.0, 0.1, rows, names, policy_id="fr3_stream_peaks", sequence=seq))
            seq += 1
        run_cycle(ctrl, arm)
        if (ctrl.mode.name, ctrl.reason) != transitions[-1][1:]:
            transitions.append((round(time.time() - t0, 3), ctrl.mode.name, ctrl.reason))
        cycle += 1
        next_t += period
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            overruns += 1
            next_t = time.monotonic()
    sim_speed = (emu.n_states - start_steps) * 1e-3 / (time.monotonic() - m0)  # simulated s per wall s
    summary = emu.summary(limits=config.safety.limits)
    c = emu.commands(start_mark)
    joint = c["mode"] > 0
    acc_ratio = np.abs(c["a"][joint]) / 10.0
    if acc_ratio.size:
        k = int(np.nanargmax(np.nanmax(acc_ratio, axis=1)))
        result["peak_acceleration_at_s"] = round(float(c["t"][joint][k] - m0), 3)
    ratios = emu.peak_ratios(limits=config.safety.limits, since=start_mark)
    result.update({
        "fr3_ratios": ratios["fr3"], "filter_ratios": ratios["limits"],
        "caps_ratios": emu.peak_ratios(limits=caps, since=start_mark)["limits"],
        "caps": {"dq_max": caps.dq_max.round(4).tolist(), "ddq_max": caps.ddq_max.round(4).tolist(),
                 "dddq_max": caps.dddq_max.round(4).tolist()},
        "filter_limits": {"dq_max": config.safety.limits.dq_max.round(4).tolist(),
                          "ddq_max": config.safety.limits.ddq_max.round(4).tolist(),
                          "dddq_max": config.safety.limits.dddq_max.round(4).tolist()},
        "reflexes": [{"time_s": round(r["t"] - m0, 3), "errors": r["errors"],
                      "detail": r["detail"][:4]} for r in emu.reflexes],
        "franky_error": arm.last_error,
        "controller": {"final_mode": ctrl.mode.name, "reason": ctrl.reason, "transitions": transitions,
                       "limit_hits": ctrl.counters.limit_hits, "chunks_received": ctrl.counters.chunks_received,
                       "chunks_rejected": ctrl.counters.chunks_rejected},
        "stream": {"commands": int(len(c["message_id"])), "commands_per_ms": summary["commands_per_ms"],
                   "motions": summary["counters"]["motions"], "late_commands": summary["counters"]["late_commands"],
                   "commands_not_in_time": summary["counters"]["commands_not_in_time"],
                   "missing_ids": summary["counters"]["missing_ids"], "check_cost_us": summary["check_cost_us"]},
        "loop": {"cycles": cycle, "overruns": overruns, "sim_speed": round(sim_speed, 3)},
    })
    if save is not None:
        emu.save(save / f"factor_{factor:g}", limits=config.safety.limits)
    return result


def _table(results: list[dict]) -> str:
    head = (f"{'factor':>6} {'load':>4} | {'FR3 v':>6} {'FR3 a':>6} {'FR3 j':>6} | {'caps v':>6} {'caps a':>6} "
            f"{'caps j':>6} | {'sim x':>5} | {'reflexes':<48} | mode")
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['relative_dynamics_factor']:>6g} {r.get('load', 0):>4} | failed: {r['error'][:80]}")
            continue
        f, g = r["fr3_ratios"], r["caps_ratios"]
        refl = "; ".join(",".join(x["errors"]) for x in r["reflexes"]) or "-"
        lines.append(f"{r['relative_dynamics_factor']:>6g} {r.get('load', 0):>4} | {f['velocity']['max']:>6.2f} "
                     f"{f['acceleration']['max']:>6.2f} {f['jerk']['max']:>6.2f} | {g['velocity']['max']:>6.2f} "
                     f"{g['acceleration']['max']:>6.2f} {g['jerk']['max']:>6.2f} | {r['loop']['sim_speed']:>5.2f} | "
                     f"{refl[:48]:<48} | "
                     f"{r['controller']['final_mode']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factors", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.6, 1.0])
    ap.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="bringup profile YAML (franka_controller)")
    ap.add_argument("--load", type=int, default=0, metavar="N", help="busy processes loading the CPU meanwhile")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "fr3_stream_peaks.json")
    ap.add_argument("--save-recordings", type=Path, default=None, metavar="DIR",
                    help="also save each factor's emulator recording (npz + summary) here")
    ap.add_argument("--timeout", type=float, default=180.0, help="per factor [s]")
    ap.add_argument("--command-wait-ms", type=float, default=5.0,
                    help="the emulator's lock-step wait for late commands (0: franky-sim's own timing)")
    ap.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child is not None:  # one factor, then leave without tearing franky down (see below)
        try:
            result = run_factor(args.child, args.profile, args.save_recordings, args.command_wait_ms)
        except Exception as exc:  # reported by the parent
            result = {"relative_dynamics_factor": args.child, "error": f"{type(exc).__name__}: {exc}"}
        args.child_out.write_text(json.dumps(result))
        sys.stdout.flush()
        os._exit(0)  # franky-control 2.0.0 can hang destroying a Robot whose motion failed

    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    results = []
    try:
        for f in args.factors:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "result.json"
                cmd = [sys.executable, __file__, "--child", str(f), "--child-out", str(out),
                       "--profile", str(args.profile), "--command-wait-ms", str(args.command_wait_ms)]
                if args.save_recordings is not None:
                    cmd += ["--save-recordings", str(args.save_recordings)]
                try:
                    proc = subprocess.run(cmd, timeout=args.timeout, capture_output=True, text=True)
                    why = f"no result (rc {proc.returncode}): {proc.stderr[-300:]}"
                    r = json.loads(out.read_text()) if out.exists() else {"relative_dynamics_factor": f, "error": why}
                except subprocess.TimeoutExpired:
                    r = {"relative_dynamics_factor": f, "error": f"timed out after {args.timeout} s"}
            r["load"] = args.load
            results.append(r)
            print(_table([r]).splitlines()[-1], flush=True)
    finally:
        for p in load:
            p.kill()
            p.wait()
    doc = {"profile": str(args.profile), "start_q": list(START_Q), "load_processes": args.load,
           "loadavg_at_start": loadavg_start, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
           "command_wait_ms": args.command_wait_ms,
           "sequence": {"ramp": RAMP.tolist(), "reverse": REVERSE.tolist(), "t_ramp": T_RAMP, "t_reverse": T_REVERSE,
                        "t_stop": T_STOP, "t_silent": T_SILENT, "t_end": T_END},
           "fr3_limits": {"dq_max": [2.62] * 4 + [5.26, 4.18, 5.26], "ddq_max": 10.0, "dddq_max": 5000.0},
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print()
    print(_table(results))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
