"""`mail-il bench TARGET`: benchmarks that print a table and write JSON.

Targets are registered in TARGETS. `model` lives here: per backbone preset and batch size, one forward
(one network evaluation), one chunk (BC: one forward; DDPM: all denoising steps, the streaming presets
computing the observation prefix once and running only the action tokens per step) and one training
step (forward, backward, Adam). `engine` is provided by `mail_policy_node.engine.bench` (same
add_arguments / run contract) once that module exists.

    mail-il bench model --quick
    mail-il bench model --presets d_ma_ddpm,d_ma_ddpm_stream --batch 1,256 --out results/bench_model.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

# target -> (module providing add_arguments/run, or None for this module's model bench; help)
TARGETS: dict[str, tuple[str | None, str]] = {
    "model": (None, "backbone presets: forward latency, chunk latency, training-step throughput"),
    "engine": ("mail_policy_node.engine.bench", "the inference engine (provided by the engine package)"),
}


def default_presets() -> tuple[str, ...]:
    """What `bench model` measures unless told: every registered backbone's paper presets (DDPM first),
    and the DDPM streaming preset of each that streams (model/backbone_registry.py)."""
    from ..model.backbone_registry import backbone_families

    names = []
    for head in ("ddpm", "bc"):
        for f in backbone_families():
            if head in f.paper_depths:
                names.append(f"{f.variant}_{head}")
                if head == "ddpm" and f.mamba:
                    names.append(f"{f.variant}_{head}_stream")
    return tuple(names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (module_name, help_text) in TARGETS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if module_name is None:
            add_model_arguments(p)
            p.set_defaults(_bench_run=run_model)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not module_name.startswith(e.name):
                raise
            p.set_defaults(_bench_run=lambda args, n=name, m=module_name: _missing(n, m))
            continue
        module.add_arguments(p)
        p.set_defaults(_bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._bench_run(args) or 0)


def _missing(target: str, module_name: str) -> int:
    print(f"bench target {target!r} is not available: {module_name} is not installed in this tree")
    return 2


# ---------------------------------------------------------------- model
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--presets", default=",".join(default_presets()),
                   help="comma-separated backbone presets (see model.presets.preset_names)")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes (default 1,256; --quick: 1,8)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--iters", type=int, default=None, help="timed repetitions (default 10; --quick: 2)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    p.add_argument("--quick", action="store_true", help="batch 1 and 8, 2 repetitions: a smoke run")
    p.add_argument("--out", type=Path, help="write results as JSON here")


def _timed(fn, iters: int, device: torch.device) -> float:
    """Median seconds of fn() over iters runs, after one warm-up run."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_preset(name: str, batch: int, device: torch.device, dtype: torch.dtype, iters: int, train: bool) -> dict:
    from ..model.backbones import build_backbone, count_parameters
    from ..model.diffusion import DiffusionConfig
    from ..model.presets import backbone_preset

    cfg = backbone_preset(name)
    model = build_backbone(cfg).to(device=device, dtype=dtype)
    d, j, steps = cfg.d_model, cfg.action_horizon, DiffusionConfig().steps
    obs = torch.randn(batch, cfg.n_obs_tokens, d, device=device, dtype=dtype)
    act = torch.randn(batch, j, d, device=device, dtype=dtype) if cfg.head == "ddpm" else None
    tim = torch.randn(batch, d, device=device, dtype=dtype) if cfg.head == "ddpm" else None
    row = dict(preset=name, variant=cfg.variant, layout=cfg.layout, head=cfg.head, batch=batch,
               params=count_parameters(model))
    model.eval()
    with torch.no_grad():
        row["forward_ms"] = 1e3 * _timed(lambda: model(obs, act, tim), iters, device)
        n_evals = steps if cfg.head == "ddpm" else 1
        if cfg.layout == "streaming":
            def chunk():
                state = model.observe(obs, model.init_state(batch, device))
                for _ in range(n_evals):
                    model.act(state, act, tim)
        else:
            def chunk():
                for _ in range(n_evals):
                    model(obs, act, tim)
        row["chunk_ms"] = 1e3 * _timed(chunk, iters, device)
    if train:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=5e-4, foreach=True)
        target = torch.randn(batch, j, d, device=device, dtype=dtype)

        def step():
            loss = torch.nn.functional.mse_loss(model(obs, act, tim), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = _timed(step, iters, device)
        row.update(train_step_ms=1e3 * t, train_samples_per_s=batch / t)
    return row


def _fmt(v, digits=2) -> str:
    return "-" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else str(v))


def print_table(rows: list[dict]) -> None:
    cols = [("preset", "preset"), ("batch", "batch"), ("params", "params"), ("forward_ms", "forward ms"),
            ("chunk_ms", "chunk ms"), ("train_step_ms", "train step ms"), ("train_samples_per_s", "train samples/s")]
    cells = [[h for _, h in cols]] + [[_fmt(r.get(k), 1) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for n, line in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def run_model(args: argparse.Namespace) -> int:
    from ..model.presets import preset_names

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in preset_names()]
    if unknown:
        print(f"unknown presets {unknown}; known: {preset_names()}")
        return 2
    batches = [int(b) for b in (args.batch or ("1,8" if args.quick else "1,256")).split(",")]
    if any(b < 1 for b in batches):
        print(f"batch sizes must be >= 1, got {batches}")
        return 2
    iters = args.iters or (2 if args.quick else 10)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"device {args.device} requested but CUDA is not available")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    rows = []
    for name in presets:
        for b in batches:
            rows.append(bench_preset(name, b, device, dtype, iters, train=not args.no_train))
            print(f"  {name} batch {b}: forward {rows[-1]['forward_ms']:.1f} ms", flush=True)
    print()
    print_table(rows)
    result = dict(target="model", device=str(device), dtype=args.dtype, iters=iters, threads=torch.get_num_threads(),
                  torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                  note="forward = one network evaluation; chunk = all denoising steps (DDPM) or one forward (BC); "
                       "streaming presets compute the observation prefix once per chunk",
                  results=rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0
