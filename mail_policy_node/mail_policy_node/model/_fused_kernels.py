"""The Triton kernels of `fused.py` (imported on first use, so that setting TRITON_INTERPRET=1 before then
runs them in Triton's CPU interpreter). See fused.py for what they compute.

A block is two launches, both with one program per token (B x L programs, a few more for splits), so
that the weights are read by many multiprocessors at once instead of one. Matrix-vector products are
broadcast products reduced with tl.sum (a tree: fp32 rounding no worse than cuBLAS's).
"""

import triton
import triton.language as tl


@triton.jit
def _tap(w, hrow, row, j: tl.constexpr, c0, cc, b, srow, t, L, B_IN, CONV_S, CONV_W, CONV_NEW,
         DI: tl.constexpr, K: tl.constexpr, BC: tl.constexpr, HAS_B_IN: tl.constexpr, ZERO_STATE: tl.constexpr,
         WRITE_STATE: tl.constexpr):
    """Conv tap j of a channel block: in_proj x of input token ``row`` (or the conv state's column before
    the first new token), written to the new conv state for the last token, times the tap weight."""
    xr = tl.sum(w * hrow[None, :], axis=1)
    if HAS_B_IN:
        xr += tl.load(B_IN + c0 + cc).to(tl.float32)
    if ZERO_STATE:
        old = tl.zeros((BC,), dtype=tl.float32)
    else:
        old = tl.load(CONV_S + srow * DI * K + (c0 + cc) * K + (K + row), mask=(cc < BC) & (row < 0), other=0.0)
    src = tl.where(row >= 0, xr, old)
    if WRITE_STATE:
        tl.store(CONV_NEW + b * DI * K + (c0 + cc) * K + j, src, mask=(cc < BC) & (t == L - 1))
    return src * tl.load(CONV_W + (c0 + cc) * K + j).to(tl.float32)


@triton.jit
def block_in_kernel(H, LN_W, LN_B, W_IN, B_IN, CONV_W, CONV_B, CONV_S, W_XP, W_DT, B_DT, SCR, CONV_NEW,
                    L, STATE_ROWS, eps,
                    DM: tl.constexpr, DI: tl.constexpr, N: tl.constexpr, R: tl.constexpr, BR: tl.constexpr,
                    BX: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr,
                    HAS_B_IN: tl.constexpr, HAS_CONV_B: tl.constexpr, ZERO_STATE: tl.constexpr,
                    WRITE_STATE: tl.constexpr):
    """LayerNorm, in_proj, causal conv + SiLU, x_proj and dt_proj of one token (see fused.py), with 2-D
    products only: the tap rows are separate vectors (d_conv <= 4), each
    tap's in_proj row a (BC, DM) product reduced over DM; conv accumulated bias first, then tap by tap
    (causal-conv1d's order)."""
    pid = tl.program_id(0)
    part = tl.program_id(1)
    b = pid // L
    t = pid % L
    srow = b % STATE_ROWS
    cols = tl.arange(0, DM)
    cc = tl.arange(0, BC)
    scr = SCR + pid * (3 * DI + 2 * N)
    jj = tl.arange(0, BK)
    if part == 1:  # one row: the token itself
        rows = t + 0 * jj
        rmask = jj == 0
    else:
        rows = t - (K - 1) + jj  # tap j reads input token t - (K - 1) + j
        rmask = (jj < K) & (rows >= 0)
    hr = tl.load(H + (b * L + rows[:, None]) * DM + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    mean = tl.sum(hr, axis=1) / DM
    hc = hr - mean[:, None]
    var = tl.sum(hc * hc, axis=1) / DM
    hn = hc * (1.0 / tl.sqrt_rn(var + eps))[:, None] * tl.load(LN_W + cols).to(tl.float32)[None, :] \
        + tl.load(LN_B + cols).to(tl.float32)[None, :]
    h0 = tl.sum(tl.where(jj[:, None] == 0, hn, 0.0), axis=0)  # (DM,) rows as vectors (exact: one term)
    if part == 1:
        for c0 in range(0, DI, BC):
            w = tl.load(W_IN + (DI + c0 + cc[:, None]) * DM + cols[None, :]).to(tl.float32)  # (BC, DM)
            z = tl.sum(w * h0[None, :], axis=1)
            if HAS_B_IN:
                z += tl.load(B_IN + DI + c0 + cc).to(tl.float32)
            tl.store(scr + DI + c0 + cc, z)
    else:
        h1 = tl.sum(tl.where(jj[:, None] == 1, hn, 0.0), axis=0)
        h2 = tl.sum(tl.where(jj[:, None] == 2, hn, 0.0), axis=0)
        h3 = tl.sum(tl.where(jj[:, None] == 3, hn, 0.0), axis=0)
        r0 = t - (K - 1)
        rx = tl.arange(0, BX)
        xdbl = tl.zeros((BX,), dtype=tl.float32)
        for c0 in range(0, DI, BC):
            w = tl.load(W_IN + (c0 + cc[:, None]) * DM + cols[None, :]).to(tl.float32)  # (BC, DM), x half
            if HAS_CONV_B:
                acc = tl.load(CONV_B + c0 + cc).to(tl.float32)
            else:
                acc = tl.zeros((BC,), dtype=tl.float32)
            acc += _tap(w, h0, r0, 0, c0, cc, b, srow, t, L, B_IN, CONV_S, CONV_W, CONV_NEW, DI, K, BC, HAS_B_IN,
                        ZERO_STATE, WRITE_STATE)
            acc += _tap(w, h1, r0 + 1, 1, c0, cc, b, srow, t, L, B_IN, CONV_S, CONV_W, CONV_NEW, DI, K, BC,
                        HAS_B_IN, ZERO_STATE, WRITE_STATE)
            if K > 2:
                acc += _tap(w, h2, r0 + 2, 2, c0, cc, b, srow, t, L, B_IN, CONV_S, CONV_W, CONV_NEW, DI, K, BC,
                            HAS_B_IN, ZERO_STATE, WRITE_STATE)
            if K > 3:
                acc += _tap(w, h3, r0 + 3, 3, c0, cc, b, srow, t, L, B_IN, CONV_S, CONV_W, CONV_NEW, DI, K, BC,
                            HAS_B_IN, ZERO_STATE, WRITE_STATE)
            xc = acc / (1.0 + tl.exp(-acc))
            tl.store(scr + c0 + cc, xc)
            wx = tl.load(W_XP + rx[:, None] * DI + c0 + cc[None, :],
                         mask=(rx[:, None] < R + 2 * N) & (cc[None, :] < BC), other=0.0).to(tl.float32)  # (BX, BC)
            xdbl += tl.sum(wx * xc[None, :], axis=1)
        tl.store(scr + 3 * DI + rx - R, xdbl, mask=(rx >= R) & (rx < R + 2 * N))
        rr = tl.arange(0, BR)
        dtl = tl.sum(tl.where(rx[None, :] == rr[:, None], xdbl[None, :], 0.0), axis=1)  # (BR,), zero past R
        for c0 in range(0, DI, BC):
            wd = tl.load(W_DT + (c0 + cc[:, None]) * R + rr[None, :], mask=(rr[None, :] < R) & (cc[:, None] < BC),
                         other=0.0).to(tl.float32)  # (BC, BR)
            dt = tl.sum(wd * dtl[None, :], axis=1) + tl.load(B_DT + c0 + cc).to(tl.float32)
            dt = tl.where(dt <= 20.0, tl.log(tl.exp(dt) + 1.0), dt)  # softplus, as mamba-ssm's Triton kernels
            tl.store(scr + 2 * DI + c0 + cc, dt)


@triton.jit
def block_out_kernel(H, ADD, OUT, SSM_S, A_LOG, DP, W_OUT, B_OUT, SCR, SSM_NEW, L, STATE_ROWS,
                     DM: tl.constexpr, DI: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, BL: tl.constexpr,
                     BO: tl.constexpr, SPLIT: tl.constexpr, HAS_ADD: tl.constexpr, HAS_B_OUT: tl.constexpr,
                     ZERO_STATE: tl.constexpr, WRITE_STATE: tl.constexpr):
    """The selective SSM through the token, skip, gate, out_proj and residual (see fused.py), with the
    tokens' scratch rows loaded at once before the scan (no load latency inside the token loop)."""
    pid = tl.program_id(0)
    part = tl.program_id(1)
    b = pid // L
    t = pid % L
    srow = b % STATE_ROWS
    ch = tl.arange(0, DI)
    nn = tl.arange(0, BN)
    ls = tl.arange(0, BL)
    smask = (ch[:, None] < DI) & (nn[None, :] < N)
    rbase = SCR + (b * L + ls[:, None]) * (3 * DI + 2 * N)
    lm = ls[:, None] <= t
    xs = tl.load(rbase + ch[None, :], mask=lm, other=0.0)  # (BL, DI)
    dts = tl.load(rbase + 2 * DI + ch[None, :], mask=lm, other=0.0)
    bs = tl.load(rbase + 3 * DI + nn[None, :], mask=lm & (nn[None, :] < N), other=0.0)  # (BL, BN)
    a = -tl.exp(tl.load(A_LOG + ch[:, None] * N + nn[None, :], mask=smask, other=0.0).to(tl.float32))
    if ZERO_STATE:
        st = tl.zeros((DI, BN), dtype=tl.float32)
    else:
        st = tl.load(SSM_S + srow * DI * N + ch[:, None] * N + nn[None, :], mask=smask, other=0.0)
    for s in range(0, BL):
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
    sc = SCR + pid * (3 * DI + 2 * N)
    c_t = tl.load(sc + 3 * DI + N + nn, mask=nn < N, other=0.0)
    x_t = tl.load(sc + ch)
    z_t = tl.load(sc + DI + ch)
    y = tl.sum(st * c_t[None, :], axis=1)
    y += x_t * tl.load(DP + ch).to(tl.float32)
    y *= z_t * tl.sigmoid(z_t)
    for o0 in range(0, DM // SPLIT, BO):
        oo = part * (DM // SPLIT) + o0 + tl.arange(0, BO)
        w = tl.load(W_OUT + oo[:, None] * DI + ch[None, :]).to(tl.float32)  # (BO, DI)
        o = tl.sum(w * y[None, :], axis=1)
        if HAS_B_OUT:
            o += tl.load(B_OUT + oo).to(tl.float32)
        res = tl.load(H + pid * DM + oo).to(tl.float32) + o
        if HAS_ADD:
            res += tl.load(ADD + pid * DM + oo).to(tl.float32)
        tl.store(OUT + pid * DM + oo, res.to(OUT.dtype.element_ty))


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
