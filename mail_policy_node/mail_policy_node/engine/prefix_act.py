"""The cached path's DDPM / DDIM loop without the fused kernels (the CPU, or CUDA with fused off).

Same computation as `policy.sample_with(lambda x, t: backbone.act(state, x, t), ...)`, with the work
that does not depend on the noisy actions taken out of the loop:
- the time embedding of every diffusion step is computed once, when the engine is built (it depends on
  the step index only): a denoising step reads its row of that table;
- D-Tr and ED-Tr (streaming layouts, a KV-cached prefix) run as D-Ma: backbone.act per denoising step;
- ED-Ma: the encoder's suffix [time, action tokens] does not depend on the noisy actions, so the encoder
  runs once per control step for all the sampler's diffusion steps at once (batch steps x B, every row
  continuing from its batch row's prefix state), and each denoising step runs only the decoder.
The sampler itself is the policy's (DDPM.sample / sample_ddim), so the arithmetic of the update is
unchanged. Graph-capturable: the step index stays a device tensor (table rows are gathered, not sliced).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.diffusion import CommittedActions
from ..model.mamba_backbones import DMamba, EDMamba, StreamState
from ..model.transformer import DTransformer, EDTransformer
from ..model.policy import MailPolicy


def prefix_sampler_usable(policy: MailPolicy) -> bool:
    bb = policy.backbone
    return policy.is_ddpm and isinstance(bb, (DMamba, EDMamba, DTransformer, EDTransformer)) and bb.streaming


class PrefixSampler:
    """Built once per engine; ``__call__(state, noise) -> (B, J, A)`` in robot units."""

    def __init__(self, policy: MailPolicy, batch: int, sampler: str):
        self.p, self.b, self.sampler = policy, batch, sampler
        self.ed = isinstance(policy.backbone, EDMamba)
        ddpm = policy.ddpm
        dev = policy.action_mean.device
        steps = ddpm.cfg.steps
        if sampler == "ddpm":
            used = list(range(steps))
        else:  # the steps sample_ddim visits
            used = sorted(set(torch.linspace(steps - 1, 0, ddpm.cfg.ddim_steps).round().long().tolist()))
        with torch.no_grad():
            self.time_table = policy.time_emb(torch.arange(steps, device=dev)).contiguous()  # (T, D)
        # ED-Ma: the diffusion steps the sampler visits, and each one's block of rows in the encoder batch
        self.used = torch.as_tensor(used, device=dev)
        slot = torch.full((steps,), -1, dtype=torch.long)
        slot[used] = torch.arange(len(used))
        self.row = (slot[:, None] * batch + torch.arange(batch)[None]).to(dev)  # (T, B): encoder batch row

    def __call__(self, state: StreamState, noise: Tensor, committed: CommittedActions | None = None) -> Tensor:
        p, b, bb = self.p, self.b, self.p.backbone
        if self.ed:
            time = self.time_table[self.used].repeat_interleave(b, 0)  # (steps used x B, D)
            enc_out = bb.act_encoder(state, time)  # (steps used x B, M, D)

            def run(x: Tensor, t: Tensor) -> Tensor:
                return bb.act_decoder(state, x, enc_out[self.row.index_select(0, t[:1])[0]])
        else:
            def run(x: Tensor, t: Tensor) -> Tensor:
                return bb.act(state, x, self.time_table[t])

        dtype = p.action_out.weight.dtype

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            return p.action_out(run(p.action_in(x.to(dtype)), t)).float()

        shape = (b, p.cfg.spec.action_horizon, p.cfg.spec.action_dim)
        kw = dict(low=p.action_low, high=p.action_high, noise=noise, device=p.action_mean.device, committed=committed)
        if self.sampler == "ddpm":
            x = p.ddpm.sample(denoise, shape, **kw)
        else:
            x = p.ddpm.sample_ddim(denoise, shape, **kw)
        return p.unnormalize_actions(x)
