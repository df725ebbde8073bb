"""The cached path's DDPM ancestral loop with the fused Triton kernels (CUDA; model/fused.py).

Same computation as `policy.sample_with(lambda x, t: backbone.act(state, x, t), ...)` with the "ddpm"
sampler, organised for few launches per denoising step:
- the time embedding of every diffusion step is computed once, when the engine is built (it depends on
  the step index only): the time token of step t is a row of that table;
- the sampler's coefficients sqrt(1 - ab), sqrt(ab), post_c0, post_ct, sqrt(post_var) are one (T, 5)
  table, computed by the same torch ops as the sampler's;
- per denoising step: one fused block kernel per Mamba layer, then one head kernel (final LayerNorm of
  the J action tokens, action_out, x0 clamp, posterior mean, noise, and the next step's input tokens
  action_in(x) + slot embedding with the next time token);
- ED-Ma: the encoder's suffix [time, action tokens] does not depend on the noisy actions, so the encoder
  runs once per control step for all T diffusion steps at once (batch T x B, every row continuing from
  its batch row's state), and each denoising step runs only the decoder with its step's encoder output.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import fused
from ..model.mamba_backbones import DMamba, EDMamba, StreamState
from ..model.policy import MailPolicy


def fused_ddpm_usable(policy: MailPolicy, device: torch.device, sampler: str) -> bool:
    bb = policy.backbone
    if not (fused.available() and device.type == "cuda" and policy.is_ddpm and sampler == "ddpm"):
        return False
    if not isinstance(bb, (DMamba, EDMamba)) or not bb.streaming:
        return False
    j = policy.cfg.spec.action_horizon
    return all(s.fused != "off" and s.layers[0].mixer.use_kernels and all(fused.supports(b, j + 1) for b in s.layers)
               for s in bb.stacks())


class FusedDDPM:
    """Built once per engine (tables on the device); ``__call__(state, noise) -> (B, J, A)`` normalised x0
    chain result, i.e. what DDPM.sample returns. Graph-capturable: no host synchronisation."""

    def __init__(self, policy: MailPolicy, batch: int):
        self.p, self.b = policy, batch
        bb = policy.backbone
        self.ed = isinstance(bb, EDMamba)
        ddpm = policy.ddpm
        self.steps = ddpm.cfg.steps
        dev = policy.action_mean.device
        with torch.no_grad():
            t = torch.arange(self.steps, device=dev, dtype=torch.long)
            self.time_table = policy.time_emb(t).contiguous()  # (T, D) in the weights' dtype
            ab = ddpm.alpha_bar
            self.coef = torch.stack([(1 - ab).sqrt(), ab.sqrt(), ddpm.post_c0, ddpm.post_ct, ddpm.post_var.sqrt()],
                                    1).float().contiguous()  # (T, 5)
        self.slot = bb.layout.act_slot[0].contiguous()  # (J, D)

    def __call__(self, state: StreamState, noise: Tensor) -> Tensor:
        p, b, bb = self.p, self.b, self.p.backbone
        j = p.cfg.spec.action_horizon
        d = self.time_table.shape[-1]
        dtype = self.time_table.dtype
        x = noise[0].clone()  # (B, J, A) fp32, updated in place
        seq = torch.empty(b, 1 + j, d, device=x.device, dtype=dtype)
        steps = list(reversed(range(self.steps)))
        if self.ed:
            enc_state, dec_state = state.stacks
            n = self.steps
            acts = bb.layout.actions(bb.action_tokens.expand(n * b, -1, -1))  # (T B, J, D)
            enc_in = torch.cat([self.time_table.repeat_interleave(b, 0)[:, None].to(acts.dtype), acts], 1)
            h, _ = fused.stack_continue(bb.encoder, enc_in, enc_state, state_rows=b)
            enc_out = bb.encoder.norm_f(h).view(n, b, 1 + j, d)  # step t's encoder output: enc_out[t]
            stack, st, row0 = bb.decoder, dec_state, lambda t: bb.state_tokens[0, 0]
        else:
            stack, st, enc_out = bb.stack, state.stacks[0], None
            row0 = lambda t: self.time_table[t]  # noqa: E731
        fused.ddpm_head(None, stack.norm_f, p.action_out, x, None, self.coef, 0, p.action_low, p.action_high,
                        p.action_in, self.slot, row0(steps[0]), seq)
        for i, t in enumerate(steps):
            h, _ = fused.stack_continue(stack, seq, st, add=None if enc_out is None else enc_out[t])
            last = t == 0
            fused.ddpm_head(h, stack.norm_f, p.action_out, x, None if last else noise[i + 1], self.coef, t,
                            p.action_low, p.action_high, p.action_in, self.slot,
                            None if last else row0(steps[i + 1]), None if last else seq)
        return x
