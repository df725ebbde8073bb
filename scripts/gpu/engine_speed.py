#!/usr/bin/env python3
"""Where the engine's control step goes on the GPU, and how exact the fused path is (issue 4).

Sections (each writes its part of the JSON as it finishes; a failing section is recorded and the others
still run):
  env       torch / Triton versions, TF32 flags as found (the defaults) and as used here (off: fp32 means fp32)
  kernels   fused block kernel (model/fused.py) against the PyTorch continue path and the mamba-ssm kernel
            path, paper-size stacks
  profile   torch.profiler of eager control steps (no CUDA graph, so each kernel is seen): kernel launches
            and CUDA time per op, old kernel path against the fused path (D-Ma DDPM-16, K=5, stream)
  timing    CUDA-graph replay of observe and act alone (CUDA events), and engine.step() p50 / p99, for
            the old path with camera streams, and the fused path (warps, channel block, out_proj block,
            programmatic dependent launch)
  encoder   observe-step camera trunks: modules against the fused GroupNorm epilogues, NCHW and channels-last
  floor     exactness against an fp64 recompute: how far the fp32 references themselves are from fp64, against
            how far the engine paths are (D-Ma and ED-Ma DDPM-16 window, paper sizes, the parity schedule)

Usage: python scripts/gpu/engine_speed.py --out engine_speed.json [--sections env,kernels,timing,profile,floor,encoder]
       [--best-env best.env] [--variants i4o8bc32bo32p1,i4o8bc16bo32p0]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "mail_policy_node"))

import numpy as np
import torch

from mail_policy_node.engine import EngineConfig, InferenceEngine, Observation
from mail_policy_node.engine.bench import bench_policy
from mail_policy_node.engine.inputs import check_observation
from mail_policy_node.engine.reference import EpisodeLog, reference_window_chunks, step_tokens
from mail_policy_node.model import fused
from mail_policy_node.model.backbone_registry import streaming_variants
from mail_policy_node.model.mamba import MambaConfig, MambaState
from mail_policy_node.model.stack import MambaStack

RESULT: dict = {}
DEFAULT_TF32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # as torch sets them


def save(out: str) -> None:
    Path(out).write_text(json.dumps(RESULT, indent=2, default=str))


def section(name: str, out: str):
    def wrap(fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            print(f"=== {name}", flush=True)
            try:
                RESULT[name] = fn(*a, **k)
            except Exception as e:
                RESULT[name] = dict(error=repr(e), traceback=traceback.format_exc())
                print(traceback.format_exc(), flush=True)
            RESULT.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
            save(out)
        return run
    return wrap


def frames(spec, rng, b):
    return {c.name: rng.integers(0, 256, (b, c.height, c.width, 3), dtype=np.uint8) for c in spec.cameras}


def env() -> dict:
    import triton
    d = dict(torch=torch.__version__, triton=triton.__version__, gpu=torch.cuda.get_device_name(),
             default_matmul_allow_tf32=DEFAULT_TF32[0], default_cudnn_allow_tf32=DEFAULT_TF32[1],
             float32_matmul_precision=torch.get_float32_matmul_precision())
    print(d, flush=True)
    return d


def kernels_check() -> dict:
    torch.manual_seed(0)
    res = {}
    for name, cfg, n_layers, length, zero, add, write in [
            ("d_ma 16 layers, 6 tokens (act)", MambaConfig(d_state=16, d_conv=4), 16, 6, False, False, False),
            ("d_ma 16 layers, 1 token (observe)", MambaConfig(d_state=16, d_conv=4), 16, 1, False, False, True),
            ("d_ma 16 layers, 5 tokens from zeros (window prefix)", MambaConfig(), 16, 5, True, False, True),
            ("ed_ma decoder 6 layers d_conv 2, 6 tokens + add", MambaConfig(d_conv=2), 6, 6, False, True, False),
            ("ed_ma bc d_state 8 d_conv 2, 21 tokens", MambaConfig(d_state=8, d_conv=2), 10, 21, False, False, True)]:
        s = MambaStack(cfg, n_layers).cuda().eval()
        with torch.no_grad():
            for p in s.parameters():
                p.add_(0.05 * torch.randn_like(p))
        x = torch.randn(2, length, cfg.d_model, device="cuda")
        a = torch.randn_like(x) if add else None
        st = None if zero else tuple(MambaState(torch.randn_like(m.conv), 0.3 * torch.randn_like(m.ssm))
                                     for m in s.allocate_inference_cache(2, "cuda"))
        st_ref = st if st is not None else s.allocate_inference_cache(2, "cuda")
        row = {}
        with torch.no_grad():
            s.set_runtime(fused="off", use_kernels=False)
            ref, ref_s = s.forward_with_state(x, st_ref, add=a)
            s.set_runtime(use_kernels=True)
            pdl = fused.PDL
            for tag, on in (("", pdl), ("_pdl_off", False)):  # PDL as set (default on), then off
                fused.PDL = on
                h, new = fused.stack_continue(s, x, st, add=a, write_state=write)
                torch.cuda.synchronize()
                row[f"fused{tag}_vs_torch"] = (s.norm_f(h) - ref).abs().max().item()
                if write:
                    row[f"fused{tag}_state_vs_torch"] = max(max((n.ssm - r.ssm).abs().max().item(),
                                                                (n.conv - r.conv).abs().max().item())
                                                            for n, r in zip(new, ref_s))
            fused.PDL = pdl
            row["pdl_used"] = fused.pdl_usable(x.device)
        res[name] = row
        print(name, row, flush=True)
    return res


def profile_steps(cfg: EngineConfig, steps: int = 3) -> dict:
    from torch.profiler import ProfilerActivity, profile

    policy = bench_policy("d_ma", "ddpm", 5, "streaming", cfg.history)
    engine = InferenceEngine(policy, cfg)
    rng = np.random.default_rng(0)
    for i in range(3):
        engine.step(Observation(stamp=0.1 * (i + 1), images=frames(engine.spec, rng, 1)))
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            engine.step(Observation(stamp=0.1 * (i + 10), images=frames(engine.spec, rng, 1)))
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, list] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us())
    top = sorted(((n, len(v) / steps, sum(v) / steps) for n, v in by_name.items()), key=lambda r: -r[2])
    total_us = sum(sum(v) for v in by_name.values()) / steps
    return dict(config=str(cfg), kernels_per_step=len(kernels) / steps, kernel_time_us_per_step=total_us,
                top=[dict(kernel=n[:120], launches_per_step=c, us_per_step=round(t, 1)) for n, c, t in top[:25]],
                table=prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))


def profile_section() -> dict:
    base = EngineConfig(device="cuda", history="stream", cuda_graphs=False)
    out = {}
    for name, cfg in [("fused", base)]:
        r = profile_steps(cfg)
        print(f"--- {name}: {r['kernels_per_step']:.0f} kernels per step, {r['kernel_time_us_per_step']:.0f} us "
              f"of kernel time per step", flush=True)
        for t in r["top"][:15]:
            print(f"   {t['us_per_step']:8.1f} us  {t['launches_per_step']:6.1f} x  {t['kernel']}", flush=True)
        out[name] = r
    return out


def time_graphs(engine: InferenceEngine, steps: int = 60) -> dict:
    """engine.step() wall time, and observe / act graph replays alone timed with CUDA events."""
    rng = np.random.default_rng(0)
    for i in range(5):
        engine.step(Observation(stamp=0.1 * (i + 1), images=frames(engine.spec, rng, engine.config.batch)))
    wall = []
    for i in range(steps):
        o = Observation(stamp=0.1 * (i + 10), images=frames(engine.spec, rng, engine.config.batch))
        t0 = time.perf_counter()
        engine.step(o)
        wall.append(time.perf_counter() - t0)
    parts = {}
    for name, g in (("observe", engine._observe_graph), ("act", engine._act_graph)):
        ev = []
        for _ in range(30):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g()
            b.record()
            torch.cuda.synchronize()
            ev.append(a.elapsed_time(b))
        parts[name + "_gpu_ms_p50"] = float(np.median(ev))
    ms = np.asarray(wall) * 1e3
    return dict(step_p50_ms=float(np.percentile(ms, 50)), step_p99_ms=float(np.percentile(ms, 99)), **parts)


def parse_variants(spec: str) -> dict:
    """"i4o8bc32bo32p1,i4o8bc32bo32p1s16w2" -> {"fused i4 o8 bc32 bo32 pdl1": (4, 8, 32, 32, True, 0, 0),
    "fused i4 o8 bc32 bo32 pdl1 split s16 w2": (..., 16, 2)}; the optional s<channels>w<warps> selects the
    split block_out (block_scan over that many channels per program, then block_proj)."""
    import re

    out = {}
    for item in spec.split(","):
        m = re.fullmatch(r"i(\d+)o(\d+)bc(\d+)bo(\d+)p([01])(?:s(\d+)w(\d+))?", item.strip())
        if not m:
            raise ValueError(f"bad variant {item!r}, want like i4o8bc32bo32p1 or i4o8bc32bo32p1s16w2")
        name = f"fused i{m[1]} o{m[2]} bc{m[3]} bo{m[4]} pdl{m[5]}" + (f" split s{m[6]} w{m[7]}" if m[6] else "")
        out[name] = (int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5] == "1", int(m[6] or 0), int(m[7] or 0))
    return out


# fused kernel settings: (block_in warps, block_out warps, block_in channel block, out_proj block, PDL,
# split block_out's scan channels per program (0: not split), its warps)
VARIANTS = parse_variants("i4o8bc32bo32p1,i4o8bc32bo32p0,i4o8bc16bo32p1,i8o8bc32bo32p1,i4o8bc32bo64p1")


def set_variant(v: tuple) -> None:
    fused.IN_WARPS, fused.NUM_WARPS, fused.BLOCK_C, fused.OUT_BLOCK, fused.PDL, bs, sw = v
    fused.SPLIT_OUT = bs > 0
    if bs:
        fused.SCAN_BLOCK, fused.SCAN_WARPS = bs, sw
    fused._pdl_device.cache_clear()


def timing_section(best_env: str, variants: dict | None = None) -> dict:
    """variants given: only those, D-Ma DDPM stream, against each other (a short run that picks settings)."""
    out = {}
    quick = variants is not None
    variants = variants or VARIANTS

    def one(variant, history, name, cfg):
        try:
            engine = InferenceEngine(bench_policy(variant, "ddpm", 5, "streaming", history), cfg)
            r = time_graphs(engine)
            r["fused_error"] = engine.fused_error
        except Exception as e:
            r = dict(error=repr(e))
        key = f"{variant} ddpm K=5 {history}: {name}"
        out[key] = r
        print(key, json.dumps(r), flush=True)
        return r

    base = EngineConfig(device="cuda", history="stream")
    old = {} if quick else one("d_ma", "stream", "old + camera streams", replace(base, fused=False))
    best, best_act = None, float("inf")
    for name, v in variants.items():
        set_variant(v)
        r = one("d_ma", "stream", name, base)
        if r.get("act_gpu_ms_p50", float("inf")) < best_act and not r.get("fused_error"):
            best, best_act = name, r["act_gpu_ms_p50"]
    use_fused = best is not None and best_act < old.get("act_gpu_ms_p50", float("inf"))
    iw, ow, bc, bo, pdl, bs, sw = v = variants[best] if best else (4, 8, 32, 32, True, 0, 0)
    set_variant(v)
    Path(best_env).write_text(f"export MAIL_FUSED_IN_WARPS={iw} MAIL_FUSED_WARPS={ow} MAIL_FUSED_BC={bc} "
                              f"MAIL_FUSED_BO={bo} MAIL_FUSED_PDL={int(pdl)} MAIL_FUSED_SPLIT={int(bs > 0)} "
                              f"MAIL_FUSED_BS={bs or 16} MAIL_FUSED_SCAN_WARPS={sw or 2}\n"
                              f"BENCH_FLAGS={'' if use_fused else '--no-fused'}\n")
    out["chosen"] = dict(variant=best, use_fused=use_fused, in_warps=iw, out_warps=ow, bc=bc, bo=bo, pdl=pdl,
                         split_scan_channels=bs, scan_warps=sw)
    print("chosen", out["chosen"], flush=True)
    if quick:
        return out
    one("d_ma", "window", "fused (chosen)", replace(base, history="window"))
    one("ed_ma", "stream", "fused (chosen)", base)
    # the stack alone: one act pass (16 layers x 6 tokens) as a graph, old kernel path vs fused
    policy = bench_policy("d_ma", "ddpm", 5, "streaming", "stream").cuda().eval()
    st = policy.backbone.stack
    x = torch.randn(1, 6, 128, device="cuda")
    state = st.allocate_inference_cache(1, "cuda")
    for name, mode in (("stack act pass, old kernel path", "off"), ("stack act pass, fused", "auto")):
        st.set_runtime(fused=mode)
        with torch.no_grad():
            for _ in range(3):
                st(x, state)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                st(x, state)
        ev = []
        for _ in range(50):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            torch.cuda.synchronize()
            ev.append(a.elapsed_time(b))
        out[name] = dict(gpu_ms_p50=float(np.median(ev)))
        print(name, out[name], flush=True)
    return out


def encoder_section(best_env: str = "") -> dict:
    """The observe step's camera trunks: PyTorch modules (NCHW) against the fused GroupNorm epilogues
    (engine/fused_encoder.py), in NCHW and channels-last memory; D-Ma DDPM-16 K=5 stream and window, and
    ED-Ma stream, with the fused backbone kernels as set."""
    out = {}
    base = EngineConfig(device="cuda", history="stream")
    ways = {"modules (NCHW)": dict(fused_encoder=False, channels_last=False),
            "fused GN (NCHW)": dict(fused_encoder=True, channels_last=False),
            "fused GN + channels-last": dict(fused_encoder=True, channels_last=True)}
    for variant, history in (("d_ma", "stream"), ("d_ma", "window"), ("ed_ma", "stream")):
        for name, kw in ways.items():
            if variant != "d_ma" or history != "stream":
                if name == "fused GN (NCHW)":
                    continue
            try:
                engine = InferenceEngine(bench_policy(variant, "ddpm", 5, "streaming", history),
                                         replace(base, history=history, **kw))
                r = time_graphs(engine)
                r["describe"] = {k: v for k, v in engine.describe().items() if k in ("fused_encoder", "fused_error")}
            except Exception as e:
                r = dict(error=repr(e), traceback=traceback.format_exc())
            key = f"{variant} ddpm K=5 {history}: {name}"
            out[key] = r
            print(key, json.dumps(r), flush=True)
    # the benchmark's encoder flags: the fastest way for D-Ma stream (p99 of the step)
    flags = {"modules (NCHW)": "--no-fused-encoder --no-channels-last",
             "fused GN (NCHW)": "--fused-encoder --no-channels-last", "fused GN + channels-last": "--fused-encoder"}
    p99 = {n: out[f"d_ma ddpm K=5 stream: {n}"].get("step_p99_ms", float("inf")) for n in ways}
    best = min(p99, key=p99.get)
    out["chosen"] = best
    if best_env:
        with open(best_env, "a") as fh:
            fh.write(f"ENCODER_FLAGS='{flags[best]}'\n")
    print("encoder chosen:", best, flush=True)
    return out


def floor_section(steps: int = 24, variants: tuple[str, ...] | None = None, device: str = "cuda") -> dict:
    """max |a - fp64 recompute| for the fp32 reference and the engine paths (window, DDPM-16, paper sizes,
    betas clipped at 0.9 as in the parity script; batch 2), per variant. Whether the engine's error against
    the fp32 reference is the cache's or fp32's own: compare it with how far the fp32 references (kernels,
    another batch composition, the PyTorch path) are from fp64 and from each other. Default variants: the
    registered streaming backbones."""
    return {v: floor_one(v, steps, device) for v in variants or streaming_variants()}


def floor_one(variant: str, steps: int, device: str = "cuda") -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_parity import EXACT_SCHEDULE, make_policy, observations, run_engine

    policy = make_policy(variant, "ddpm", "streaming", "window", False, EXACT_SCHEDULE)
    b = 2
    obs = observations(policy.cfg.spec, b, steps)
    log = EpisodeLog()
    for o in obs:
        log.add(check_observation(o, policy.cfg.spec, b))
    base = EngineConfig(batch=b, device=device, history="window")
    e0 = InferenceEngine(policy, base)
    noise = torch.randn(steps, *e0.noise_shape, generator=torch.Generator().manual_seed(1))
    acts = {}
    if device == "cuda":
        acts["engine fused"], _ = run_engine(e0, obs, noise)
        acts["engine old kernel path"], _ = run_engine(InferenceEngine(policy, replace(base, fused=False)), obs, noise)
        nok = InferenceEngine(policy, replace(base, fused=False, use_kernels=False, cuda_graphs=False))
        acts["engine PyTorch path (no kernels)"], _ = run_engine(nok, obs, noise)
    else:
        acts["engine (CPU cached path)"], _ = run_engine(e0, obs, noise)
    ref = copy.deepcopy(policy).to(device)
    acts["reference fp32 (all windows in one batch)"] = reference_window_chunks(ref, log, noise).cpu()
    # the same fp32 reference with another batch composition: the first half of the windows alone
    half = EpisodeLog(steps=log.steps[: steps // 2], goal=log.goal)
    split = acts["reference fp32 (all windows in one batch)"].clone()
    split[: steps // 2] = reference_window_chunks(ref, half, noise[: steps // 2]).cpu()
    acts["reference fp32 (another batch split)"] = split
    ref_pt = copy.deepcopy(policy).to(device)
    ref_pt.backbone.set_runtime(use_kernels=False, scan_impl="sequential")
    acts["reference fp32 PyTorch sequential scan"] = reference_window_chunks(ref_pt, log, noise).cpu()
    # fp64: the whole network and the sampler in double (PyTorch path, no kernels)
    dev = torch.device(device)
    p64 = copy.deepcopy(policy).double().to(dev)
    p64.backbone.set_runtime(use_kernels=False, scan_impl="sequential")
    tokens = step_tokens(p64, log.steps, dev)  # (B, T, P, D) double
    from mail_policy_node.engine.reference import _window_index

    idx = torch.as_tensor(_window_index(steps, policy.cfg.spec.obs_horizon), device=dev)
    windows = tokens[:, idx].transpose(0, 1).flatten(2, 3).flatten(0, 1)
    g = p64.goal_token(torch.as_tensor(log.goal, dtype=torch.float64, device=dev))
    windows = torch.cat([g.repeat(steps, 1, 1), windows], 1)
    nz = noise.to(dev, torch.float64).transpose(0, 1).flatten(1, 2)  # (n, T B, J, A)
    dd = p64.ddpm
    x = nz[0]
    with torch.no_grad():
        for i, t in enumerate(reversed(range(dd.cfg.steps))):
            tt = torch.full((x.shape[0],), t, device=dev, dtype=torch.long)
            eps = p64.action_out(p64.backbone(windows, p64.action_in(x), p64.time_emb(tt)))
            ab = dd.alpha_bar[t]
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(p64.action_low, p64.action_high)
            x = dd.post_c0[t] * x0 + dd.post_ct[t] * x
            if t > 0:
                x = x + dd.post_var[t].sqrt() * nz[i + 1]
        r64 = p64.unnormalize_actions(x).unflatten(0, (steps, b)).cpu()
    out = {k: dict(max_abs_vs_fp64=(v.double() - r64).abs().max().item()) for k, v in acts.items()}
    r32 = acts["reference fp32 (all windows in one batch)"]
    for k, v in acts.items():
        out[k]["max_abs_vs_fp32_reference"] = (v - r32).abs().max().item()
    out["action_abs_max"] = r64.abs().max().item()
    out["device"], out["steps"], out["batch"] = device, steps, b
    for k, v in out.items():
        print(variant, k, v, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="engine_speed.json")
    ap.add_argument("--sections", default="env,timing,kernels,floor,profile")
    ap.add_argument("--best-env", default="best.env", help="timing writes the chosen settings here (shell lines)")
    ap.add_argument("--floor-device", default="cuda", help="floor: cuda, or cpu (the CPU engine and references)")
    ap.add_argument("--floor-steps", type=int, default=24)
    ap.add_argument("--variants", default="",
                    help="timing: only these fused variants, e.g. i4o8bc32bo32p1,i4o8bc16bo32p0")
    args = ap.parse_args()
    want = args.sections.split(",")
    sec = dict(env=env, kernels=kernels_check, profile=profile_section,
               timing=lambda: timing_section(args.best_env, parse_variants(args.variants) if args.variants else None),
               floor=lambda: floor_section(args.floor_steps, device=args.floor_device),
               encoder=lambda: encoder_section(args.best_env))
    for name in want:
        # comparisons in true fp32; speed with torch's defaults (what `mail-il bench engine` runs with)
        exact = name in ("kernels", "floor")
        torch.backends.cuda.matmul.allow_tf32 = False if exact else DEFAULT_TF32[0]
        torch.backends.cudnn.allow_tf32 = False if exact else DEFAULT_TF32[1]
        section(name, args.out)(sec[name])()
    save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
