"""The kernel contract of docs/design.md §3, dispatched by backend.

`backend="torch"` is the reference and the CPU path. `backend="triton"` runs the Triton kernels: on CUDA
tensors, or on the CPU under `TRITON_INTERPRET=1` (slow; for tests). `backend="auto"` picks triton for
CUDA tensors when triton is installed, torch otherwise. The Triton modules are imported only when used,
so the package works where triton is not installed.
"""

import importlib.util

import torch

from .bitmask import mask_shape, pack_mask, unpack_mask
from .conv_relu_mask import conv_relu_mask_torch
from .langevin_update import langevin_update_torch
from .launch import interpreting
from .masked_conv_transpose import masked_conv_transpose_torch
from .torus import conv_output_shape

BACKENDS = ("auto", "torch", "triton")

__all__ = ["BACKENDS", "channel_alignment", "conv_relu_mask", "masked_conv_transpose", "langevin_update",
           "unpack_mask", "pack_mask", "mask_shape", "conv_output_shape", "resolve_backend", "triton_available"]


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, device=None) -> str:
    """The concrete backend ("torch" or "triton") that `backend` means for tensors on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    device = torch.device(device if device is not None else "cpu")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend 'triton' needs the triton package (pip install triton, or the "
                             "tritongcn[triton] extra; Linux only)")
        if device.type != "cuda" and not interpreting():
            raise ValueError(f"backend 'triton' runs on CUDA tensors, not {device.type}; on the CPU it needs "
                             "TRITON_INTERPRET=1 (slow, for tests): use backend 'torch' or 'auto' there")
    return backend


def channel_alignment(backend: str, device) -> int:
    """What the kernels want channel counts rounded up to: 16 for the Triton kernels on a GPU (each pixel's
    channels then start on a 16-element boundary, so loads along them are wide vectors), 1 elsewhere."""
    device = torch.device(device)
    return 16 if device.type == "cuda" and resolve_backend(backend, device) == "triton" else 1


def conv_relu_mask(x, w, b=None, stride=1, padding=0, need_output=True, periodic=False, backend="auto"):
    """(relu(conv2d(x, w, b)), packed bits of the pre-activation > 0); output None if not needed.

    `periodic=True` makes the layer a convolution on the torus (torus.py) instead of zero padding.
    """
    if resolve_backend(backend, x.device) == "triton":
        from .conv_relu_mask_triton import conv_relu_mask_triton
        return conv_relu_mask_triton(x, w, b, stride, padding, need_output, periodic)
    return conv_relu_mask_torch(x, w, b, stride, padding, need_output, periodic)


def masked_conv_transpose(g, mask, w, stride=1, padding=0, input_shape=None, periodic=False, backend="auto",
                          g_gated=False, gate_output=None):
    """Input gradient of sum(g * relu(conv2d(x, w, b))) from the layer's bits; g=None means all ones.

    `g_gated=True` promises g is already zero where the layer's bits are off. `gate_output`, the bits of
    the layer below, zeroes the result where they are off: the gradient at that layer's pre-activation,
    gated where it is produced (once per element) rather than where it is read (once per element and tap).
    """
    if resolve_backend(backend, w.device) == "triton":
        from .masked_conv_transpose_triton import masked_conv_transpose_triton
        return masked_conv_transpose_triton(g, mask, w, stride, padding, input_shape, periodic, g_gated,
                                            gate_output)
    return masked_conv_transpose_torch(g, mask, w, stride, padding, input_shape, periodic, g_gated, gate_output)


def langevin_update(x, grad_f, step_size, sigma, seed, offset=0, out=None, backend="auto", temperature=1.0):
    """x - step_size^2/2 (x / sigma^2 - grad_f) + step_size sqrt(temperature) Z, with Z drawn from (seed,
    offset + element): Langevin dynamics of p(x)^(1 / temperature), 1 being p itself.

    The result goes to `out` when given (it may be `x`: the chains advance in place), else to a new tensor.
    `offset` may be a one-element int64 tensor on x's device, read by the Triton kernel when the step runs
    (the counter a CUDA graph of steps advances, `tritongcn.sampler`; the torch backend reads it on the
    host); the noise is that of the int it holds.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if resolve_backend(backend, x.device) == "triton":
        from .langevin_update_triton import langevin_update_triton
        return langevin_update_triton(x, grad_f, step_size, sigma, seed, offset, out, temperature)
    return langevin_update_torch(x, grad_f, step_size, sigma, seed, offset, out, temperature)
