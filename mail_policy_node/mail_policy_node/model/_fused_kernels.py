"""The Triton kernels of `fused.py` (imported on first use, so that setting TRITON_INTERPRET=1 before then
runs them in Triton's CPU interpreter). See fused.py for what they compute.

A block is three launches. `block_in` has one program per (token, channel block): the work of a token
is split over the inner channels, so that a block's tokens x 16 channel blocks keep many multiprocessors
busy with one short, unlooped program each (one program per token that looped over all channels was
latency-bound: 24 of the 31 us of a D-Ma layer-step on the H200). The x_proj product, which needs all
channels, is left as per-block partial sums; `block_dt` adds them in a fixed order (deterministic, no
atomics) and computes dt, B and C; `block_out` (one program per (token, output slice)) runs the scan, the
gate and out_proj. (dt computed inside block_out instead, saving a launch, was slower: Triton then kept
the scan's state in a register layout that was converted at every token.) Matrix-vector products are
broadcast products reduced with tl.sum (a tree: fp32 rounding no worse than cuBLAS's).

Programmatic dependent launch (PDL, sm_90+; PDL constexpr): a kernel loads its weights, then waits for the
previous kernel (gdc_wait), then lets the next one start (gdc_launch_dependents), so that the next
kernel's launch and weight loads overlap this one's work. Everything that a previous kernel may have
written (activations, states, scratch) is read, and everything is written, only after the wait. Since a
kernel lets its dependents start only after its own wait, every kernel before the previous one has
finished when a kernel starts; and as it writes only after its wait, a buffer that the allocator hands on
is never written while an earlier kernel still reads it. A kernel launched without PDL (torch's, the DDPM
head) ends the chain: the next one waits for it as usual.
"""

import triton
import triton.language as tl

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # an older Triton: PDL is never requested (fused.py checks)
    gdc_launch_dependents = gdc_wait = None


@triton.jit
def _layer_norm(h, lnw, lnb, eps, DM: tl.constexpr):
    """LayerNorm over the last axis of h (..., DM) fp32 (rows of a 2-D tile, or one vector)."""
    mean = tl.sum(h, axis=-1, keep_dims=True) / DM
    hc = h - mean
    var = tl.sum(hc * hc, axis=-1, keep_dims=True) / DM
    return hc * (1.0 / tl.sqrt_rn(var + eps)) * lnw + lnb


@triton.jit
def block_in_kernel(H, LN_W, LN_B, W_IN, B_IN, CONV_W, CONV_B, CONV_S, W_XP, SCR, CONV_NEW,
                    L, STATE_ROWS, eps,
                    DM: tl.constexpr, DI: tl.constexpr, N: tl.constexpr, P: tl.constexpr, BX: tl.constexpr,
                    K: tl.constexpr,
                    BK: tl.constexpr, BC: tl.constexpr, NCB: tl.constexpr,
                    HAS_B_IN: tl.constexpr, HAS_CONV_B: tl.constexpr, ZERO_STATE: tl.constexpr,
                    WRITE_STATE: tl.constexpr, PDL: tl.constexpr):
    """Program (token, part): part < NCB: inner channels part*BC.. of the x half: LayerNorm of the token's
    conv window (tokens t-K+1..t; the conv state's columns before the first new token), in_proj x of each
    window row, the depthwise causal conv (bias first, then tap by tap: causal-conv1d's order) + SiLU -> xc,
    and this block's partial x_proj (P = dt rank + 2 d_state values). part >= NCB: channels of the z half
    (in_proj z of the token's own row). Scratch row of a token: [xc (DI), z (DI), dt (DI), B (N), C (N),
    NCB x P partial x_proj sums]."""
    pid = tl.program_id(0)
    part = tl.program_id(1)
    b = pid // L
    t = pid % L
    srow = b % STATE_ROWS
    cols = tl.arange(0, DM)
    cc = tl.arange(0, BC)
    jj = tl.arange(0, BK)
    scr = SCR + pid * (3 * DI + 2 * N + NCB * P)
    lnw = tl.load(LN_W + cols).to(tl.float32)
    lnb = tl.load(LN_B + cols).to(tl.float32)
    if part < NCB:
        c0 = part * BC
        w = tl.load(W_IN + (c0 + cc[:, None]) * DM + cols[None, :]).to(tl.float32)  # (BC, DM), x half
        rx = tl.arange(0, BX)
        wx = tl.load(W_XP + rx[:, None] * DI + c0 + cc[None, :], mask=(rx[:, None] < P) & (cc[None, :] < BC),
                     other=0.0).to(tl.float32)  # (BX, BC)
        cw = tl.load(CONV_W + (c0 + cc[:, None]) * K + jj[None, :], mask=(cc[:, None] < BC) & (jj[None, :] < K),
                     other=0.0).to(tl.float32)  # (BC, BK) tap weights
        if HAS_B_IN:
            bx = tl.load(B_IN + c0 + cc).to(tl.float32)
        if HAS_CONV_B:
            acc = tl.load(CONV_B + c0 + cc).to(tl.float32)
        else:
            acc = tl.zeros((BC,), dtype=tl.float32)
        if PDL:
            gdc_wait()
            gdc_launch_dependents()
        rows = t - (K - 1) + jj  # tap j reads input token t - (K - 1) + j
        rmask = (jj < K) & (rows >= 0)
        hr = tl.load(H + (b * L + rows[:, None]) * DM + cols[None, :], mask=rmask[:, None], other=0.0)
        hn = _layer_norm(hr.to(tl.float32), lnw[None, :], lnb[None, :], eps, DM)  # (BK, DM)
        for j in tl.static_range(K):
            row = t - (K - 1) + j
            hj = tl.sum(tl.where(jj[:, None] == j, hn, 0.0), axis=0)  # (DM,) row j (exact: one term)
            xr = tl.sum(w * hj[None, :], axis=1)
            if HAS_B_IN:
                xr += bx
            if ZERO_STATE:
                old = tl.zeros((BC,), dtype=tl.float32)
            else:
                old = tl.load(CONV_S + srow * DI * K + (c0 + cc) * K + (K + row), mask=(cc < BC) & (row < 0),
                              other=0.0)
            src = tl.where(row >= 0, xr, old)
            if WRITE_STATE:
                tl.store(CONV_NEW + b * DI * K + (c0 + cc) * K + j, src, mask=(cc < BC) & (t == L - 1))
            acc += src * tl.sum(tl.where(jj[None, :] == j, cw, 0.0), axis=1)
        xc = acc / (1.0 + tl.exp(-acc))
        tl.store(scr + c0 + cc, xc)
        tl.store(scr + 3 * DI + 2 * N + part * P + rx, tl.sum(wx * xc[None, :], axis=1), mask=rx < P)
    else:
        c0 = (part - NCB) * BC
        w = tl.load(W_IN + (DI + c0 + cc[:, None]) * DM + cols[None, :]).to(tl.float32)  # (BC, DM), z half
        if HAS_B_IN:
            bz = tl.load(B_IN + DI + c0 + cc).to(tl.float32)
        if PDL:
            gdc_wait()
            gdc_launch_dependents()
        ht = _layer_norm(tl.load(H + pid * DM + cols).to(tl.float32), lnw, lnb, eps, DM)
        z = tl.sum(w * ht[None, :], axis=1)
        if HAS_B_IN:
            z += bz
        tl.store(scr + DI + c0 + cc, z)


@triton.jit
def block_dt_kernel(SCR, W_DT, B_DT,
                    DI: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, R: tl.constexpr, BR: tl.constexpr,
                    P: tl.constexpr, NCB: tl.constexpr, BD: tl.constexpr, PDL: tl.constexpr):
    """Program (token, part): the token's x_proj (the channel blocks' partial sums added in block order),
    dt_proj + bias + softplus for channels part*BD.. -> scratch dt; part 0 also writes B and C."""
    pid = tl.program_id(0)
    part = tl.program_id(1)
    dd = part * BD + tl.arange(0, BD)
    rr = tl.arange(0, BR)
    cb = tl.arange(0, NCB)
    wdt = tl.load(W_DT + dd[:, None] * R + rr[None, :], mask=(dd[:, None] < DI) & (rr[None, :] < R),
                  other=0.0).to(tl.float32)  # (BD, BR)
    bdt = tl.load(B_DT + dd).to(tl.float32)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    row = SCR + pid * (3 * DI + 2 * N + NCB * P)
    part_x = row + 3 * DI + 2 * N + cb[:, None] * P  # (NCB, 1) partial x_proj rows
    dtl = tl.sum(tl.load(part_x + rr[None, :], mask=(cb[:, None] < NCB) & (rr[None, :] < R), other=0.0), axis=0)
    dt = tl.sum(wdt * dtl[None, :], axis=1) + bdt
    dt = tl.where(dt <= 20.0, tl.log(tl.exp(dt) + 1.0), dt)  # softplus, as mamba-ssm's Triton kernels
    tl.store(row + 2 * DI + dd, dt)
    if part == 0:
        nb = tl.arange(0, BN)
        m = (cb[:, None] < NCB) & (nb[None, :] < 2 * N)
        tl.store(row + 3 * DI + nb, tl.sum(tl.load(part_x + R + nb[None, :], mask=m, other=0.0), axis=0),
                 mask=nb < 2 * N)  # B, C


@triton.jit
def _out_weights(W_OUT, B_OUT, oo, ch, DI: tl.constexpr, BO: tl.constexpr, HAS_B_OUT: tl.constexpr):
    """out_proj rows ``oo`` (BO, DI) fp32 and their bias (zeros without one)."""
    wo = tl.load(W_OUT + oo[:, None] * DI + ch[None, :]).to(tl.float32)
    if HAS_B_OUT:
        bo = tl.load(B_OUT + oo).to(tl.float32)
    else:
        bo = tl.zeros((BO,), dtype=tl.float32)
    return wo, bo


@triton.jit
def _residual_out(y, wo, bo, H, ADD, OUT, pid, oo, DM: tl.constexpr, HAS_ADD: tl.constexpr):
    """The end of block_out and block_proj: out_proj rows ``oo`` of y (wo: their weights, bo: their bias or
    zeros), + the residual h (+ add) -> OUT."""
    o = tl.sum(wo * y[None, :], axis=1)
    o += bo
    res = tl.load(H + pid * DM + oo).to(tl.float32) + o
    if HAS_ADD:
        res += tl.load(ADD + pid * DM + oo).to(tl.float32)
    tl.store(OUT + pid * DM + oo, res.to(OUT.dtype.element_ty))


@triton.jit
def block_out_kernel(H, ADD, OUT, SSM_S, A_LOG, DP, W_OUT, B_OUT, SCR, SSM_NEW, L, STATE_ROWS,
                     DM: tl.constexpr, DI: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, P: tl.constexpr,
                     NCB: tl.constexpr, BL: tl.constexpr, BO: tl.constexpr,
                     HAS_ADD: tl.constexpr, HAS_B_OUT: tl.constexpr, ZERO_STATE: tl.constexpr,
                     WRITE_STATE: tl.constexpr, PDL: tl.constexpr):
    """Program (token t, part): the selective SSM from the state through tokens 0..t (token by token, fp32,
    the arithmetic of mamba-ssm's selective_state_update), y_t + D skip, SiLU(z) gate, and out_proj outputs
    part*BO.. + residual (+ add); the tokens' scratch rows loaded at once before the scan."""
    pid = tl.program_id(0)
    part = tl.program_id(1)
    b = pid // L
    t = pid % L
    srow = b % STATE_ROWS
    ch = tl.arange(0, DI)
    nn = tl.arange(0, BN)
    ls = tl.arange(0, BL)
    oo = part * BO + tl.arange(0, BO)
    smask = (ch[:, None] < DI) & (nn[None, :] < N)
    a = -tl.exp(tl.load(A_LOG + ch[:, None] * N + nn[None, :], mask=smask, other=0.0).to(tl.float32))  # (DI, BN)
    dsk = tl.load(DP + ch).to(tl.float32)
    wo, bo = _out_weights(W_OUT, B_OUT, oo, ch, DI, BO, HAS_B_OUT)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    S: tl.constexpr = 3 * DI + 2 * N + NCB * P
    rbase = SCR + (b * L + ls[:, None]) * S
    lm = ls[:, None] <= t
    xs = tl.load(rbase + ch[None, :], mask=lm, other=0.0)  # (BL, DI)
    dts = tl.load(rbase + 2 * DI + ch[None, :], mask=lm, other=0.0)
    bs = tl.load(rbase + 3 * DI + nn[None, :], mask=lm & (nn[None, :] < N), other=0.0)  # (BL, BN)
    if ZERO_STATE:
        st = tl.zeros((DI, BN), dtype=tl.float32)
    else:
        st = tl.load(SSM_S + srow * DI * N + ch[:, None] * N + nn[None, :], mask=smask, other=0.0)
    for s in range(BL):
        if s <= t:
            sel = ls[:, None] == s
            x_s = tl.sum(tl.where(sel, xs, 0.0), axis=0)
            dt_s = tl.sum(tl.where(sel, dts, 0.0), axis=0)
            b_s = tl.sum(tl.where(sel, bs, 0.0), axis=0)
            da = tl.exp(a * dt_s[:, None])
            db = b_s[None, :] * dt_s[:, None]
            st = st * da + db * x_s[:, None]
    if WRITE_STATE:
        tl.store(SSM_NEW + b * DI * N + ch[:, None] * N + nn[None, :], st, mask=smask & (t == L - 1) & (part == 0))
    sc = SCR + pid * S
    c_t = tl.load(sc + 3 * DI + N + nn, mask=nn < N, other=0.0)
    x_t = tl.load(sc + ch)
    z_t = tl.load(sc + DI + ch)
    y = tl.sum(st * c_t[None, :], axis=1)
    y += x_t * dsk
    y *= z_t * tl.sigmoid(z_t)
    _residual_out(y, wo, bo, H, ADD, OUT, pid, oo, DM, HAS_ADD)


@triton.jit
def block_scan_kernel(SSM_S, A_LOG, DP, SCR, SSM_NEW, L, STATE_ROWS,
                      DI: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, P: tl.constexpr, NCB: tl.constexpr,
                      BL: tl.constexpr, BS: tl.constexpr, ZERO_STATE: tl.constexpr, WRITE_STATE: tl.constexpr,
                      PDL: tl.constexpr):
    """Split form of block_out, first half. Program (batch row, channel block): the selective SSM of
    channels part*BS.. from the state through all L tokens once (token by token, fp32, block_out's
    arithmetic in block_out's order), y_t + D skip and the SiLU(z) gate, written over the token's dt in its
    scratch row (this program is the only reader of those dt values, and reads each before writing)."""
    b = tl.program_id(0)
    part = tl.program_id(1)
    srow = b % STATE_ROWS
    ch = part * BS + tl.arange(0, BS)
    nn = tl.arange(0, BN)
    smask = (ch[:, None] < DI) & (nn[None, :] < N)
    a = -tl.exp(tl.load(A_LOG + ch[:, None] * N + nn[None, :], mask=smask, other=0.0).to(tl.float32))  # (BS, BN)
    dsk = tl.load(DP + ch).to(tl.float32)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    S: tl.constexpr = 3 * DI + 2 * N + NCB * P
    if ZERO_STATE:
        st = tl.zeros((BS, BN), dtype=tl.float32)
    else:
        st = tl.load(SSM_S + srow * DI * N + ch[:, None] * N + nn[None, :], mask=smask, other=0.0)
    for s in range(BL):  # BL: L rounded up to a power of two (a constexpr bound; L itself is not)
        if s < L:
            row = SCR + (b * L + s) * S
            x_s = tl.load(row + ch)
            z_s = tl.load(row + DI + ch)
            dt_s = tl.load(row + 2 * DI + ch)
            b_s = tl.load(row + 3 * DI + nn, mask=nn < N, other=0.0)
            c_s = tl.load(row + 3 * DI + N + nn, mask=nn < N, other=0.0)
            da = tl.exp(a * dt_s[:, None])
            db = b_s[None, :] * dt_s[:, None]
            st = st * da + db * x_s[:, None]
            y = tl.sum(st * c_s[None, :], axis=1)
            y += x_s * dsk
            y *= z_s * tl.sigmoid(z_s)
            tl.store(row + 2 * DI + ch, y)
    if WRITE_STATE:
        tl.store(SSM_NEW + b * DI * N + ch[:, None] * N + nn[None, :], st, mask=smask)


@triton.jit
def block_proj_kernel(H, ADD, OUT, W_OUT, B_OUT, SCR,
                      DM: tl.constexpr, DI: tl.constexpr, N: tl.constexpr, P: tl.constexpr, NCB: tl.constexpr,
                      BO: tl.constexpr, HAS_ADD: tl.constexpr, HAS_B_OUT: tl.constexpr, PDL: tl.constexpr):
    """Split form of block_out, second half. Program (token, part): out_proj outputs part*BO.. of the
    token's gated y (block_scan_kernel's) + residual (+ add)."""
    pid = tl.program_id(0)
    part = tl.program_id(1)
    ch = tl.arange(0, DI)
    oo = part * BO + tl.arange(0, BO)
    wo, bo = _out_weights(W_OUT, B_OUT, oo, ch, DI, BO, HAS_B_OUT)
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    y = tl.load(SCR + pid * (3 * DI + 2 * N + NCB * P) + 2 * DI + ch)
    _residual_out(y, wo, bo, H, ADD, OUT, pid, oo, DM, HAS_ADD)


@triton.jit
def head_kernel(HL, NF_W, NF_B, W_AO, B_AO, X, NOISE, COEF, LOW, HIGH, W_AI, B_AI, SLOT, ROW0, SEQ,
                t, M, eps,
                J: tl.constexpr, BJ: tl.constexpr, A: tl.constexpr, BA: tl.constexpr, DM: tl.constexpr,
                FINISH: tl.constexpr, ADD_NOISE: tl.constexpr, PREPARE: tl.constexpr):
    pid = tl.program_id(0)
    j = tl.arange(0, BJ)
    a = tl.arange(0, BA)
    d = tl.arange(0, DM)
    jm = j < J
    am = a < A
    xa = pid * J * A + j[:, None] * A + a[None, :]
    xm = jm[:, None] & am[None, :]
    x = tl.load(X + xa, mask=xm, other=0.0)
    if FINISH:  # final LayerNorm of the last J tokens, action_out -> eps, one ancestral step
        hp = HL + pid * M * DM + (M - J + j[:, None]) * DM + d[None, :]
        h = tl.load(hp, mask=jm[:, None], other=0.0).to(tl.float32)
        mean = tl.sum(h, axis=1) / DM
        hc = h - mean[:, None]
        var = tl.sum(hc * hc, axis=1) / DM
        hn = hc * (1.0 / tl.sqrt_rn(var + eps))[:, None] * tl.load(NF_W + d).to(tl.float32)[None, :] \
            + tl.load(NF_B + d).to(tl.float32)[None, :]
        w = tl.load(W_AO + a[:, None] * DM + d[None, :], mask=am[:, None], other=0.0).to(tl.float32)  # (BA, DM)
        e = tl.sum(hn[:, None, :] * w[None, :, :], axis=2)  # (BJ, BA)
        e += tl.load(B_AO + a, mask=am, other=0.0).to(tl.float32)[None, :]
        c = COEF + t * 5
        c_eps = tl.load(c)
        c_div = tl.load(c + 1)
        c_0 = tl.load(c + 2)
        c_t = tl.load(c + 3)
        c_sd = tl.load(c + 4)
        x0 = tl.div_rn(x - c_eps * e, tl.zeros((BJ, BA), dtype=tl.float32) + c_div)  # (div_rn: no broadcast)
        x0 = tl.maximum(tl.minimum(x0, tl.load(HIGH + a, mask=am, other=0.0)[None, :]),
                        tl.load(LOW + a, mask=am, other=0.0)[None, :])
        x = c_0 * x0 + c_t * x
        if ADD_NOISE:
            x = x + c_sd * tl.load(NOISE + xa, mask=xm, other=0.0)
        tl.store(X + xa, x, mask=xm)
    if PREPARE:  # next step's suffix: [row0, action_in(x) + slot]
        wi = tl.load(W_AI + d[None, :] * A + a[:, None], mask=am[:, None], other=0.0).to(tl.float32)  # (BA, DM)
        emb = tl.sum(x[:, :, None] * wi[None, :, :], axis=1)  # (BJ, DM)
        emb += tl.load(B_AI + d).to(tl.float32)[None, :]
        emb += tl.load(SLOT + j[:, None] * DM + d[None, :], mask=jm[:, None], other=0.0).to(tl.float32)
        sbase = SEQ + pid * (J + 1) * DM
        tl.store(sbase + (1 + j[:, None]) * DM + d[None, :], emb.to(SEQ.dtype.element_ty), mask=jm[:, None])
        tl.store(sbase + d, tl.load(ROW0 + d))
