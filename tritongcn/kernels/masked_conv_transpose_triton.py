"""Triton kernel: the bit-gated transposed convolution (input gradient of one ReLU conv layer).

    gx[n, c, ih, iw] = sum over k, r, s of G[n, k, oh, ow] w[k, c, r, s],   G = g * bits (or the bits alone)
                       where ih = oh * S - pad + r and iw = ow * S - pad + s

One stride-1 implicit GEMM over the phase grid, for every stride (the trick of `conv_input_gradient`, the
CPU path): write r = S j + a with a < S. Input row ih = S q + a - pad then receives from output rows
oh = q - j only, so with the kernel cut into its S^2 phases (columns (c, a, b), C S^2 of them, laid out
once per weight update) each grid point q = (qh, qw) is one row of a GEMM whose reduction runs over the
taps (j, i) of a phase and the output channels k, and the epilogue stores column (c, a, b) of row q to
input pixel (S qh + a - pad, S qw + b - pad): a pixel shuffle, with no division per element and no
multiply by the zeros that strided transposed convolutions insert. For a stride-1 layer the grid is the
input itself and there is one phase.

The main loop reads one operand stream, G, gated before it arrives: the kernel of the layer above gates
the gradient it produces by this layer's bits in its epilogue (`gate_output`: one bit per element written
instead of one per element and tap read); with g=None (the top layer of the texture model) the bits are
expanded once into a dense G of zeros and ones. On the torus (torus.py) the grid has Ho x Wo points,
output rows wrap (q - j mod Ho) and so do the stored pixels: each input pixel is one (q, a) exactly once.
"""

import torch
import triton
import triton.language as tl

from .bitmask import mask_shape
from .conv_relu_mask_triton import wrap_or_bound
from .launch import (LAYOUTS, activation_format, channel_block, dot_precision, gemm_blocks, interpreting,
                     next_power_of_2, strides4)
from .torus import conv_output_shape, torus_padding


@triton.jit
def _expand_bits_kernel(mask_ptr, out_ptr, P, s_n, s_k, s_p, K: tl.constexpr,
                        BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[n, k, p] = bit p of channel k of chain n, as 0 or 1 in out's dtype (any strides)."""
    tiles = tl.cdiv(P, BLOCK_P)
    chain = (tl.program_id(0) // tiles).to(tl.int64)
    p = (tl.program_id(0) % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    ok = (p < P)[:, None] & (k < K)[None, :]
    n_words = tl.cdiv(P, 32)
    word = tl.load(mask_ptr + chain * K * n_words + (k * n_words)[None, :] + (p >> 5)[:, None], mask=ok, other=0)
    bit = (word >> (p & 31)[:, None]) & 1
    tl.store(out_ptr + chain * s_n + (p * s_p)[:, None] + (k * s_k)[None, :], bit.to(out_ptr.dtype.element_ty),
             mask=ok)


@triton.jit
def _masked_conv_transpose_kernel(
    g_ptr, w_ptr, gx_ptr, out_mask_ptr,
    H, W, Ho, Wo, Qh, Qw,
    sg_n, sg_k, sg_h, sg_w, sx_n, sx_c, sx_h, sx_w,
    C: tl.constexpr, K: tl.constexpr, S: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    PAD: tl.constexpr, PERIODIC: tl.constexpr, GATE_OUTPUT: tl.constexpr, CHUNKS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    Q = Qh * Qw
    tiles = tl.cdiv(Q, BLOCK_M)
    chain = (tl.program_id(0) // tiles).to(tl.int64)
    tile = tl.program_id(0) % tiles
    q = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    q_ok = q < Q
    qh = q // Qw
    qw = q % Qw
    COLS: tl.constexpr = C * S * S
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < COLS
    g_chain = g_ptr + chain * sg_n
    w_dtype = w_ptr.dtype.element_ty
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Phase weights laid out (COLS, TH, TW, K), zero where S j + a passes the kernel: a B tile runs along
    # the reduction, as both operands of a TF32 tensor-core product must.
    for it in range(TH * TW * CHUNKS):
        tap = it // CHUNKS
        k = (it % CHUNKS) * BLOCK_K + offs_k
        k_ok = k < K
        oh, ow, row_ok = wrap_or_bound(qh - tap // TW, qw - tap % TW, Ho, Wo, q_ok, PERIODIC)
        a = tl.load(g_chain + (oh * sg_h + ow * sg_w)[:, None] + (k * sg_k)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_ptr + offs_n[None, :] * (TH * TW * K) + (tap * K + k)[:, None],
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a.to(w_dtype), b, acc, input_precision=PRECISION)

    # Column (c, a, b) of grid point (qh, qw) is input pixel (S qh + a - PAD, S qw + b - PAD) of channel c.
    c = offs_n // (S * S)
    ih, iw, ok = wrap_or_bound((S * qh - PAD)[:, None] + ((offs_n // S) % S)[None, :],
                               (S * qw - PAD)[:, None] + (offs_n % S)[None, :], H, W,
                               q_ok[:, None] & n_ok[None, :], PERIODIC)
    if GATE_OUTPUT:  # the bits of the layer below, whose ReLU output this gradient is for
        pix = ih * W + iw
        words_in = tl.cdiv(H * W, 32)
        word = tl.load(out_mask_ptr + chain * C * words_in + (c * words_in)[None, :] + (pix >> 5), mask=ok, other=0)
        acc = tl.where(((word >> (pix & 31)) & 1) != 0, acc, 0.0)
    gx_ptrs = gx_ptr + chain * sx_n + ih * sx_h + iw * sx_w + (c * sx_c)[None, :]
    tl.store(gx_ptrs, acc.to(gx_ptr.dtype.element_ty), mask=ok)


def phase_weights(w: torch.Tensor, stride: int) -> torch.Tensor:
    """(C stride^2, taps_h, taps_w, K): column c stride^2 + a stride + b at tap (j, i) is kernel entry
    (stride j + a, stride i + b) of channel c, zero past the kernel (the phases of `conv_input_gradient`)."""
    k, c, kh, kw = w.shape
    taps_h, taps_w = -(-kh // stride), -(-kw // stride)
    padded = torch.nn.functional.pad(w, (0, taps_w * stride - kw, 0, taps_h * stride - kh))
    phases = padded.view(k, c, taps_h, stride, taps_w, stride).permute(1, 3, 5, 2, 4, 0)
    return phases.reshape(c * stride * stride, taps_h, taps_w, k).contiguous()


def expand_bits(mask: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    """The bits of a layer output of `shape` as a dense tensor of zeros and ones (channels last when wide)."""
    n, k, h, w = shape
    out = torch.empty(shape, dtype=dtype, device=mask.device, memory_format=activation_format(k))
    block_p = 32 if interpreting() else 128
    block_k = min(64, next_power_of_2(k))
    grid = (n * triton.cdiv(h * w, block_p), triton.cdiv(k, block_k))
    s_n, s_k, _, s_p = strides4(out)  # position p = row * w + column steps by the column stride in both formats
    _expand_bits_kernel[grid](mask, out, h * w, s_n, s_k, s_p, K=k, BLOCK_P=block_p, BLOCK_K=block_k)
    return out


def masked_conv_transpose_triton(g, mask, w, stride=1, padding=0, input_shape=None, periodic=False,
                                 g_gated=False, gate_output=None):
    """conv_transpose2d(g * bits, w) fitted to `input_shape` (times the bits `gate_output` of the layer
    below, if given), in one Triton kernel launch. `g_gated` says g is zero wherever `mask`'s bit is off.

    The arithmetic is w's dtype; the result has it too, channels last when it has enough channels for
    the next kernel to read along them.
    """
    if input_shape is None:
        raise ValueError("masked_conv_transpose needs input_shape, the shape of the layer's input")
    n, c, h, wd = (int(s) for s in input_shape)
    k, c_w, kh, kw = w.shape
    if c_w != c:
        raise ValueError(f"weights for {c_w} input channels, but input_shape has {c}")
    out_shape = conv_output_shape(input_shape, w.shape, stride, padding, periodic)
    _, _, ho, wo = out_shape
    if periodic:
        padding = torus_padding(kw, stride)[0]
    if tuple(mask.shape) != mask_shape(out_shape) or mask.dtype != torch.int32:
        raise ValueError(f"mask of dtype {mask.dtype} and shape {tuple(mask.shape)} does not hold the bits "
                         f"of a {out_shape} layer output")
    if g is not None and tuple(g.shape) != out_shape:
        raise ValueError(f"gradient of shape {tuple(g.shape)} for a layer output of shape {out_shape}")
    if gate_output is not None and (tuple(gate_output.shape) != mask_shape((n, c, h, wd))
                                    or gate_output.dtype != torch.int32):
        raise ValueError(f"gate_output of dtype {gate_output.dtype} and shape {tuple(gate_output.shape)} does "
                         f"not hold the bits of a {(n, c, h, wd)} layer output")
    # Gated here when it is not yet, so that the kernel's loop reads one stream.
    if g is None:
        g = expand_bits(mask, out_shape, w.dtype)
    elif not g_gated:
        g = g * expand_bits(mask, out_shape, g.dtype)
    taps_h, taps_w = -(-kh // stride), -(-kw // stride)
    if periodic:
        grid_h, grid_w = ho, wo
    else:  # grid rows q with S q - pad < h, and none past the last output row a tap reaches
        grid_h = min(ho + taps_h - 1, -(-(h + padding) // stride))
        grid_w = min(wo + taps_w - 1, -(-(wd + padding) // stride))
    # Input pixels past the grid (past the last window) get no gradient and are not stored: zero them.
    uncovered = not periodic and ((h - 1 + padding) // stride >= grid_h or (wd - 1 + padding) // stride >= grid_w)
    gx = torch.empty((n, c, h, wd), dtype=w.dtype, device=w.device, memory_format=activation_format(c))
    if uncovered:
        gx.zero_()
    w_phases = LAYOUTS.get(w, f"phases {stride}", lambda t: phase_weights(t, stride))
    blocks = gemm_blocks(c * stride * stride, channel_block(k, w.dtype), w.dtype)
    chunks = triton.cdiv(k, blocks["BLOCK_K"])
    columns = c * stride * stride
    grid = (n * triton.cdiv(grid_h * grid_w, blocks["BLOCK_M"]), triton.cdiv(columns, blocks["BLOCK_N"]))
    out_mask = gate_output if gate_output is not None else mask  # never read without GATE_OUTPUT
    _masked_conv_transpose_kernel[grid](
        g, w_phases, gx, out_mask, h, wd, ho, wo, grid_h, grid_w, *strides4(g), *strides4(gx),
        C=c, K=k, S=stride, TH=taps_h, TW=taps_w, PAD=padding, PERIODIC=periodic,
        GATE_OUTPUT=gate_output is not None, CHUNKS=chunks, PRECISION=dot_precision(w.dtype), **blocks)
    return gx
