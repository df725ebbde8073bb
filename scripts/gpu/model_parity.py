#!/usr/bin/env python3
"""Parity of the MaIL model's Mamba paths: the CPU PyTorch reference against the mamba-ssm kernels.

On a CUDA machine with mamba-ssm and causal-conv1d ("kernels" mode) it checks, for the same weights:
  - the fused kernel forward of our block, and mamba_ssm.Mamba itself loaded with our state dict,
    against the CPU fp32 reference (sequential scan): outputs and gradients;
  - prefill with state return, step() and continue-from-state through the kernels against the full
    kernel forward; every continue implementation (Mamba.CONTINUE_IMPLS), also from a random state;
  - whole backbones (D-Ma 16 layers, ED-Ma streaming observe/act) with kernels against the reference;
  - bf16 drift of the kernels (measured, with a loose bound) and of bf16 step vs bf16 full forward.
Without CUDA or mamba-ssm ("degraded" mode, for CI) the candidate is the vectorised (parallel prefix) scan and
the PyTorch step path on CPU. Errors are max |a - b| / max(1, max |b|) (absolute for values below 1):
one block within --tol (1e-5), 16-layer backbones within --stack-tol (1e-4), bf16 drift reported with a
loose sanity bound (--bf16-tol).

Usage: python scripts/gpu/model_parity.py --out parity.json [--mode auto|kernels|degraded]
Exit status: 0 all checks passed, 1 a parity check failed, 2 the requested mode cannot run here.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "mail_policy_node"))

import torch

from mail_policy_node.model import kernels
from mail_policy_node.model.backbones import build_backbone
from mail_policy_node.model.mamba import Mamba, MambaConfig
from mail_policy_node.model.presets import backbone_preset


def scaled_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, that divided by max(1, max |b|)), computed in fp32 on the CPU."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    return diff, diff / max(1.0, b.abs().max().item() if b.numel() else 0.0)


class Report:
    def __init__(self):
        self.checks: list[dict] = []

    def add(self, name: str, a, b, tol: float | None, note: str = "") -> None:
        absd, scaled = scaled_err(a, b)
        passed = True if tol is None else bool(scaled <= tol)
        self.checks.append(dict(name=name, max_abs=absd, scaled=scaled, tol=tol, passed=passed, note=note))

    def add_many(self, name: str, pairs, tol: float | None) -> None:
        """Worst case over a list of (a, b) pairs, e.g. all parameter gradients."""
        worst = max(pairs, key=lambda p: scaled_err(*p)[1])
        self.add(name, *worst, tol, note=f"worst of {len(pairs)}")

    @property
    def ok(self) -> bool:
        return all(c["passed"] for c in self.checks)


def _grads(module: torch.nn.Module, x: torch.Tensor, fn, weight: torch.Tensor):
    """Output of fn(module, x) and the gradients of sum(out * weight) wrt x and every parameter."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = fn(module, x)
    (out.float() * weight.to(out.device)).sum().backward()
    grads = {"input": (x.grad if x.grad is not None else torch.zeros_like(x)).detach()}
    for name, p in module.named_parameters():
        grads[name] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
    return out.detach(), grads


def _pairs(cand: dict, ref: dict) -> list:
    if set(cand) != set(ref):
        raise RuntimeError(f"parameter names differ: {sorted(set(cand) ^ set(ref))}")
    return [(cand[k], ref[k]) for k in ref]


def _candidate(module: torch.nn.Module, device: str, use_kernels: bool, dtype=torch.float32):
    cand = copy.deepcopy(module).to(device=device, dtype=dtype)
    for m in cand.modules():
        if isinstance(m, Mamba):
            m.use_kernels = use_kernels
            m.scan_impl = "parallel"
    return cand


def _reference(module: torch.nn.Module):
    ref = copy.deepcopy(module).cpu().float()
    for m in ref.modules():
        if isinstance(m, Mamba):
            m.use_kernels, m.scan_impl = False, "sequential"
    return ref


def run_parity(mode: str = "degraded", tol: float = 1e-5, bf16_tol: float = 0.25, batch: int = 4,
               seqlen: int = 11, seed: int = 0, stack_tol: float = 1e-4) -> dict:
    """Run every check; returns a JSON-able dict with "ok" and "checks". mode: "kernels" | "degraded".
    ``tol`` bounds single-block checks, ``stack_tol`` whole 16-layer backbones (rounding accumulates over
    residual layers), ``bf16_tol`` is a loose sanity bound on bf16 drift, which is reported either way."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    use_k = mode == "kernels"
    device = "cuda" if use_k else "cpu"
    rep = Report()
    torch.manual_seed(seed)

    # --- one block (the paper's mixer: d_model 128, d_state 16, d_conv 4, expand 2) ---
    block = Mamba(MambaConfig(d_model=128))
    x = torch.randn(batch, seqlen, 128)
    w = torch.randn(batch, seqlen, 128)
    ref = _reference(block)
    cand = _candidate(block, device, use_k)
    full = lambda m, t: m(t)  # noqa: E731
    y_ref, g_ref = _grads(ref, x, full, w)
    y_c, g_c = _grads(cand, x.to(device), full, w)
    rep.add("block forward: candidate vs reference", y_c, y_ref, tol)
    rep.add_many("block gradients (input and every parameter)", _pairs(g_c, g_ref), tol)

    if use_k:
        from mamba_ssm import Mamba as OfficialMamba

        official = OfficialMamba(d_model=128, d_state=16, d_conv=4, expand=2).to(device)
        official.load_state_dict(cand.state_dict(), strict=True)
        y_o, g_o = _grads(official, x.to(device), full, w)
        rep.add("mamba_ssm.Mamba with our weights vs reference", y_o, y_ref, tol)
        rep.add_many("mamba_ssm.Mamba gradients vs reference", _pairs(g_o, g_ref), tol)
        back = Mamba(MambaConfig(d_model=128))
        back.load_state_dict(official.state_dict(), strict=True)  # and the other way round

    with torch.no_grad():
        xd = x.to(device)
        y_full = cand(xd)
        y_pre, st_pre = cand.forward_with_state(xd)
        _, st_ref = ref.forward_with_state(x)
        rep.add("prefill with state: output vs full forward", y_pre, y_full, tol)
        rep.add("prefill ssm state vs reference", st_pre.ssm, st_ref.ssm, tol)
        rep.add("prefill conv state vs reference", st_pre.conv, st_ref.conv, tol)
        state = cand.allocate_inference_cache(batch, device)
        ys = []
        for t in range(seqlen):
            yt, state = cand.step(xd[:, t], state)
            ys.append(yt)
        rep.add("step() token by token vs full forward", torch.stack(ys, 1), y_full, tol)
        rep.add("state after step() vs reference state", state.ssm, st_ref.ssm, tol)
        cut = seqlen // 2
        ya, sa = cand.forward_with_state(xd[:, :cut])
        sa_copy = copy.deepcopy(sa)
        yb = cand(xd[:, cut:], sa)
        rep.add("continue from state vs full forward", torch.cat([ya, yb], 1), y_full, tol)
        rep.add("continue leaves the given state untouched", sa.ssm, sa_copy.ssm, 0.0)
        # every continue-from-state implementation (kernels: selective_scan_fn + closed-form initial state,
        # or one selective_state_update per token), from a reachable and from an arbitrary state; degraded
        # mode runs the same code with PyTorch stand-ins for the kernels
        cand.kernel_emulation = not use_k
        st_rand = type(sa)(torch.randn_like(sa.conv), torch.randn_like(sa.ssm))
        ref_b, ref_sb = ref.forward_with_state(x[:, cut:], type(sa)(*(t.cpu() for t in st_rand)))
        for impl in Mamba.CONTINUE_IMPLS:
            cand.continue_impl = impl
            yb, sb = cand.forward_with_state(xd[:, cut:], sa)
            rep.add(f"continue [{impl}] vs full forward", torch.cat([ya, yb], 1), y_full, tol)
            rep.add(f"continue [{impl}] ssm state vs reference", sb.ssm, st_ref.ssm, tol)
            rep.add(f"continue [{impl}] conv state vs reference", sb.conv, st_ref.conv, tol)
            yr, sr = cand.forward_with_state(xd[:, cut:], st_rand)
            rep.add(f"continue [{impl}] from a random state vs reference", yr, ref_b, tol)
            rep.add(f"continue [{impl}] from a random state: ssm state vs reference", sr.ssm, ref_sb.ssm, tol)
            rep.add(f"continue [{impl}] leaves the given state untouched", sa.ssm, sa_copy.ssm, 0.0)
        cand.continue_impl, cand.kernel_emulation = "auto", False

    # --- whole backbones ---
    bb = build_backbone(backbone_preset("d_ma_ddpm"))
    obs, act, tim = torch.randn(batch, 5, 128), torch.randn(batch, 5, 128), torch.randn(batch, 128)
    wb = torch.randn(batch, 5, 128)
    fn = lambda m, o: m(o, act.to(o.device), tim.to(o.device))  # noqa: E731
    yb_ref, gb_ref = _grads(_reference(bb), obs, fn, wb)
    yb_c, gb_c = _grads(_candidate(bb, device, use_k), obs.to(device), fn, wb)
    rep.add("D-Ma 16 layers (paper layout) forward vs reference", yb_c, yb_ref, stack_tol)
    rep.add_many("D-Ma 16 layers gradients vs reference", _pairs(gb_c, gb_ref), stack_tol)

    ed = build_backbone(backbone_preset("ed_ma_ddpm_stream"))
    ed_ref, ed_c = _reference(ed), _candidate(ed, device, use_k)
    with torch.no_grad():
        y_ref_ed = ed_ref(obs, act, tim)
        s = ed_c.init_state(batch, device)
        s = ed_c.observe(obs[:, :2].to(device), s)
        s = ed_c.observe(obs[:, 2:].to(device), s)
        y_act = ed_c.act(s, act.to(device), tim.to(device))
        rep.add("ED-Ma streaming observe/act vs reference full forward", y_act, y_ref_ed, stack_tol)
        y_full_ed = ed_c(obs.to(device), act.to(device), tim.to(device))
        rep.add("ED-Ma streaming full forward vs reference", y_full_ed, y_ref_ed, stack_tol)
        rep.add("ED-Ma streaming observe/act vs full forward, same device", y_act, y_full_ed, tol)

    # --- what the streaming layouts train on: action branches continuing from the trunk's states (the
    # continue path under autograd; degraded mode runs it with the kernels' PyTorch stand-ins) ---
    steps = 4
    at = torch.arange(steps) * 2 + 1  # two observation tokens per step
    acts, times = torch.randn(batch, steps, 5, 128), torch.randn(batch, steps, 128)
    wt = torch.randn(batch, steps, 5, 128)
    for preset in ("d_ma_ddpm_stream", "ed_ma_ddpm_stream"):
        net = build_backbone(backbone_preset(preset))
        c = _candidate(net, device, use_k)
        for m in c.modules():
            if isinstance(m, Mamba):
                m.kernel_emulation = not use_k
        episode = lambda m, o: m.forward_episode(o, at.to(o.device), acts.to(o.device), times.to(o.device))  # noqa: E731
        ye_ref, ge_ref = _grads(_reference(net), obs[:, :1].repeat(1, 2 * steps, 1), episode, wt)
        ye_c, ge_c = _grads(c, obs[:, :1].repeat(1, 2 * steps, 1).to(device), episode, wt)
        rep.add(f"{preset} episode training forward vs reference", ye_c, ye_ref, stack_tol)
        rep.add_many(f"{preset} episode training gradients vs reference", _pairs(ge_c, ge_ref), stack_tol)

    # --- bf16 drift (measured; the bound is loose and only catches gross errors) ---
    with torch.no_grad():
        cb = _candidate(block, device, use_k, dtype=torch.bfloat16)
        xb = x.to(device, torch.bfloat16)
        yb_full = cb(xb)
        rep.add("bf16 block forward vs fp32 reference (drift)", yb_full, y_ref, bf16_tol)
        state = cb.allocate_inference_cache(batch, device)
        ys = []
        for t in range(seqlen):
            yt, state = cb.step(xb[:, t], state)
            ys.append(yt)
        rep.add("bf16 step() vs bf16 full forward (drift)", torch.stack(ys, 1), yb_full, bf16_tol)
        rep.add("bf16 state after step() vs fp32 reference state (drift)", state.ssm, st_ref.ssm, bf16_tol)
        cutb = seqlen // 2
        yba, sba = cb.forward_with_state(xb[:, :cutb])
        for impl in Mamba.CONTINUE_IMPLS:
            cb.continue_impl = impl
            ybb = cb(xb[:, cutb:], sba)
            rep.add(f"bf16 continue [{impl}] vs bf16 full forward (drift)", torch.cat([yba, ybb], 1), yb_full,
                    bf16_tol)
        cb.continue_impl = "auto"
        bbb = _candidate(bb, device, use_k, dtype=torch.bfloat16)
        yb16 = bbb(obs.to(device, torch.bfloat16), act.to(device, torch.bfloat16), tim.to(device, torch.bfloat16))
        rep.add("bf16 D-Ma 16 layers vs fp32 reference (drift)", yb16, yb_ref, bf16_tol)

    return dict(ok=rep.ok, mode=mode, device=device, tol=tol, stack_tol=stack_tol, bf16_tol=bf16_tol, batch=batch,
                seqlen=seqlen, seed=seed, checks=rep.checks)


def environment() -> dict:
    env = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.cuda.is_available(),
               sequence_kernels=kernels.have_sequence_kernels(), step_kernels=kernels.have_step_kernels(),
               continue_kernels=kernels.have_continue_kernels())
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    for name in ("mamba_ssm", "causal_conv1d"):
        try:
            env[name] = __import__(name).__version__
        except Exception as e:
            env[name] = f"unavailable ({type(e).__name__})"
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--mode", choices=("auto", "kernels", "degraded"), default="auto",
                   help="kernels: CUDA + mamba-ssm (fails if missing); degraded: CPU parallel scan vs sequential")
    p.add_argument("--tol", type=float, default=1e-5, help="fp32 tolerance for one block (scaled max error)")
    p.add_argument("--stack-tol", type=float, default=1e-4, help="fp32 tolerance for 16-layer backbones")
    p.add_argument("--bf16-tol", type=float, default=0.25, help="loose sanity bound on bf16 drift")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=11)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    env = environment()
    can_kernels = env["cuda"] and env["sequence_kernels"] and env["step_kernels"]
    mode = ("kernels" if can_kernels else "degraded") if args.mode == "auto" else args.mode
    if mode == "kernels" and not can_kernels:
        print(f"kernels mode needs CUDA, mamba_ssm and causal_conv1d; found {env}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = run_parity(mode, args.tol, args.bf16_tol, args.batch, args.seqlen, args.seed, args.stack_tol)
    result.update(environment=env, seconds=round(time.perf_counter() - t0, 2))
    width = max(len(c["name"]) for c in result["checks"])
    print(f"mode {mode} on {result['device']}  ({env})")
    for c in result["checks"]:
        tol = "-" if c["tol"] is None else f"{c['tol']:.2g}"
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['name']:<{width}}  max_abs {c['max_abs']:.3e}  "
              f"scaled {c['scaled']:.3e}  tol {tol}")
    print("ALL PASSED" if result["ok"] else "PARITY FAILURE")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
