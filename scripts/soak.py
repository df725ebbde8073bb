#!/usr/bin/env python3
"""Soak (issue 9): the `sim` profile running closed loop for a long time, every node watched.

Runs the whole profile (franky-sim world, two camera nodes, policy node with the shipped checkpoint,
controller) as separate processes over DDS with a world that never ends its episode, and samples every
minute (or --period): each node's resident memory (VmRSS from /proc), the policy's latency and
inference percentiles (PolicyStatus), chunks received, the largest interval between consecutive chunks,
the controller's watchdog trips and rejected chunks, and both loops' late cycles so far (the cadence).
Ends with the memory growth per node (last sample minus the first after warm-up) and the latency
percentiles per period, printed and saved.

    .venv/bin/python scripts/soak.py --minutes 30 --out docs/results/soak_30min.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _per_period(samples: list[dict], key: str) -> list[int | None]:
    """Differences of a cumulative count between consecutive samples (the first: since the node started)."""
    out, before = [], 0
    for s in samples:
        now = s[key]
        out.append(None if now is None else now - before)
        before = before if now is None else now
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--period", type=float, default=60.0, help="seconds per sample")
    parser.add_argument("--out", default="runs/soak.json")
    args = parser.parse_args()

    from mail_bringup.graph import profile
    from mail_bringup.closed_loop import SpunNode, private_sim_graph
    from mail_bringup.up import Supervisor

    env, host = private_sim_graph()
    prof = profile("sim", {"sim_world": {"seed": 1003, "hostname": host, "episode_timeout": 24 * 3600.0},
                           "franka_controller": {"robot_ip": host, "auto_enable": True}})

    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from mail_msgs.msg import ActionChunk, ControllerStatus, PolicyStatus

    observer = SpunNode("soak")
    node = observer.node
    lock = threading.Lock()
    chunk_t: list[float] = []
    last: dict = {}
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)

    def on_chunk(_m):
        with lock:
            chunk_t.append(time.monotonic())

    node.create_subscription(ActionChunk, "/mail/action_chunk", on_chunk, reliable)
    node.create_subscription(PolicyStatus, "/mail/policy_status", lambda m: last.update(policy=m), reliable)
    node.create_subscription(ControllerStatus, "/mail/controller_status", lambda m: last.update(controller=m), 10)
    observer.start()
    sup = Supervisor(prof, env=env, echo=False, max_restarts=0)
    sup.start()
    samples = []
    t0 = time.monotonic()
    try:
        while not chunk_t and time.monotonic() - t0 < 180:
            time.sleep(0.2)
            sup.poll()
        if not chunk_t:
            raise RuntimeError(f"no chunk within 180 s ({sup.failed})")
        start = time.monotonic()
        n_prev = 0
        while time.monotonic() - start < args.minutes * 60 and not sup.failed:
            time.sleep(args.period)
            sup.poll()
            with lock:
                window = chunk_t[n_prev:]
                gap = float(np.max(np.diff(chunk_t[max(n_prev - 1, 0):]))) if len(window) > 1 else None
                n_prev = len(chunk_t)
            ps, cs = last.get("policy"), last.get("controller")
            row = dict(t_min=round((time.monotonic() - start) / 60, 2),
                       rss_mb={name: rss_mb(m.proc.pid) for name, m in sup.nodes.items()},
                       chunks=len(window), max_chunk_gap_s=None if gap is None else round(gap, 3),
                       latency_p50_ms=round(ps.latency_p50_ms, 1) if ps else None,
                       latency_p99_ms=round(ps.latency_p99_ms, 1) if ps else None,
                       inference_p50_ms=round(ps.inference_p50_ms, 1) if ps else None,
                       observations_dropped=int(ps.observations_dropped) if ps else None,
                       watchdog_trips=int(cs.watchdog_trips) if cs else None,
                       chunks_rejected=int(cs.chunks_rejected) if cs else None,
                       cycle_jitter_p99_ms=round(cs.cycle_jitter_p99_ms, 2) if cs else None,
                       ticks_overrun=int(ps.ticks_overrun) if ps else None,  # late, since the start
                       cycles_overrun=int(cs.cycles_overrun) if cs else None,
                       controller_mode=int(cs.mode) if cs else None)
            samples.append(row)
            print(json.dumps(row), flush=True)
    finally:
        failed = sup.failed
        sup.stop()
        observer.close()

    base = samples[1] if len(samples) > 2 else (samples[0] if samples else None)  # after warm-up
    growth = ({k: round(samples[-1]["rss_mb"][k] - base["rss_mb"][k], 1) for k in base["rss_mb"]
               if base["rss_mb"][k] is not None and samples[-1]["rss_mb"].get(k) is not None} if base else {})
    gaps = [s["max_chunk_gap_s"] for s in samples if s["max_chunk_gap_s"] is not None]
    summary = dict(minutes=round(samples[-1]["t_min"], 1) if samples else 0.0, crashed=failed,
                   rss_growth_mb=growth, rss_last_mb=samples[-1]["rss_mb"] if samples else {},
                   latency_p50_ms_per_period=[s["latency_p50_ms"] for s in samples],
                   latency_p99_ms_per_period=[s["latency_p99_ms"] for s in samples],
                   chunks_per_period=[s["chunks"] for s in samples],
                   max_chunk_gap_s=max(gaps) if gaps else None,
                   # late ticks / cycles in each period (the status counts them since each node started): a
                   # burst shows as one period, a loop that falls behind for good as every one
                   ticks_late_per_period=_per_period(samples, "ticks_overrun"),
                   cycles_late_per_period=_per_period(samples, "cycles_overrun"),
                   watchdog_trips=samples[-1]["watchdog_trips"] if samples else None,
                   chunks_rejected=samples[-1]["chunks_rejected"] if samples else None)
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(summary=summary, samples=samples), indent=2))
    return 0 if failed is None else 1


if __name__ == "__main__":
    sys.exit(main())
