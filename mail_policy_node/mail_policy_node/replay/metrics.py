"""Replay metrics: pure functions of chunks, recorded actions, latencies and stream stamps.

Definitions (a = predicted, r = recorded, both in robot units; e = a - r):
- matching: action i of a chunk is due at stamp + start_offset + i * dt; it is compared with the
  recorded action whose stamp is nearest to that due time, if within ``tolerance`` (default dt / 2);
  actions due where nothing was recorded (past the episode's end) are not counted;
- action error, per dimension and overall, over every matched (chunk, i) pair: MSE = mean e^2,
  MAE = mean |e|, max = max |e|; overall MSE / MAE average over dimensions too;
- horizon error: the same, per chunk position i = 0 .. J-1;
- consistency: for consecutive chunks of an episode, the actions due at the same time (within dt / 2)
  in both; disagreement d = a_next - a_prev; RMS, mean |d| and max |d| per dimension and overall;
- latency: the engine's compute time per chunk (newest observe() + act()), percentiles in ms;
- gaps: per stream, intervals between consecutive stamps longer than ``factor`` x the median interval;
  dropped frames estimated as sum(round(interval / median) - 1) over those gaps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def match_recorded(due: np.ndarray, recorded_t: np.ndarray, tolerance: float) -> np.ndarray:
    """Index of the recorded action nearest to each due time, -1 where none is within ``tolerance``."""
    due = np.asarray(due, float)
    t = np.asarray(recorded_t, float)
    if t.size == 0:
        return np.full(due.shape, -1, np.int64)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    pos = np.searchsorted(ts, due)
    lo, hi = np.clip(pos - 1, 0, ts.size - 1), np.clip(pos, 0, ts.size - 1)
    best = np.where(np.abs(ts[hi] - due) < np.abs(ts[lo] - due), hi, lo)
    ok = np.abs(ts[best] - due) <= tolerance
    return np.where(ok, order[best], -1)


def pair_errors(due, actions, recorded_t, recorded, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """-> (errors (P, A) = predicted - recorded over matched pairs, chunk position i of each pair (P,))."""
    actions = np.asarray(actions, float)
    n, j, a = actions.shape
    idx = match_recorded(np.asarray(due, float).reshape(n, j), recorded_t, tolerance)
    ok = idx >= 0
    err = actions[ok] - np.asarray(recorded, float).reshape(-1, a)[idx[ok]]
    return err.reshape(-1, a), np.nonzero(ok)[1]


def error_stats(err: np.ndarray, names: Sequence[str]) -> dict:
    """MSE, MAE, max |e| overall and per dimension of an (P, A) error array."""
    err = np.asarray(err, float).reshape(-1, len(names))
    if err.shape[0] == 0:
        return dict(n=0, mse=None, mae=None, max=None, per_dim={})
    sq, ab = err ** 2, np.abs(err)
    return dict(n=int(err.shape[0]), mse=float(sq.mean()), mae=float(ab.mean()), max=float(ab.max()),
                per_dim={name: dict(mse=float(sq[:, k].mean()), mae=float(ab[:, k].mean()),
                                    max=float(ab[:, k].max())) for k, name in enumerate(names)})


def horizon_stats(err: np.ndarray, position: np.ndarray, horizon: int) -> list[dict]:
    """Error by chunk position i: [{"i", "n", "mse", "mae", "max"}] for i in 0 .. horizon-1."""
    out = []
    for i in range(horizon):
        e = np.asarray(err, float)[np.asarray(position) == i]
        out.append(dict(i=i, n=int(len(e)), mse=float((e ** 2).mean()) if len(e) else None,
                        mae=float(np.abs(e).mean()) if len(e) else None,
                        max=float(np.abs(e).max()) if len(e) else None))
    return out


def overlap_differences(due: np.ndarray, actions: np.ndarray, dt: float) -> np.ndarray:
    """(P, A) differences next - previous chunk over actions due at the same time (within dt / 2)."""
    actions = np.asarray(actions, float)
    due = np.asarray(due, float)
    diffs = []
    for n in range(1, len(actions)):
        idx = match_recorded(due[n], due[n - 1], dt / 2)
        ok = idx >= 0
        if ok.any():
            diffs.append(actions[n][ok] - actions[n - 1][idx[ok]])
    a = actions.shape[-1] if actions.ndim == 3 else 0
    return np.concatenate(diffs) if diffs else np.zeros((0, a))


def consistency_stats(diff: np.ndarray, names: Sequence[str]) -> dict:
    d = np.asarray(diff, float).reshape(-1, len(names))
    if d.shape[0] == 0:
        return dict(n=0, rms=None, mean_abs=None, max=None, per_dim={})
    ab = np.abs(d)
    return dict(n=int(d.shape[0]), rms=float(np.sqrt((d ** 2).mean())), mean_abs=float(ab.mean()),
                max=float(ab.max()),
                per_dim={name: dict(rms=float(np.sqrt((d[:, k] ** 2).mean())), mean_abs=float(ab[:, k].mean()),
                                    max=float(ab[:, k].max())) for k, name in enumerate(names)})


def latency_stats(latency_s: np.ndarray) -> dict:
    lat = np.asarray(latency_s, float) * 1e3
    if lat.size == 0:
        return dict(n=0, mean_ms=None, p50_ms=None, p90_ms=None, p99_ms=None, max_ms=None)
    return dict(n=int(lat.size), mean_ms=float(lat.mean()), p50_ms=float(np.percentile(lat, 50)),
                p90_ms=float(np.percentile(lat, 90)), p99_ms=float(np.percentile(lat, 99)), max_ms=float(lat.max()))


def gap_stats(segments: Sequence[Sequence[float]], factor: float = 1.5) -> dict:
    """Gaps of one stream whose stamps come in segments (episodes; no gap is counted between them)."""
    intervals = [np.diff(np.sort(np.asarray(s, float))) for s in segments if len(s) > 1]
    count = int(sum(len(s) for s in segments))
    if not intervals or not np.concatenate(intervals).size:
        return dict(messages=count, period_s=None, gaps=0, dropped=0, longest_gap_s=None)
    iv = np.concatenate(intervals)
    period = float(np.median(iv))
    if period <= 0:  # duplicates dominate: no period to judge gaps by
        return dict(messages=count, period_s=period, gaps=0, dropped=0, longest_gap_s=float(iv.max()))
    gaps = iv[iv > factor * period]
    return dict(messages=count, period_s=period, gaps=int(gaps.size),
                dropped=int(np.maximum(np.round(gaps / period) - 1, 0).sum()), longest_gap_s=float(iv.max()))
