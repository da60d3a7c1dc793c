"""Triton kernel: the bit-gated transposed convolution (input gradient of one ReLU conv layer).

    gx[n, c, ih, iw] = sum over k, r, s of  g[n, k, oh, ow] * bit[n, k, oh, ow] * w[k, c, r, s]
                       where ih = oh * stride - pad + r and iw = ow * stride - pad + s

Strided layers by phase decomposition: input rows with the same (ih + pad) mod stride meet the same kernel
rows (r = that phase + stride * j), so each phase is a dense implicit GEMM with no inserted zeros. The
gradient g is gated by the bits as it is loaded; with g=None (all ones, the top layer of the texture model)
the kernel reads bits only. A periodic layer wraps its indices around the torus (torus.py); sides are
multiples of the stride there, so wrapping keeps every row in its phase.
"""

import torch
import triton
import triton.language as tl

from .bitmask import mask_shape
from .conv_relu_mask_triton import block_configs, dot_precision
from .masked_conv_transpose import conv_output_shape
from .torus import torus_padding


# Columns are input channels (3 for the first layer of an RGB net, 64 to 100 above it).
_CONFIGS = block_configs((64, 16, 32), [
    (128, 16, 64, 4, 4), (128, 32, 32, 4, 4), (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4), (128, 128, 32, 8, 3), (256, 64, 32, 8, 3),
])


@triton.autotune(configs=_CONFIGS, key=["C", "K", "H", "W", "stride", "HAS_G"])
@triton.jit
def _masked_conv_transpose_kernel(
    g_ptr, mask_ptr, w_ptr, gx_ptr,
    N, C, H, W, K, Ho, Wo, stride, pad,
    KH: tl.constexpr, KW: tl.constexpr, PERIODIC: tl.constexpr, HAS_G: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    phase = tl.program_id(2)
    # This program's phase (pr, ps): the input rows ih with (ih + pad) % stride == pr, the first being ih_first.
    pr = phase // stride
    ps = phase % stride
    ih_first = ((pr - pad) % stride + stride) % stride  # Triton's % truncates like C: keep it non-negative
    iw_first = ((ps - pad) % stride + stride) % stride
    hp = (H - ih_first + stride - 1) // stride  # rows of this phase (never negative: ih_first < stride)
    wp = (W - iw_first + stride - 1) // stride
    taps_r = (KH + stride - 1) // stride  # kernel rows pr, pr + stride, ... (some past KH: masked)
    taps_s = (KW + stride - 1) // stride
    red = K * taps_r * taps_s

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < N * hp * wp
    n_ok = offs_n < C
    chain = (offs_m // (hp * wp)).to(tl.int64)
    ih = ih_first + ((offs_m // wp) % hp) * stride
    iw = iw_first + (offs_m % wp) * stride
    n_words = (Ho * Wo + 31) // 32  # per output channel (the layout of bitmask.py)
    g_rows = g_ptr + chain * K * Ho * Wo
    mask_rows = mask_ptr + chain * K * n_words

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, red, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < red
        # Reduction index is (tap row j, tap column i, output channel k) with k fastest: a tile's columns
        # are consecutive channels of the same taps, like the rows of w it multiplies.
        k = offs_k % K
        tap = offs_k // K
        r = pr + (tap // taps_s) * stride
        s = ps + (tap % taps_s) * stride
        th = ih[:, None] + pad - r[None, :]  # = oh * stride, a multiple of stride by the phase
        tw = iw[:, None] + pad - s[None, :]
        if PERIODIC:  # the output row that reads ih through the wrap: Ho * stride == H
            th = (th + H) % H
            tw = (tw + W) % W
        oh = th // stride
        ow = tw // stride
        a_ok = (m_ok[:, None] & (k_ok & (r < KH) & (s < KW))[None, :]
                & (th >= 0) & (oh < Ho) & (tw >= 0) & (ow < Wo))
        out_pos = oh * Wo + ow
        word = tl.load(mask_rows[:, None] + k[None, :] * n_words + out_pos // 32, mask=a_ok, other=0)
        gate = (word >> (out_pos & 31)) & 1  # & 31 keeps masked lanes' shift counts in range
        if HAS_G:
            g = tl.load(g_rows[:, None] + k[None, :] * (Ho * Wo) + out_pos, mask=a_ok, other=0.0)
            a = tl.where(gate != 0, g, 0.0)
        else:
            a = gate.to(tl.float32)
        b = tl.load(w_ptr + k[:, None] * (C * KH * KW) + offs_n[None, :] * (KH * KW)
                    + (r * KW + s)[:, None],
                    mask=(k_ok & (r < KH) & (s < KW))[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)

    gx_ptrs = (gx_ptr + (chain * C * H * W + ih * W + iw)[:, None] + offs_n[None, :] * (H * W))
    tl.store(gx_ptrs, acc.to(gx_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def masked_conv_transpose_triton(g, mask, w, stride=1, padding=0, input_shape=None, periodic=False):
    """conv_transpose2d(g * bits, w) fitted to `input_shape`, in one Triton kernel launch."""
    if input_shape is None:
        raise ValueError("masked_conv_transpose needs input_shape, the shape of the layer's input")
    n, c, h, wd = (int(s) for s in input_shape)
    k, c_w, kh, kw = w.shape
    if c_w != c:
        raise ValueError(f"weights for {c_w} input channels, but input_shape has {c}")
    out_shape = conv_output_shape(input_shape, w.shape, stride, padding, periodic)
    if periodic:
        padding = torus_padding(kw, stride)[0]
    if tuple(mask.shape) != mask_shape(out_shape) or mask.dtype != torch.int32:
        raise ValueError(f"mask of dtype {mask.dtype} and shape {tuple(mask.shape)} does not hold the bits "
                         f"of a {out_shape} layer output")
    if g is not None and tuple(g.shape) != out_shape:
        raise ValueError(f"gradient of shape {tuple(g.shape)} for a layer output of shape {out_shape}")
    w = w.contiguous()
    dtype = g.dtype if g is not None else w.dtype
    gx = torch.empty((n, c, h, wd), dtype=dtype, device=w.device)
    rows = n * triton.cdiv(h, stride) * triton.cdiv(wd, stride)  # the largest phase

    def grid(meta):
        return triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(c, meta["BLOCK_N"]), stride * stride

    _masked_conv_transpose_kernel[grid](
        g.contiguous() if g is not None else mask, mask.contiguous(), w.to(dtype), gx,
        n, c, h, wd, k, out_shape[2], out_shape[3], stride, padding,
        KH=kh, KW=kw, PERIODIC=periodic, HAS_G=g is not None, PRECISION=dot_precision(dtype))
    return gx
