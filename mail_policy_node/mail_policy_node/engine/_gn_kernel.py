"""Triton kernel of `fused_encoder.py` (imported on first use, so that TRITON_INTERPRET=1 set before then
runs it in Triton's CPU interpreter).

GroupNorm over one (batch row, group) per program, any memory layout (the strides of x, the residual and
the output are passed), with the block's epilogue fused: y = GN(x) [+ res] [ReLU]. Three passes over the
group (mean; variance about the mean; apply), fp32, the affine map of PyTorch's kernel
(a = rstd * gamma, b = beta - a * mean, y = a x + b).
"""

import triton
import triton.language as tl


@triton.jit
def group_norm_act_kernel(X, W, B, RES, OUT, eps,
                          sxb, sxc, sxp, srb, src, srp, sob, soc, sop,
                          HW: tl.constexpr, NG: tl.constexpr, CG: tl.constexpr, BP: tl.constexpr,
                          HAS_RES: tl.constexpr, RELU: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // NG
    g = pid % NG
    cc = g * CG + tl.arange(0, CG)  # the group's channels
    pp = tl.arange(0, BP)
    xb = X + b * sxb + cc[None, :] * sxc
    n = HW * CG
    acc = tl.zeros((BP, CG), dtype=tl.float32)
    for p0 in range(0, HW, BP):
        m = (p0 + pp) < HW
        acc += tl.load(xb + (p0 + pp)[:, None] * sxp, mask=m[:, None], other=0.0).to(tl.float32)
    mean = tl.sum(tl.sum(acc, axis=1), axis=0) / n
    acc = tl.zeros((BP, CG), dtype=tl.float32)
    for p0 in range(0, HW, BP):
        m = (p0 + pp) < HW
        d = tl.load(xb + (p0 + pp)[:, None] * sxp, mask=m[:, None], other=0.0).to(tl.float32) - mean
        d = tl.where(m[:, None], d, 0.0)
        acc += d * d
    var = tl.sum(tl.sum(acc, axis=1), axis=0) / n
    rstd = 1.0 / tl.sqrt_rn(var + eps)
    scale = tl.load(W + cc).to(tl.float32) * rstd
    shift = tl.load(B + cc).to(tl.float32) - mean * scale
    for p0 in range(0, HW, BP):
        m = (p0 + pp) < HW
        x = tl.load(xb + (p0 + pp)[:, None] * sxp, mask=m[:, None], other=0.0).to(tl.float32)
        y = x * scale[None, :] + shift[None, :]
        if HAS_RES:
            y += tl.load(RES + b * srb + cc[None, :] * src + (p0 + pp)[:, None] * srp, mask=m[:, None],
                         other=0.0).to(tl.float32)
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(OUT + b * sob + cc[None, :] * soc + (p0 + pp)[:, None] * sop, y.to(OUT.dtype.element_ty),
                 mask=m[:, None])
