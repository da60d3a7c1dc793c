"""Triton kernel: one fused Langevin step with the noise drawn in the kernel.

    x <- x - step_size^2 / 2 * (x / sigma^2 - grad_f) + step_size * sqrt(temperature) * Z,
    Z = randn(seed, offset + e)

One read of x and grad_f and one write per element; Z comes from Philox keyed by the seed and the element's
counter (64-bit, so banks of thousands of chains run for millions of steps without reusing noise), and no
noise tensor is ever allocated.
"""

import math

import torch
import triton
import triton.language as tl

BLOCK = 1024
_SEED_BITS = (1 << 63) - 1


@triton.jit
def _langevin_update_kernel(x_ptr, grad_ptr, out_ptr, numel, seed, offset, offset_ptr, half_step2, inv_sigma2,
                            noise_scale, OFFSET_IN_MEMORY: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = idx < numel
    x = tl.load(x_ptr + idx, mask=ok, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr + idx, mask=ok, other=0.0).to(tl.float32)
    if OFFSET_IN_MEMORY:  # a device-side counter: a CUDA graph replays the launch with the counter's new value
        offset = tl.load(offset_ptr)
    z = tl.randn(seed, offset + idx)  # the counter is 64-bit because idx is
    out = x - half_step2 * (x * inv_sigma2 - grad) + noise_scale * z
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _randn_kernel(out_ptr, numel, seed, offset, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + idx, tl.randn(seed, offset + idx), mask=idx < numel)


def langevin_update_triton(x, grad_f, step_size, sigma, seed, offset=0, out=None, temperature=1.0):
    """The fused step; `out` may be `x` itself (each element is read before it is written). `offset` is an
    int, or a one-element int64 tensor on x's device that the kernel reads when it runs (the counter of a
    step recorded in a CUDA graph, `tritongcn.sampler`); both give the same noise for the same value."""
    if grad_f.shape != x.shape:
        raise ValueError(f"grad_f of shape {tuple(grad_f.shape)} for chains of shape {tuple(x.shape)}")
    if not (x.is_contiguous() and grad_f.is_contiguous()):
        raise ValueError("langevin_update needs contiguous x and grad_f")
    in_memory = torch.is_tensor(offset)
    if in_memory and (offset.numel() != 1 or offset.dtype != torch.int64 or offset.device != x.device):
        raise ValueError(f"an offset tensor must hold one int64 on {x.device}, got {offset.numel()} "
                         f"{offset.dtype} on {offset.device}")
    out = torch.empty_like(x) if out is None else out
    numel = x.numel()
    if numel:
        _langevin_update_kernel[(triton.cdiv(numel, BLOCK),)](
            x, grad_f, out, numel, int(seed) & _SEED_BITS, 0 if in_memory else int(offset),
            offset if in_memory else x, 0.5 * step_size * step_size, 1.0 / (sigma * sigma),
            float(step_size) * math.sqrt(temperature), OFFSET_IN_MEMORY=in_memory, BLOCK=BLOCK)
    return out


def randn_triton(shape, seed, offset=0, device="cuda") -> torch.Tensor:
    """The noise `langevin_update_triton` adds: element e is randn(seed, offset + e). For tests and analysis."""
    out = torch.empty(shape, dtype=torch.float32, device=device)
    if out.numel():
        _randn_kernel[(triton.cdiv(out.numel(), BLOCK),)](out, out.numel(), int(seed) & _SEED_BITS,
                                                          int(offset), BLOCK=BLOCK)
    return out

