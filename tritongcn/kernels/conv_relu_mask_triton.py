"""Triton kernel: convolution + bias + ReLU that packs the activation bits as it produces them.

Implicit GEMM (no im2col buffer): rows M are output positions of one chain (a tile never crosses from one
chain to the next, and starts on a mask word), columns N are output channels (one block covers a layer's
channels, so each input tile is gathered once), the reduction runs over the kernel taps and input channels.
The layer's geometry (channels, kernel, stride, padding, torus) is compile-time: a tap's row offsets and
bounds are one vector per tap, and each gathered element costs one add. Two walks of the reduction, one
loop each so that Triton can pipeline the loads:

- taps: one (kernel row, kernel column) at a time and, inside it, a block of input channels. With the
  input channels last in memory (the kernels write their activations so), the loads run along contiguous
  channels;
- rows (the RGB input, too few channels for a dot per tap): one kernel row at a time, (channel, column)
  pairs together.

The fp32 accumulator gets the bias in the epilogue; its sign is packed 32 positions of a channel to an
int32 word (the layout of `bitmask.py`) and the float output is written only when the next layer reads it.
A periodic layer (a convolution on the torus, torus.py) wraps its indices around instead of reading a
padded copy: a kernel at most one side plus a stride wide wraps at most once, so one compare-and-add does.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .bitmask import mask_shape
from .launch import (LAYOUTS, ROW_BLOCK, ROWS_BELOW_CHANNELS, activation_format, channel_block, dot_precision,
                     gemm_blocks, strides4)
from .torus import conv_output_shape, torus_padding


@triton.jit
def _bit_or(a, b):
    return a | b


@triton.jit
def wrap(i, size):
    """i mod size for i in [-size, 2 size): the torus index, without a division."""
    i = tl.where(i < 0, i + size, i)
    return tl.where(i >= size, i - size, i)


@triton.jit
def wrap_or_bound(row, col, H, W, ok, PERIODIC: tl.constexpr):
    """(row, col, ok) of a read: on the torus the indices wrapped around an H x W image; with zero padding
    `ok` narrowed to the indices inside it (the padding reads as zeros). Every kernel's boundary rule."""
    if PERIODIC:
        row = wrap(row, H)
        col = wrap(col, W)
    else:
        ok = ok & (row >= 0) & (row < H) & (col >= 0) & (col < W)
    return row, col, ok


@triton.jit
def _conv_relu_mask_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, mask_ptr,
    H, W, Ho, Wo,
    sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w,
    C: tl.constexpr, K: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr,
    PAD: tl.constexpr, PERIODIC: tl.constexpr, ROWS: tl.constexpr, CHUNKS: tl.constexpr,
    HAS_BIAS: tl.constexpr, NEED_OUTPUT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    P = Ho * Wo
    tiles = tl.cdiv(P, BLOCK_M)
    chain = (tl.program_id(0) // tiles).to(tl.int64)  # int64: thousands of chains overflow 32-bit offsets
    tile = tl.program_id(0) % tiles
    pos = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = pos < P
    n_ok = offs_n < K
    oh = pos // Wo
    ow = pos % Wo
    # Output position (oh, ow) reads the window starting at (oh * STRIDE - PAD, ow * STRIDE - PAD).
    ih0 = oh * STRIDE - PAD
    iw0 = ow * STRIDE - PAD
    x_chain = x_ptr + chain * sx_n
    w_dtype = w_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if ROWS:
        # Weights laid out (K, KH, C, KW): row r's reduction index j = c * KW + s is contiguous; CHUNKS
        # blocks of BLOCK_K cover it.
        for it in range(KH * CHUNKS):
            r = it // CHUNKS
            j = (it % CHUNKS) * BLOCK_K + tl.arange(0, BLOCK_K)
            j_ok = j < C * KW
            c = j // KW  # a vector of BLOCK_K, once per iteration: KW is a constant
            s = j % KW
            ih, iw, ok = wrap_or_bound((ih0 + r)[:, None], iw0[:, None] + s[None, :], H, W,
                                       m_ok[:, None] & j_ok[None, :], PERIODIC)
            a = tl.load(x_chain + ih * sx_h + iw * sx_w + (c * sx_c)[None, :], mask=ok, other=0.0)
            b = tl.load(w_ptr + offs_n[None, :] * (KH * C * KW) + (r * (C * KW) + j)[:, None],
                        mask=j_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a.to(w_dtype), b, acc, input_precision=PRECISION)
    else:
        # Weights laid out (K, KH, KW, C): tap t's channels are contiguous; CHUNKS blocks of BLOCK_K cover them.
        offs_c = tl.arange(0, BLOCK_K)
        for it in range(KH * KW * CHUNKS):
            tap = it // CHUNKS
            c = (it % CHUNKS) * BLOCK_K + offs_c
            c_ok = c < C
            ih, iw, tap_ok = wrap_or_bound(ih0 + tap // KW, iw0 + tap % KW, H, W, m_ok, PERIODIC)
            a = tl.load(x_chain + (ih * sx_h + iw * sx_w)[:, None] + (c * sx_c)[None, :],
                        mask=tap_ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(w_ptr + offs_n[None, :] * (KH * KW * C) + (tap * C + c)[:, None],
                        mask=c_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a.to(w_dtype), b, acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]

    # Bits: pre-activation > 0 (0 and NaN are inactive). Positions past P give 0 bits (their words' unused
    # high bits), as the torch packer pads them. Word q of channel k holds positions 32 q .. 32 q + 31.
    bit = (tl.arange(0, BLOCK_M) % 32)[:, None]
    bits = ((acc > 0) & m_ok[:, None]).to(tl.int32) << bit
    words = tl.reduce(tl.reshape(bits, (BLOCK_M // 32, 32, BLOCK_N)), 1, _bit_or)
    n_words = tl.cdiv(P, 32)
    offs_q = tile * (BLOCK_M // 32) + tl.arange(0, BLOCK_M // 32)
    word_ptrs = mask_ptr + chain * K * n_words + offs_n[None, :] * n_words + offs_q[:, None]
    tl.store(word_ptrs, words, mask=(offs_q < n_words)[:, None] & n_ok[None, :])

    if NEED_OUTPUT:
        # `acc < 0` is False for NaN, so NaN passes through as relu lets it.
        y = tl.where(acc < 0, 0.0, acc)
        y_ptrs = y_ptr + chain * sy_n + (oh * sy_h + ow * sy_w)[:, None] + offs_n[None, :] * sy_c
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


# Both layouts run along the reduction within a filter (a B tile is reduction-major), as both operands of a
# TF32 tensor-core product must.
def _rows_layout(w):
    return w.permute(0, 2, 1, 3).contiguous()  # (K, KH, C, KW)


def _taps_layout(w):
    return w.permute(0, 2, 3, 1).contiguous()  # (K, KH, KW, C)


def space_to_depth(x: torch.Tensor, stride: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, channels, ceil(H / s), ceil(W / s)), channels last: channel c s^2 + a s + b of block (R, Q) is pixel
    (s R + a, s Q + b) of channel c (zero past the image and past C s^2), as F.pixel_unshuffle orders them."""
    n, c, h, w = x.shape
    hs, ws = -(-h // stride), -(-w // stride)
    blocks = F.pad(x, (0, ws * stride - w, 0, hs * stride - h))
    out = torch.zeros((n, hs, ws, channels), dtype=dtype, device=x.device)
    out[..., :c * stride * stride] = F.pixel_unshuffle(blocks, stride).permute(0, 2, 3, 1)
    return out.permute(0, 3, 1, 2)


def _space_to_depth_weights(w, stride, front, channels):
    """Kernel of the same layer over `space_to_depth`'s blocks: `front` zero rows and columns first (so the
    padding becomes a whole number of blocks), then cut into stride x stride phases as input channels."""
    k, c, kh, kw = w.shape
    taps_h, taps_w = -(-(kh + front) // stride), -(-(kw + front) // stride)
    shifted = F.pad(w, (front, taps_w * stride - kw - front, front, taps_h * stride - kh - front))
    phases = shifted.view(k, c, taps_h, stride, taps_w, stride).permute(0, 1, 3, 5, 2, 4)
    phases = phases.reshape(k, c * stride * stride, taps_h, taps_w)
    return F.pad(phases, (0, 0, 0, 0, 0, channels - c * stride * stride))


def conv_relu_mask_triton(x, w, b=None, stride=1, padding=0, need_output=True, periodic=False):
    """(relu(conv2d(x, w, b)), packed bits of conv2d(x, w, b) > 0), in one Triton kernel.

    The arithmetic is w's dtype (x is cast as it is loaded); the output has w's dtype, channels last when
    the layer has enough channels for the next kernel to read along them.
    """
    n, c, h, wd = x.shape
    k, c_w, kh, kw = w.shape
    if c_w != c:
        raise ValueError(f"weights for {c_w} input channels applied to an input with {c}")
    _, _, ho, wo = conv_output_shape(x.shape, w.shape, stride, padding, periodic)
    if periodic:
        padding = torus_padding(kw, stride)[0]
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{wd} input with padding {padding}")
    if stride > 1 and c < ROWS_BELOW_CHANNELS:
        # A strided layer over few channels (the RGB input) runs as a stride-1 layer over s x s blocks of
        # pixels, whose C s^2 phases are channels: loads along 16 or more contiguous channels instead of
        # gathers of single pixels. The padding is shifted to a whole number of blocks first.
        front = -padding % stride
        channels = -(-c * stride * stride // 16) * 16
        w = LAYOUTS.get(w, f"space to depth {stride} {front} {channels}",
                        lambda t: _space_to_depth_weights(t, stride, front, channels))
        x = space_to_depth(x, stride, channels, w.dtype)
        n, c, h, wd = x.shape
        k, _, kh, kw = w.shape
        stride, padding = 1, (padding + front) // stride
    rows = c < ROWS_BELOW_CHANNELS
    w_laid = LAYOUTS.get(w, "conv rows" if rows else "conv taps", _rows_layout if rows else _taps_layout)
    mask = torch.empty(mask_shape((n, k, ho, wo)), dtype=torch.int32, device=x.device)
    if need_output:
        y = torch.empty((n, k, ho, wo), dtype=w.dtype, device=x.device, memory_format=activation_format(k))
    else:
        y = mask  # never written
    bias = b if b is not None else w  # never read without HAS_BIAS
    blocks = gemm_blocks(k, ROW_BLOCK if rows else channel_block(c, w.dtype), w.dtype)
    chunks = triton.cdiv(c * kw if rows else c, blocks["BLOCK_K"])
    grid = (n * triton.cdiv(ho * wo, blocks["BLOCK_M"]), triton.cdiv(k, blocks["BLOCK_N"]))
    y_strides = strides4(y) if need_output else (0, 0, 0, 0)
    _conv_relu_mask_kernel[grid](
        x, w_laid, bias, y, mask, h, wd, ho, wo, *strides4(x), *y_strides,
        C=c, K=k, KH=kh, KW=kw, STRIDE=stride, PAD=padding, PERIODIC=periodic, ROWS=rows, CHUNKS=chunks,
        HAS_BIAS=b is not None, NEED_OUTPUT=need_output, PRECISION=dot_precision(w.dtype), **blocks)
    return (y if need_output else None), mask
