#!/usr/bin/env python3
"""Hot swap under load (issue 9): checkpoint swaps while the `sim` profile runs the arm closed loop.

The whole profile runs as separate processes over DDS (franky-sim world, two camera nodes, policy
node, controller). This process sets the policy node's `checkpoint` parameter N times, alternating a
valid swap (two trained checkpoints that differ only in their stored weight precision, so each swap
changes the policy_id) with an invalid one, cycling through: a name that does not exist, a truncated
safetensors file, a wrong architecture (config and weights of another model), a path outside the
checkpoint root, and a pickle file. Measured: refusals of every invalid one (and their reasons),
crashes (any node process exiting), chunks from a policy that was never valid, the chunk gap around
each valid swap (largest interval between consecutive chunks from the parameter call until one
second after the new policy's first chunk) and the time until the new policy's first chunk.

    .venv/bin/python scripts/hot_swap_stress.py --swaps 100 --out docs/results/hot_swap_stress.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "mail_bringup" / "checkpoints" / "reach_dma_small"
INVALID = ("missing", "truncated", "wrong_architecture", "../outside", "policy.pt")


def make_root(folder: Path) -> dict[str, str]:
    """Checkpoint root with two valid policies and one of each invalid kind; name -> policy_id."""
    from mail_policy_node.model.checkpoint import policy_id

    shutil.copytree(SHIPPED, folder / "a")
    subprocess.run([sys.executable, "-m", "mail_policy_node.cli", "export", str(SHIPPED), str(folder / "b"),
                    "--weights", "float32"], check=True, stdout=subprocess.DEVNULL)
    shutil.copytree(SHIPPED, folder / "truncated")
    weights = folder / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    # wrong architecture: b's config (a valid D-Ma) with weights of another size
    shutil.copytree(SHIPPED, folder / "wrong_architecture")
    config = json.loads((folder / "wrong_architecture" / "config.json").read_text())
    config["policy"]["backbone"]["n_layers"] = config["policy"]["backbone"].get("n_layers", 4) + 2
    (folder / "wrong_architecture" / "config.json").write_text(json.dumps(config))
    (folder / "policy.pt").write_bytes(b"\x80\x04\x95" + bytes(64))
    outside = folder.parent / "outside"
    shutil.copytree(SHIPPED, outside, dirs_exist_ok=True)
    return {"a": policy_id(folder / "a"), "b": policy_id(folder / "b")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=100)
    parser.add_argument("--out", default="runs/hot_swap_stress.json")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after a valid swap's first chunk")
    args = parser.parse_args()

    from mail_bringup.closed_loop import SpunNode, private_sim_graph
    from mail_bringup.graph import profile
    from mail_bringup.up import Supervisor

    env, host = private_sim_graph()
    work = Path(tempfile.mkdtemp(prefix="mail_swap_"))
    root = work / "checkpoints"
    root.mkdir()
    ids = make_root(root)
    prof = profile("sim", {"policy_node": {"checkpoint_root": str(root), "checkpoint": "a"},
                           "sim_world": {"seed": 1003, "hostname": host, "episode_timeout": 3600.0},
                           "franka_controller": {"robot_ip": host, "auto_enable": True}})

    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from mail_msgs.msg import ActionChunk, ControllerStatus

    observer = SpunNode("hot_swap_stress")
    node = observer.node
    chunks: list[tuple[float, str]] = []
    status = {}
    node.create_subscription(ActionChunk, "/mail/action_chunk",
                             lambda m: chunks.append((time.monotonic(), m.policy_id)),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(ControllerStatus, "/mail/controller_status", lambda m: status.update(last=m), 10)
    client = AsyncParameterClient(node, "policy_node")
    observer.start()
    sup = Supervisor(prof, env=env, echo=False, max_restarts=0)
    sup.start()
    results = []
    crashed = None
    try:
        deadline = time.monotonic() + 180
        while not chunks and time.monotonic() < deadline:
            time.sleep(0.1)
            sup.poll()
        if not chunks:
            raise RuntimeError(f"no chunk from the policy node within 180 s ({sup.failed})")
        assert client.wait_for_services(timeout_sec=30)
        current, invalid_i = "a", 0
        for k in range(args.swaps):
            valid = k % 2 == 0
            name = ("b" if current == "a" else "a") if valid else INVALID[invalid_i % len(INVALID)]
            invalid_i += 0 if valid else 1
            n0, t0 = len(chunks), time.monotonic()
            future = client.set_parameters([Parameter("checkpoint", value=name)])
            while not future.done() and time.monotonic() - t0 < 60:
                time.sleep(0.01)
            answer = future.result().results[0] if future.done() else None
            t_answer = time.monotonic()
            row = dict(index=k, name=name, valid=valid, accepted=bool(answer and answer.successful),
                       reason=answer.reason if answer else "no answer", answer_s=round(t_answer - t0, 3))
            if valid and row["accepted"]:
                target = ids[name]
                while time.monotonic() - t0 < 30 and not any(pid == target for _, pid in chunks[n0:]):
                    time.sleep(0.01)
                first = next((t for t, pid in chunks[n0:] if pid == target), None)
                if first is not None:
                    time.sleep(args.settle)
                    times = [t for t, _ in chunks[max(n0 - 1, 0):]]
                    row.update(first_chunk_s=round(first - t0, 3), max_gap_s=round(float(np.max(np.diff(times))), 3))
                    current = name
            else:
                time.sleep(0.3)
            sup.poll()
            if sup.failed:
                crashed = sup.failed
                results.append(row)
                break
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        sup.stop()
        observer.close()
        shutil.rmtree(work, ignore_errors=True)

    known = set(ids.values())
    valid_rows = [r for r in results if r["valid"]]
    gaps = [r["max_gap_s"] for r in valid_rows if "max_gap_s" in r]
    firsts = [r["first_chunk_s"] for r in valid_rows if "first_chunk_s" in r]
    summary = dict(
        swaps=len(results), crashes=0 if crashed is None else 1, crash=crashed,
        valid_swaps=len(valid_rows), valid_accepted=sum(r["accepted"] for r in valid_rows),
        valid_took_effect=len(firsts),
        invalid_swaps=len(results) - len(valid_rows),
        invalid_accepted=sum(r["accepted"] for r in results if not r["valid"]),
        chunks=len(chunks), chunks_from_unknown_policies=sum(pid not in known for _, pid in chunks),
        chunk_gap_during_valid_swap_p50_s=round(float(np.percentile(gaps, 50)), 3) if gaps else None,
        chunk_gap_during_valid_swap_p99_s=round(float(np.percentile(gaps, 99)), 3) if gaps else None,
        chunk_gap_during_valid_swap_max_s=round(float(np.max(gaps)), 3) if gaps else None,
        new_policy_first_chunk_p50_s=round(float(np.percentile(firsts, 50)), 3) if firsts else None,
        controller_watchdog_trips=int(status["last"].watchdog_trips) if "last" in status else None,
        refusal_reasons={n: next((r["reason"] for r in results if r["name"] == n), None) for n in INVALID},
    )
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(summary=summary, swaps=results), indent=2))
    ok = (crashed is None and summary["invalid_accepted"] == 0 and summary["chunks_from_unknown_policies"] == 0
          and summary["valid_took_effect"] == summary["valid_swaps"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
