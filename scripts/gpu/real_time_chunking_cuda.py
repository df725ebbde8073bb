#!/usr/bin/env python3
"""Real-time chunking on CUDA (the engine's captured graphs): tiny random DDPM policies (tests/engine/helpers),
D-Ma window / stream and ED-Ma window, DDPM and DDIM, batch 2, three observations, one explicit noise draw.
Per case: whether the act graph was captured, that the fused DDPM loop is left out with real-time chunking
(and used without it), the chunk with nothing committed against an engine without the fused kernels and
against the default engine, how closely two committed actions (weight 1) are kept, how much the free actions
moved, and that the next act without committed actions is the unguided chunk again (the static weights
cleared). From the repository root, after `source scripts/gpu/h200_env.sh`:

    PYTHONPATH=mail_policy_node:.:$PYTHONPATH python3 scripts/gpu/real_time_chunking_cuda.py
(writes $OUT/rtc_cuda.json).
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, ".")

from mail_policy_node.engine import EngineConfig, InferenceEngine
from tests.engine.helpers import Episode, tiny_policy

ENGINES = (("fused", dict()), ("nofused", dict(fused=False)), ("rtc", dict(real_time_chunking=True)))


def check(variant: str, history: str, sampler: str) -> dict:
    pol = tiny_policy(variant, history=history)
    engs = {}
    for name, kw in ENGINES:
        e = InferenceEngine(pol, EngineConfig(history=history, batch=2, device="cuda", sampler=sampler, **kw))
        ep = Episode(pol.cfg.spec, 2, seed=4)
        for i in range(3):
            e.observe(ep.observation(i))
        engs[name] = e
    noise = torch.randn(engs["rtc"].noise_shape, generator=torch.Generator().manual_seed(7))
    a = {k: e.act(noise).actions for k, e in engs.items()}
    j = a["rtc"].shape[1]
    target = a["rtc"] + 0.4
    w = np.zeros((2, j))
    w[:, :2] = 1
    kept = engs["rtc"].act(noise, committed=(target, w)).actions
    again = engs["rtc"].act(noise).actions
    d = engs["rtc"].describe()
    return dict(graphs=d["cuda_graphs"], fused_ddpm_rtc=d["fused_ddpm"],
                fused_ddpm_plain=engs["fused"].describe()["fused_ddpm"], prefix=d["prefix_sampler"],
                zero_weight_vs_nofused=float(np.abs(a["rtc"] - a["nofused"]).max()),
                rtc_vs_fused=float(np.abs(a["rtc"] - a["fused"]).max()),
                kept_err=float(np.abs(kept[:, :2] - target[:, :2]).max()),
                free_change=float(np.abs(kept[:, 2:] - a["rtc"][:, 2:]).max()),
                weights_cleared=bool(np.array_equal(again, a["rtc"])))


def main() -> None:
    out = {f"{v}_{h}_{s}": check(v, h, s) for v, h in (("d_ma", "window"), ("d_ma", "stream"), ("ed_ma", "window"))
           for s in ("ddpm", "ddim")}
    print(json.dumps(out, indent=1))
    json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "rtc_cuda.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
