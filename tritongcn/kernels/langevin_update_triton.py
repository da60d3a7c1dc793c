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
def _langevin_update_kernel(x_ptr, grad_ptr, out_ptr, numel, seed, offset, half_step2, inv_sigma2, noise_scale,
                            BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = idx < numel
    x = tl.load(x_ptr + idx, mask=ok, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr + idx, mask=ok, other=0.0).to(tl.float32)
    z = tl.randn(seed, offset + idx)  # the counter is 64-bit because idx is
    out = x - half_step2 * (x * inv_sigma2 - grad) + noise_scale * z
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _randn_kernel(out_ptr, numel, seed, offset, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + idx, tl.randn(seed, offset + idx), mask=idx < numel)


def langevin_update_triton(x, grad_f, step_size, sigma, seed, offset=0, out=None, temperature=1.0):
    """The fused step; `out` may be `x` itself (each element is read before it is written)."""
    if grad_f.shape != x.shape:
        raise ValueError(f"grad_f of shape {tuple(grad_f.shape)} for chains of shape {tuple(x.shape)}")
    if not (x.is_contiguous() and grad_f.is_contiguous()):
        raise ValueError("langevin_update needs contiguous x and grad_f")
    out = torch.empty_like(x) if out is None else out
    numel = x.numel()
    if numel:
        _langevin_update_kernel[(triton.cdiv(numel, BLOCK),)](
            x, grad_f, out, numel, int(seed) & _SEED_BITS, int(offset), 0.5 * step_size * step_size,
            1.0 / (sigma * sigma), float(step_size) * math.sqrt(temperature), BLOCK=BLOCK)
    return out


def randn_triton(shape, seed, offset=0, device="cuda") -> torch.Tensor:
    """The noise `langevin_update_triton` adds: element e is randn(seed, offset + e). For tests and analysis."""
    out = torch.empty(shape, dtype=torch.float32, device=device)
    if out.numel():
        _randn_kernel[(triton.cdiv(out.numel(), BLOCK),)](out, out.numel(), int(seed) & _SEED_BITS,
                                                          int(offset), BLOCK=BLOCK)
    return out

