"""Replay results -> one JSON document, a markdown summary, PNG plots and the raw chunks (npz)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from . import metrics
from .player import BagReplay, EpisodeReplay, Lane, ReplayConfig
from .topics import TopicMap


def _tolerance(config: ReplayConfig, dt: float) -> float:
    return config.match_tolerance if config.match_tolerance is not None else dt / 2


def episode_metrics(ep: EpisodeReplay, dt: float, horizon: int, config: ReplayConfig) -> tuple[dict, tuple]:
    """One episode's metrics, and its raw (errors, positions, overlap diffs) for pooling."""
    err, pos = metrics.pair_errors(ep.chunk_due, ep.chunk_actions, ep.recorded_t, ep.recorded, _tolerance(config, dt))
    diff = metrics.overlap_differences(ep.chunk_due, ep.chunk_actions, dt)
    names = ep.action_names
    out = dict(bag=ep.bag, episode=ep.index, info=ep.info, duration_s=ep.end_s - ep.start_s, ticks=ep.ticks,
               observations=ep.observations, chunks=int(len(ep.chunk_actions)), recorded_actions=int(len(ep.recorded)),
               errors=metrics.error_stats(err, names), horizon=metrics.horizon_stats(err, pos, horizon),
               consistency=metrics.consistency_stats(diff, names), latency=metrics.latency_stats(ep.latency_s),
               tick_s=ep.tick_s, drops=ep.drops)
    return out, (err, pos, diff, ep.latency_s)


def summarise(bags: Sequence[BagReplay], lanes: Sequence[Lane], topics: TopicMap, config: ReplayConfig,
              wall_s: float) -> dict:
    """Everything the JSON report holds (see `metrics` for the definitions)."""
    result = dict(config={k: v for k, v in config.__dict__.items()}, topics=topics.to_dict(), bags=[],
                  checkpoints=[])
    for b in bags:
        result["bags"].append(dict(path=b.path, storage=b.storage, duration_s=b.duration_s, wall_s=b.wall_s,
                                   episodes=len(next(iter(b.episodes.values()), [])),
                                   streams={t: {**metrics.gap_stats(s.stamps, config.gap_factor),
                                                "bad_frames": s.bad_frames} for t, s in b.streams.items()}))
    total_obs = 0
    for lane in lanes:
        spec = lane.spec
        eps, pooled = [], []
        for b in bags:
            for ep in b.episodes[lane.label]:
                m, raw = episode_metrics(ep, spec.dt, spec.action_horizon, config)
                eps.append(m)
                pooled.append(raw)
        err = np.concatenate([p[0] for p in pooled]) if pooled else np.zeros((0, spec.action_dim))
        pos = np.concatenate([p[1] for p in pooled]) if pooled else np.zeros(0, int)
        diff = np.concatenate([p[2] for p in pooled]) if pooled else np.zeros((0, spec.action_dim))
        lat = np.concatenate([p[3] for p in pooled]) if pooled else np.zeros(0)
        obs = sum(e["observations"] for e in eps)
        tick_s = sum(e["tick_s"] for e in eps)
        total_obs += obs
        drops: dict = {}
        for e in eps:
            for k, v in e["drops"].items():
                drops[k] = drops.get(k, 0) + v
        result["checkpoints"].append(dict(
            label=lane.label, path=lane.path, policy_id=lane.loaded.policy_id, engine=lane.loaded.engine.describe(),
            # a multi-task checkpoint's task: the one asked for every episode, or each episode's own (its info)
            task=None if lane.episode_tasks else lane.loaded.task or None, tasks_from_episodes=lane.episode_tasks,
            cameras=list(spec.camera_names), use_joint_state=spec.use_joint_state,
            action_names=list(spec.action_names), dt=spec.dt, J=spec.action_horizon, K=spec.obs_horizon,
            overall=dict(episodes=len(eps), observations=obs, chunks=sum(e["chunks"] for e in eps),
                         errors=metrics.error_stats(err, spec.action_names),
                         horizon=metrics.horizon_stats(err, pos, spec.action_horizon),
                         consistency=metrics.consistency_stats(diff, spec.action_names),
                         latency=metrics.latency_stats(lat), tick_s=tick_s,
                         observations_per_tick_s=obs / tick_s if tick_s > 0 else None, drops=drops),
            episodes=eps))
    bag_s = sum(b.duration_s for b in bags)
    result["speed"] = dict(wall_s=wall_s, bag_s=bag_s, observations=total_obs,
                           observations_per_s=total_obs / wall_s if wall_s > 0 else None,
                           realtime_factor=bag_s / wall_s if wall_s > 0 else None, realtime=config.realtime)
    return result


# ------------------------------------------------------------------------------------------------
def _f(x, fmt=".4g") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(result: dict) -> str:
    cks = result["checkpoints"]
    sp = result["speed"]
    lines = ["# Rosbag replay", "",
             f"{len(result['bags'])} bag(s), {sp['bag_s']:.1f} s recorded, replayed in {sp['wall_s']:.1f} s "
             f"({'paced in recorded time' if sp['realtime'] else 'as fast as possible'}): "
             f"{_f(sp['observations_per_s'], '.1f')} observations/s, {_f(sp['realtime_factor'], '.2f')}x real time.",
             "", "## Checkpoints", "",
             "| checkpoint | policy_id | episodes | obs | chunks | MSE | MAE | max | consistency RMS | "
             "latency p50 / p99 [ms] | drops |", "|" + " --- |" * 11]
    for c in cks:
        o = c["overall"]
        drops = ", ".join(f"{k} {v}" for k, v in sorted(o["drops"].items())) or "-"
        lines.append(f"| {c['label']} | {c['policy_id']} | {o['episodes']} | {o['observations']} | {o['chunks']} | "
                     f"{_f(o['errors']['mse'])} | {_f(o['errors']['mae'])} | {_f(o['errors']['max'])} | "
                     f"{_f(o['consistency']['rms'])} | {_f(o['latency']['p50_ms'], '.2f')} / "
                     f"{_f(o['latency']['p99_ms'], '.2f')} | {drops} |")
    names = cks[0]["action_names"] if cks else []
    lines += ["", "## MAE per action dimension", "", "| dimension | " + " | ".join(c["label"] for c in cks) + " |",
              "|" + " --- |" * (len(cks) + 1)]
    for n in names:
        row = [_f(c["overall"]["errors"]["per_dim"].get(n, {}).get("mae")) for c in cks]
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    lines += ["", "## MSE over the chunk horizon (action i of a chunk vs the action recorded at its due time)", "",
              "| i | " + " | ".join(c["label"] for c in cks) + " |", "|" + " --- |" * (len(cks) + 1)]
    for i in range(max((c["J"] for c in cks), default=0)):
        row = [_f(c["overall"]["horizon"][i]["mse"]) if i < c["J"] else "-" for c in cks]
        lines.append(f"| {i} | " + " | ".join(row) + " |")
    lines += ["", "## Episodes (MSE)", "", "| bag | episode | steps | " + " | ".join(c["label"] for c in cks) + " |",
              "|" + " --- |" * (len(cks) + 3)]
    for k, ep in enumerate(cks[0]["episodes"] if cks else []):
        row = [_f(c["episodes"][k]["errors"]["mse"]) for c in cks]
        lines.append(f"| {Path(ep['bag']).name} | {ep['episode']} | {ep['observations']} | " + " | ".join(row) + " |")
    lines += ["", "## Input streams", "", "| bag | topic | messages | period [ms] | gaps | dropped (est.) | "
              "longest interval [ms] | undecodable |", "|" + " --- |" * 8]
    for b in result["bags"]:
        for t, s in b["streams"].items():
            lines.append(f"| {Path(b['path']).name} | {t} | {s['messages']} | "
                         f"{_f(None if s['period_s'] is None else s['period_s'] * 1e3, '.1f')} | {s['gaps']} | "
                         f"{s['dropped']} | "
                         f"{_f(None if s['longest_gap_s'] is None else s['longest_gap_s'] * 1e3, '.1f')}"
                         f" | {s['bad_frames']} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def plot_episode(path: Path, per_lane: dict[str, EpisodeReplay]) -> None:
    """Predicted (first action of each chunk, and each chunk faintly) vs recorded, one panel per dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = next(iter(per_lane.values()))
    names = ref.action_names
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    t0 = ref.start_s
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, name in enumerate(names):
        ax = axes.flat[k]
        ax.plot(ref.recorded_t - t0, ref.recorded[:, k], color="black", lw=1.5, label="recorded")
        for c, (label, ep) in enumerate(per_lane.items()):
            color = colors[c % len(colors)]
            if len(ep.chunk_actions):
                for due, act in zip(ep.chunk_due, ep.chunk_actions):
                    ax.plot(due - t0, act[:, k], color=color, lw=0.5, alpha=0.25)
                ax.plot(ep.chunk_due[:, 0] - t0, ep.chunk_actions[:, 0, k], color=color, lw=1.0, label=label)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("time since episode start [s]", fontsize=9)
    fig.suptitle(f"{Path(ref.bag).name} episode {ref.index}: predicted vs recorded", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_histograms(path: Path, errors: dict[str, np.ndarray], names: Sequence[str]) -> None:
    """Histogram of predicted - recorded per action dimension, one outline per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for k, name in enumerate(names):
        ax = axes.flat[k]
        values = [e[:, k] for e in errors.values() if len(e)]
        if values:
            lo, hi = min(v.min() for v in values), max(v.max() for v in values)
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-9, 41)
            for label, e in errors.items():
                if len(e):
                    ax.hist(e[:, k], bins=bins, histtype="step", label=label)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("predicted - recorded (robot units)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write(out: str | Path, result: dict, bags: Sequence[BagReplay], lanes: Sequence[Lane], config: ReplayConfig,
          max_plots: int = 10) -> dict[str, Path]:
    """replay.json, summary.md, plots/*.png and chunks/<checkpoint>.npz under ``out``."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    paths = dict(json=out / "replay.json", markdown=out / "summary.md")
    paths["json"].write_text(json.dumps(result, indent=2, default=str))
    paths["markdown"].write_text(markdown(result))
    n = 0
    for b in bags:
        for k in range(len(next(iter(b.episodes.values()), []))):
            if n >= max_plots:
                break
            p = out / "plots" / f"{_slug(Path(b.path).name)}_ep{k}_actions.png"
            plot_episode(p, {lane.label: b.episodes[lane.label][k] for lane in lanes})
            paths.setdefault("episode_plots", []).append(p)
            n += 1
    errors = {}
    for lane in lanes:
        tol = _tolerance(config, lane.spec.dt)
        errs = [metrics.pair_errors(ep.chunk_due, ep.chunk_actions, ep.recorded_t, ep.recorded, tol)[0]
                for b in bags for ep in b.episodes[lane.label]]
        errors[lane.label] = np.concatenate(errs) if errs else np.zeros((0, lane.spec.action_dim))
        eps = [ep for b in bags for ep in b.episodes[lane.label]]
        np.savez_compressed(out / "chunks" / f"{_slug(lane.label)}.npz",
                            stamp=np.concatenate([e.chunk_stamp for e in eps]) if eps else np.zeros(0),
                            due=np.concatenate([e.chunk_due for e in eps]) if eps else
                            np.zeros((0, lane.spec.action_horizon)),
                            actions=np.concatenate([e.chunk_actions for e in eps]) if eps else
                            np.zeros((0, lane.spec.action_horizon, lane.spec.action_dim)),
                            episode=np.concatenate([np.full(len(e.chunk_stamp), i) for i, e in enumerate(eps)])
                            if eps else np.zeros(0, int))
    if lanes:  # one figure over the checkpoints that share the first one's action dimensions
        names = lanes[0].spec.action_names
        paths["histogram"] = out / "plots" / "error_histograms.png"
        plot_histograms(paths["histogram"], {lane.label: errors[lane.label] for lane in lanes
                                             if lane.spec.action_names == names}, names)
    return paths
