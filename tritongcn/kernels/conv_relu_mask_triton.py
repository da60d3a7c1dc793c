"""Triton kernel: convolution + bias + ReLU that packs the activation bits as it produces them.

Implicit GEMM (no im2col buffer): rows M are output positions (a tile of rows never crosses from one chain to
the next), columns N are output channels, the reduction runs over (input channel, kernel row, kernel
column). The fp32 accumulator gets the bias in the epilogue; its sign is packed 32 positions of a channel
to an int32 word (the layout of `bitmask.py`) and the float output is written only when the next layer
reads it. A periodic layer (a convolution on the torus, torus.py) wraps its input indices around instead
of reading a padded copy.
"""

import os

import torch
import triton
import triton.language as tl

from .bitmask import mask_shape
from .masked_conv_transpose import conv_output_shape
from .torus import torus_padding

_INTERPRET = bool(os.environ.get("TRITON_INTERPRET"))


def block_configs(interpreted, tuned):
    """Autotuning configs from (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) rows.

    The interpreter would try every config: there only the `interpreted` (BLOCK_M, BLOCK_N, BLOCK_K) one,
    enough to check the arithmetic.
    """
    rows = [interpreted + (4, 1)] if _INTERPRET else tuned
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in rows]


# BLOCK_M is a multiple of 32 so that a tile packs whole mask words. The texture net has 30 to 100 output
# channels and reductions of 576 to 2500 (3x15x15, 100x5x5, 64x3x3).
_CONFIGS = block_configs((64, 32, 32), [
    (128, 32, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4),
    (128, 128, 32, 8, 3), (256, 64, 32, 8, 3), (64, 64, 64, 4, 3),
])


@triton.jit
def _bit_or(a, b):
    return a | b


@triton.autotune(configs=_CONFIGS, key=["N", "P", "K", "RED", "NEED_OUTPUT"])
@triton.jit
def _conv_relu_mask_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, mask_ptr,
    N, C, H, W, K, Ho, Wo, P, RED, stride, pad,
    KH: tl.constexpr, KW: tl.constexpr, PERIODIC: tl.constexpr,
    HAS_BIAS: tl.constexpr, NEED_OUTPUT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Program (chain, tile) covers BLOCK_M consecutive output positions of one chain: a tile starts on a
    # word boundary of every channel's row of words. P = Ho * Wo positions per chain.
    tiles = (P + BLOCK_M - 1) // BLOCK_M
    chain = (tl.program_id(0) // tiles).to(tl.int64)  # int64: thousands of chains overflow 32-bit offsets
    tile = tl.program_id(0) % tiles
    pid_n = tl.program_id(1)
    pos = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = pos < P
    n_ok = offs_n < K

    # Output position (oh, ow) reads the window starting at (oh * stride - pad, ow * stride - pad).
    ih0 = (pos // Wo) * stride - pad
    iw0 = (pos % Wo) * stride - pad
    x_chain = x_ptr + chain * C * H * W

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, RED, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < RED
        # Reduction index k is (input channel, kernel row, kernel column), the order of w's last three axes.
        c = offs_k // (KH * KW)
        r = (offs_k // KW) % KH
        s = offs_k % KW
        ih = ih0[:, None] + r[None, :]
        iw = iw0[:, None] + s[None, :]
        if PERIODIC:  # pad = circular padding before; indices run from -pad to size + after - 1
            ih = (ih + H) % H
            iw = (iw + W) % W
            a_ok = m_ok[:, None] & k_ok[None, :]
        else:
            a_ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(x_chain + c[None, :] * (H * W) + ih * W + iw, mask=a_ok, other=0.0)
        b = tl.load(w_ptr + offs_n[None, :] * RED + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None],
                    other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]

    # Bits: pre-activation > 0 (0 and NaN are inactive). Positions past P give 0 bits (their words' unused
    # high bits), as the torch packer pads them. Word q of channel k holds positions 32 q .. 32 q + 31.
    bit = (tl.arange(0, BLOCK_M) % 32)[:, None]
    bits = ((acc > 0) & m_ok[:, None]).to(tl.int32) << bit
    words = tl.reduce(tl.reshape(bits, (BLOCK_M // 32, 32, BLOCK_N)), 1, _bit_or)
    n_words = (P + 31) // 32
    offs_q = tile * (BLOCK_M // 32) + tl.arange(0, BLOCK_M // 32)
    word_ptrs = mask_ptr + chain * K * n_words + offs_n[None, :] * n_words + offs_q[:, None]
    tl.store(word_ptrs, words, mask=(offs_q < n_words)[:, None] & n_ok[None, :])

    if NEED_OUTPUT:
        # `acc < 0` is False for NaN, so NaN passes through as relu lets it.
        y = tl.where(acc < 0, 0.0, acc)
        y_ptrs = y_ptr + chain * K * P + pos[:, None] + offs_n[None, :] * P
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 products as torch's own convolution on the same GPU computes them (TF32 if it allows)."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and not _INTERPRET:
        return "tf32"
    return "ieee"


def conv_relu_mask_triton(x, w, b=None, stride=1, padding=0, need_output=True, periodic=False):
    """(relu(conv2d(x, w, b)), packed bits of conv2d(x, w, b) > 0), in one Triton kernel."""
    n, c, h, wd = x.shape
    k, c_w, kh, kw = w.shape
    if c_w != c:
        raise ValueError(f"weights for {c_w} input channels applied to an input with {c}")
    _, _, ho, wo = conv_output_shape(x.shape, w.shape, stride, padding, periodic)
    if periodic:
        padding = torus_padding(kw, stride)[0]
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{wd} input with padding {padding}")
    x, w = x.contiguous(), w.contiguous().to(x.dtype)
    mask = torch.empty(mask_shape((n, k, ho, wo)), dtype=torch.int32, device=x.device)
    y = torch.empty((n, k, ho, wo), dtype=x.dtype, device=x.device) if need_output else mask
    bias = b.contiguous() if b is not None else w  # never read without HAS_BIAS

    def grid(meta):
        return n * triton.cdiv(ho * wo, meta["BLOCK_M"]), triton.cdiv(k, meta["BLOCK_N"])

    _conv_relu_mask_kernel[grid](
        x, w, bias, y, mask, n, c, h, wd, k, ho, wo, ho * wo, c * kh * kw, stride, padding,
        KH=kh, KW=kw, PERIODIC=periodic, HAS_BIAS=b is not None, NEED_OUTPUT=need_output, PRECISION=dot_precision(x.dtype))
    return (y if need_output else None), mask
