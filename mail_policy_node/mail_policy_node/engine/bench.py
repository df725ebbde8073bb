"""Engine benchmark: one control step, camera frames in to action chunk out, p50 / p99.

The paper's model sizes (model/presets.py), two 128x128 cameras, random weights, DDPM-16 and BC heads.
Per streaming backbone (the registered Mamba families: D-Ma, ED-Ma), head and K, four ways to produce the
same kind of chunk:
- ``reference``: what MaIL's own code does, paper layout: re-encode the K frames of every camera and run
  the full sequence once per denoising step (engine/reference.py; no cache of any kind);
- ``paper``: the engine on the paper layout (each frame encoded once, backbone by full recompute);
- ``window``: the engine, streaming layout, history window (prefix once per step, act per denoising step);
- ``stream``: the engine, streaming layout, history stream (one new step per control step).
And the stream step at episode positions 10, 100, 1000 (its cost must stay flat; the engine is moved to
that position by feeding random tokens straight into its state, see `advance_stream`). Peak memory: CUDA
allocator peak above what was allocated before the configuration was built (its weights, caches and
workspace; the runners built before it stay alive, so an absolute peak would add them up); on the CPU
the process's peak RSS (monotonic over the run).

Run: ``mail-il bench engine [--device cpu|cuda] [--quick] [--out engine_bench.json]``, or
``python -m mail_policy_node.engine.bench ...``. Prints a table, writes JSON.

``--versus-dtr`` instead: D-Ma against D-Tr with a KV cache (`run_versus_dtr`), both on the engine's
cached path of their streaming layouts, timed round-robin in one run: history window at each K (and
D-Tr's paper layout by full recompute, what the KV cache replaces, and the Diffusion Policy users would
otherwise pick, DP-UNet, which recomputes its chunk from the window), and history stream at each episode
position. Memory: the bytes of the backbone's observation cache (`cache_bytes`), and on CUDA the
allocator peak as above.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from ..model.backbone_registry import streaming_variants
from ..model.diffusion import DiffusionConfig
from ..model.policy import MailPolicy, PolicyConfig
from ..model.transformer import transformer_streaming_config
from ..spec import CameraSpec, FeatureSpec
from .engine import EngineConfig, InferenceEngine
from .inputs import Observation, check_observation
from .reference import EpisodeLog, reference_chunk

MODES = ("reference", "paper", "window", "stream")


def bench_policy(variant: str, head: str, k: int, layout: str, history: str, size: int = 128, seed: int = 0,
                 **encoder) -> MailPolicy:
    """A random policy at the paper's size for the benchmark (normalisation: zero mean, unit std)."""
    torch.manual_seed(seed)
    spec = FeatureSpec(cameras=(CameraSpec("agentview", size, size), CameraSpec("wrist", size, size)),
                       obs_horizon=k, action_horizon=5)
    if variant in ("d_tr", "ed_tr") and layout == "streaming":  # no preset yet: the paper one, relaid
        cfg = PolicyConfig.make(spec, f"{variant}_{head}", diffusion=DiffusionConfig(steps=16), encoder=encoder)
        cfg = replace(cfg, backbone=transformer_streaming_config(cfg.backbone), history=history)
    else:
        preset = f"{variant}_{head}" + ("_stream" if layout == "streaming" else "")
        cfg = PolicyConfig.make(spec, preset, history=history, diffusion=DiffusionConfig(steps=16), encoder=encoder)
    policy = MailPolicy(cfg)
    a = spec.action_dim
    policy.set_normalization(torch.zeros(a), torch.ones(a), torch.full((a,), -3.0), torch.full((a,), 3.0))
    return policy.eval()


def _frames(spec: FeatureSpec, rng: np.random.Generator, batch: int) -> dict:
    return {c.name: rng.integers(0, 256, (batch, c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras}


def _peak_mb(device: torch.device, since: float = 0.0) -> float:
    """CUDA: the allocator's peak since `_reset_peak`, less ``since`` (its baseline); CPU: peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20 - since
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak(device: torch.device) -> float:
    """Start a new CUDA peak; returns what is allocated now [MB], the baseline for `_peak_mb`."""
    if device.type != "cuda":
        return 0.0
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / 2**20


def _stats(times: list[float]) -> dict:
    ms = np.asarray(times) * 1e3
    return dict(p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()),
                n=len(ms))


@torch.no_grad()
def advance_stream(engine: InferenceEngine, steps: int, chunk: int = 100, seed: int = 0) -> None:
    """Move a stream engine ``steps`` control steps into its episode quickly: random observation tokens
    straight into the backbone state (no frames, no encoder), ``chunk`` steps per call. The state then has
    the shape and history length of a real episode at that point, which is all the cost depends on."""
    p, state = engine.policy, engine.stream_state
    if state is None:
        raise ValueError("advance_stream needs an engine with history 'stream'")
    gen = torch.Generator().manual_seed(seed)
    d, per = p.cfg.backbone.d_model, p.cfg.encoder.tokens_per_step
    left = steps
    while left > 0:
        n = min(chunk, left)
        tokens = torch.randn(engine.config.batch, n * per, d, generator=gen)
        tokens = tokens.to(engine.device, p.action_out.weight.dtype)
        new = p.observe(tokens, state)
        for a, b in zip(_leaves(state), _leaves(new)):
            a.copy_(b)
        left -= n


def _leaves(tree):
    from .graphs import tree_leaves

    return tree_leaves(tree)


def cache_bytes(engine: InferenceEngine) -> dict:
    """What the engine keeps of the observations, in bytes: ``state``, the backbone's cache (history
    stream: the episode state, D-Ma's conv + SSM states or D-Tr's preallocated KV cache; window: the
    prefix state act() builds, from zeros each step), ``held`` (D-Tr: the KV positions the rows hold,
    the rest is preallocated room) and ``ring`` (window: the K steps' tokens)."""
    e = engine
    ring = dict(ring=e._ring.numel() * e._ring.element_size()) if e.history == "window" else {}
    if not e.cached:  # full recompute keeps no backbone state
        return dict(state=0, **ring)
    state = e.stream_state if e.history == "stream" else e.policy.init_state(e.config.batch, e.device)
    out = dict(state=sum(t.numel() * t.element_size() for t in _leaves(state)), **ring)
    caches = [s for s in state.stacks if hasattr(s, "length")]  # KV caches (D-Tr: one; ED-Tr: two)
    if caches:
        if e.history == "window":  # act() fills a whole window: goal + K * P tokens
            out["held"] = out["state"]
        else:
            out["held"] = sum(int(kv.length.max()) * sum(t[:, :, :1].numel() * t.element_size()
                                                         for t in (*kv.keys, *kv.values)) for kv in caches)
    return out


def time_engine(engine: InferenceEngine, steps: int, warmup: int, skip: int = 0, seed: int = 0) -> dict:
    """Time engine.step() (observe + act) after ``warmup`` untimed steps; a stream engine is first moved
    ``skip`` steps into its episode (`advance_stream`)."""
    rng = np.random.default_rng(seed)
    spec, b = engine.spec, engine.config.batch
    engine.reset()
    i = 0

    def obs():
        nonlocal i
        i += 1
        return Observation(stamp=i * spec.dt, images=_frames(spec, rng, b))

    if skip:
        engine.observe(obs())  # the first observation opens the episode (goal, stamps)
        advance_stream(engine, skip - 1)
    for _ in range(warmup):
        engine.step(obs())
    times = []
    for _ in range(steps):
        o = obs()
        t0 = time.perf_counter()
        engine.step(o)  # ends with the chunk on the host: no extra sync needed
        times.append(time.perf_counter() - t0)
    return _stats(times)


class _EngineRunner:
    """One engine stepped with fresh random frames; ``step()`` returns the seconds of engine.step()."""

    def __init__(self, engine: InferenceEngine, skip: int = 0, seed: int = 0):
        self.engine, self.rng, self.i = engine, np.random.default_rng(seed), 0
        engine.reset()
        if skip:
            engine.observe(self._obs())  # the first observation opens the episode
            advance_stream(engine, skip - 1)

    def _obs(self) -> Observation:
        self.i += 1
        return Observation(stamp=self.i * self.engine.spec.dt,
                           images=_frames(self.engine.spec, self.rng, self.engine.config.batch))

    def step(self) -> float:
        o = self._obs()
        t0 = time.perf_counter()
        self.engine.step(o)  # ends with the chunk on the host: no extra sync needed
        return time.perf_counter() - t0


class _ReferenceRunner:
    """MaIL's way: per control step, validate the frames, re-encode the K latest, full recompute."""

    def __init__(self, policy: MailPolicy, batch: int, seed: int = 0):
        self.policy, self.batch, self.rng = policy, batch, np.random.default_rng(seed)
        self.i, self.log = 0, EpisodeLog()

    @torch.no_grad()
    def step(self) -> float:
        spec = self.policy.cfg.spec
        self.i += 1
        o = Observation(stamp=self.i * spec.dt, images=_frames(spec, self.rng, self.batch))
        t0 = time.perf_counter()
        self.log.add(check_observation(o, spec, self.batch))
        self.log.steps = self.log.steps[-spec.obs_horizon:]
        reference_chunk(self.policy, self.log, "window").cpu()
        return time.perf_counter() - t0


def _interleaved(runners: dict, steps: int) -> dict:
    """Time the runners round-robin, one step each per round, so that a change of machine load (the CPU
    machines are shared) hits every runner alike and the ratios stay meaningful."""
    times = {name: [] for name in runners}
    for _ in range(steps):
        for name, r in runners.items():
            times[name].append(r.step())
    return {name: _stats(t) for name, t in times.items()}


def run_bench(device: str = "cpu", quick: bool = False, batch: int = 1, variants=None,
              heads=("ddpm", "bc"), ks=(1, 5, 10), lengths=(10, 100, 1000), weights: str = "float32",
              cuda_graphs: bool = True, steps: int | None = None, log=None, fused: bool = True,
              fused_encoder: bool = True, channels_last: bool = True) -> dict:
    log = log or (lambda line: print(line, flush=True))
    variants = variants or streaming_variants()  # the modes need a streaming layout
    dev = torch.device(device)
    steps = steps or (3 if quick else 30)
    warmup = 1 if quick else 5
    if quick:  # a smoke run of every mode: K 1 and 5, episode positions 10 and 50
        ks, lengths = (1, 5), (10, 50)
    ecfg = lambda history: EngineConfig(batch=batch, device=device, weights=weights,  # noqa: E731
                                        cuda_graphs=cuda_graphs, history=history, fused=fused,
                                        fused_encoder=fused_encoder, channels_last=channels_last)
    rows, flat = [], []
    for variant in variants:
        for head in heads:
            for k in ks:
                runners, peaks = {}, {}
                for mode in MODES:
                    layout = "paper" if mode in ("reference", "paper") else "streaming"
                    history = "stream" if mode == "stream" else "window"
                    policy = bench_policy(variant, head, k, layout, history)
                    base_mb = _reset_peak(dev)
                    if mode == "reference":  # the model's own runtime choices (scan "auto", kernels on CUDA)
                        runners[mode] = _ReferenceRunner(policy.to(dev), batch)
                    else:
                        runners[mode] = _EngineRunner(InferenceEngine(policy, ecfg(history)))
                    for _ in range(warmup):
                        runners[mode].step()
                    peaks[mode] = _peak_mb(dev, base_mb)
                for mode, stats in _interleaved(runners, steps).items():
                    row = dict(variant=variant, head=head, K=k, mode=mode, peak_mb=peaks[mode], **stats)
                    rows.append(row)
                    log(f"{variant:6s} {head:5s} K={k:<3d} {mode:10s} p50 {row['p50_ms']:9.2f} ms  "
                        f"p99 {row['p99_ms']:9.2f} ms  peak {row['peak_mb']:8.1f} MB")
                del runners
            # stream cost against the episode position (K does not matter for stream; the middle K is used)
            k = ks[len(ks) // 2]
            policy = bench_policy(variant, head, k, "streaming", "stream")
            runners = {n: _EngineRunner(InferenceEngine(policy, ecfg("stream")), skip=max(0, n - 1)) for n in lengths}
            for r in runners.values():
                r.step()
            for n, stats in _interleaved(runners, steps).items():
                flat.append(dict(variant=variant, head=head, K=k, episode_step=n, **stats))
                log(f"{variant:6s} {head:5s} stream at step {n:<5d} p50 {stats['p50_ms']:9.2f} ms  "
                    f"p99 {stats['p99_ms']:9.2f} ms")
            del runners
    return dict(device=str(dev), device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                platform.processor() or platform.machine(), torch=torch.__version__, threads=torch.get_num_threads(),
                batch=batch, weights=weights, cuda_graphs=cuda_graphs, fused=fused, fused_encoder=fused_encoder,
                channels_last=channels_last, quick=quick, steps=steps,
                note="step = observe (frames in) + act (chunk on the host); reference = MaIL's way (re-encode K "
                     "frames, full recompute per denoising step); modes timed round-robin; stream positions "
                     "reached by random tokens fed into the state (advance_stream); peak_mb: CUDA allocator peak "
                     "while building and warming each runner above what was allocated before it, on the CPU "
                     "the process peak RSS (monotonic)",
                rows=rows, stream_length=flat, summary=summarise(rows, flat, dev))


def run_versus_dtr(device: str = "cpu", batch: int = 1, head: str = "ddpm", ks=(1, 5, 10),
                   lengths=(10, 100, 1000), steps: int = 30, warmup: int = 5, weights: str = "float32",
                   cuda_graphs: bool = True, fused: bool = True, fused_encoder: bool = True,
                   channels_last: bool = True, size: int = 128, log=None) -> dict:
    """D-Ma against D-Tr with a KV cache, paper depths, one control step (observe + act), round-robin.

    window, per K: ``d_ma`` and ``d_tr_kv`` (streaming layouts, cached path), ``d_tr_recompute`` (D-Tr's
    paper layout, the full sequence per denoising step) and ``dp_unet`` (Chi et al.'s 1-D UNet at its paper
    depths, 72 M parameters, conditioned on the window's frames); stream, per episode position (K = the middle
    one): ``d_ma`` and ``d_tr_kv``, all positions of both in one round-robin. D-Tr's stream cache is
    preallocated for the longest position (EngineConfig.max_stream_steps)."""
    log = log or (lambda line: print(line, flush=True))
    dev = torch.device(device)
    room = max(lengths, default=0) + warmup + steps + 2

    def engine(variant, layout, history, k):
        cfg = EngineConfig(batch=batch, device=device, weights=weights, cuda_graphs=cuda_graphs, history=history,
                           fused=fused, fused_encoder=fused_encoder, channels_last=channels_last,
                           max_stream_steps=room)
        return InferenceEngine(bench_policy(variant, head, k, layout, history, size=size), cfg)

    def measure(builds: dict, skip: dict) -> tuple[dict, dict]:
        """builds: runner name -> engine() arguments."""
        runners, extra = {}, {}
        for name, args in builds.items():
            base_mb = _reset_peak(dev)
            e = engine(*args)
            runners[name] = _EngineRunner(e, skip=skip.get(name, 0))
            for _ in range(warmup):
                runners[name].step()
            extra[name] = dict(path=e.describe()["path"], cache_bytes=cache_bytes(e))
            if dev.type == "cuda":
                extra[name]["peak_mb"] = _peak_mb(dev, base_mb)
        return _interleaved(runners, steps), extra

    rows = []
    for k in ks:
        stats, extra = measure({"d_ma": ("d_ma", "streaming", "window", k),
                                "d_tr_kv": ("d_tr", "streaming", "window", k),
                                "d_tr_recompute": ("d_tr", "paper", "window", k),
                                "dp_unet": ("dp_unet", "paper", "window", k)}, {})
        for name, st in stats.items():
            rows.append(dict(history="window", K=k, runner=name, **extra[name], **st))
            log(f"window K={k:<3d} {name:15s} p50 {st['p50_ms']:9.2f} ms  p99 {st['p99_ms']:9.2f} ms  "
                f"cache {extra[name]['cache_bytes']}")
    k = ks[len(ks) // 2]
    builds, skip = {}, {}
    for n in lengths:
        for v in ("d_ma", "d_tr"):
            name = f"{'d_ma' if v == 'd_ma' else 'd_tr_kv'}@{n}"
            builds[name] = (v, "streaming", "stream", k)
            skip[name] = max(0, n - 1)
    stats, extra = measure(builds, skip)
    for name, st in stats.items():
        runner, n = name.split("@")
        rows.append(dict(history="stream", K=k, episode_step=int(n), runner=runner, **extra[name], **st))
        log(f"stream step {n:<5s} {runner:9s} p50 {st['p50_ms']:9.2f} ms  p99 {st['p99_ms']:9.2f} ms  "
            f"cache {extra[name]['cache_bytes']}")
    ratios = []
    key = lambda r: (r["history"], r["K"], r.get("episode_step"))  # noqa: E731
    by = {(key(r), r["runner"]): r for r in rows}
    for r in rows:
        if r["runner"] == "d_ma":
            dtr = by[(key(r), "d_tr_kv")]
            ratios.append(dict(history=r["history"], K=r["K"], episode_step=r.get("episode_step"),
                               dtr_kv_over_dma_p50=dtr["p50_ms"] / r["p50_ms"],
                               dtr_kv_over_dma_p99=dtr["p99_ms"] / r["p99_ms"]))
            unet = by.get((key(r), "dp_unet"))
            if unet:
                ratios[-1].update(dp_unet_over_dma_p50=unet["p50_ms"] / r["p50_ms"],
                                  dp_unet_over_dma_p99=unet["p99_ms"] / r["p99_ms"])
    return dict(device=str(dev), device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                platform.processor() or platform.machine(), torch=torch.__version__, threads=torch.get_num_threads(),
                batch=batch, head=head, weights=weights, image_size=size, steps=steps, warmup=warmup,
                cuda_graphs=cuda_graphs, fused=fused,
                note="paper depths (D-Ma 16 layers, D-Tr 8, d_model 128; DP-UNet 256/512/1024), DDPM-16, J 5, two "
                     "cameras; step = observe + act; runners timed round-robin; stream positions reached by random "
                     "tokens (advance_stream); dtr_kv_over_dma < 1: D-Tr with the KV cache is faster; "
                     "dp_unet_over_dma likewise",
                rows=rows, ratios=ratios)


def summarise(rows: list[dict], flat: list[dict], device: torch.device) -> dict:
    """Speed-ups against the reference and the targets of issue 4."""
    by = {(r["variant"], r["head"], r["K"], r["mode"]): r for r in rows}
    speed = []
    for (v, h, k, mode), r in by.items():
        if mode != "reference":
            continue
        for m in ("paper", "window", "stream"):
            if (v, h, k, m) in by:
                speed.append(dict(variant=v, head=h, K=k, mode=m,
                                  speedup_p50=r["p50_ms"] / by[(v, h, k, m)]["p50_ms"]))
    flatness = []
    for v, h in {(f["variant"], f["head"]) for f in flat}:
        pts = {f["episode_step"]: f["p50_ms"] for f in flat if (f["variant"], f["head"]) == (v, h)}
        lo, hi = min(pts), max(pts)
        flatness.append(dict(variant=v, head=h, ratio=pts[hi] / pts[lo], steps=(lo, hi)))
    want = 20.0 if device.type == "cuda" else 5.0
    k5 = [s for s in speed if s["K"] == 5 and s["head"] == "ddpm" and s["mode"] in ("window", "stream")]
    targets = dict(
        ddpm_k5_streaming_speedup_min=min((s["speedup_p50"] for s in k5), default=None), ddpm_k5_target=want,
        stream_flat_ratio_max=max((f["ratio"] for f in flatness), default=None), stream_flat_target=1.10)
    if device.type == "cuda":
        p99 = [r["p99_ms"] for r in rows if r["mode"] in ("window", "stream")]
        targets.update(streaming_p99_ms_max=max(p99, default=None), p99_target_ms=5.0)
    return dict(speedups=speed, flatness=flatness, targets=targets)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--quick", action="store_true",
                   help="a short CPU run: K 1 and 5, episode positions 10 and 50, 3 timed steps")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--variants", default=",".join(streaming_variants()),
                   help="comma-separated backbone variants with streaming layouts (model/backbone_registry.py)")
    p.add_argument("--heads", default="ddpm,bc")
    p.add_argument("--ks", default="1,5,10")
    p.add_argument("--lengths", default="10,100,1000")
    p.add_argument("--steps", type=int, default=None, help="timed control steps per row (default 30, quick 3)")
    p.add_argument("--weights", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--no-fused", action="store_true", help="CUDA: the kernel path without the fused Triton kernels")
    p.add_argument("--fused-encoder", action=argparse.BooleanOptionalAction, default=True,
                   help="CUDA: the camera trunks with fused GroupNorm epilogues (engine/fused_encoder.py; default on)")
    p.add_argument("--no-channels-last", action="store_true", help="camera trunks in NCHW memory")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", default="engine_bench.json", help="JSON output path")
    p.add_argument("--versus-dtr", action="store_true",
                   help="D-Ma against D-Tr with a KV cache, and DP-UNet (run_versus_dtr; --heads' first head, --ks, "
                        "--lengths)")
    p.add_argument("--image-size", type=int, default=128, help="camera frame size (both cameras)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per runner (default 5, quick 1)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    ints = lambda s: tuple(int(x) for x in s.split(",") if x)  # noqa: E731
    if args.versus_dtr:
        warm = args.warmup if args.warmup is not None else (1 if args.quick else 5)
        result = run_versus_dtr(device=args.device, batch=args.batch, head=args.heads.split(",")[0],
                                ks=ints(args.ks), lengths=ints(args.lengths),
                                steps=args.steps or (3 if args.quick else 30), warmup=warm, weights=args.weights,
                                cuda_graphs=not args.no_cuda_graphs, fused=not args.no_fused,
                                fused_encoder=args.fused_encoder, channels_last=not args.no_channels_last,
                                size=args.image_size)
        print("\nD-Tr (KV cache) / D-Ma, p50 and p99 (< 1: D-Tr faster); DP-UNet / D-Ma with a window:")
        for r in result["ratios"]:
            where = f"K={r['K']}" if r["history"] == "window" else f"step {r['episode_step']}"
            unet = (f"  DP-UNet p50 x{r['dp_unet_over_dma_p50']:.2f}  p99 x{r['dp_unet_over_dma_p99']:.2f}"
                    if "dp_unet_over_dma_p50" in r else "")
            print(f"  {r['history']:6s} {where:10s} p50 x{r['dtr_kv_over_dma_p50']:.2f}  "
                  f"p99 x{r['dtr_kv_over_dma_p99']:.2f}{unet}")
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.out}")
        return 0
    result = run_bench(device=args.device, quick=args.quick, batch=args.batch, variants=tuple(args.variants.split(",")),
                       heads=tuple(args.heads.split(",")), ks=ints(args.ks), lengths=ints(args.lengths),
                       weights=args.weights, cuda_graphs=not args.no_cuda_graphs, steps=args.steps,
                       fused=not args.no_fused, fused_encoder=args.fused_encoder,
                       channels_last=not args.no_channels_last)
    print("\nspeed-up of the engine over the reference (p50):")
    for s in result["summary"]["speedups"]:
        print(f"  {s['variant']:6s} {s['head']:5s} K={s['K']:<3d} {s['mode']:7s} x{s['speedup_p50']:.2f}")
    print("stream step cost, last / first episode position (p50):")
    for f in result["summary"]["flatness"]:
        print(f"  {f['variant']:6s} {f['head']:5s} steps {f['steps']}: x{f['ratio']:.3f}")
    print("targets:", json.dumps(result["summary"]["targets"]))
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="engine-bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
