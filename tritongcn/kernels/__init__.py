"""The kernel contract of DESIGN.md §3, dispatched by backend.

`backend="torch"` is the reference and the CPU path. `backend="triton"` is reserved for the Triton kernels
and refused until they are built; `backend="auto"` is meant to pick the best backend for the tensors'
device and resolves to torch everywhere for now.
"""

from .bitmask import mask_shape, pack_mask, unpack_mask
from .conv_relu_mask import conv_relu_mask_torch
from .langevin_update import langevin_update_torch
from .masked_conv_transpose import conv_output_shape, masked_conv_transpose_torch

BACKENDS = ("auto", "torch", "triton")

__all__ = ["BACKENDS", "conv_relu_mask", "masked_conv_transpose", "langevin_update", "unpack_mask",
           "pack_mask", "mask_shape", "conv_output_shape", "resolve_backend"]


def resolve_backend(backend: str, device=None) -> str:
    """The concrete backend ("torch" or "triton") that `backend` means for tensors on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "torch"
    if backend == "triton":
        raise NotImplementedError("the triton backend is not built yet: use backend='torch' or 'auto'")
    return backend


def conv_relu_mask(x, w, b=None, stride=1, padding=0, need_output=True, backend="auto"):
    """(relu(conv2d(x, w, b)), packed bits of the pre-activation > 0); output None if not needed."""
    resolve_backend(backend, x.device)
    return conv_relu_mask_torch(x, w, b, stride, padding, need_output)


def masked_conv_transpose(g, mask, w, stride=1, padding=0, input_shape=None, backend="auto"):
    """Input gradient of sum(g * relu(conv2d(x, w, b))) from the layer's bits; g=None means all ones."""
    resolve_backend(backend, w.device)
    return masked_conv_transpose_torch(g, mask, w, stride, padding, input_shape)


def langevin_update(x, grad_f, step_size, sigma, seed, offset=0, backend="auto"):
    """x - step_size^2/2 (x / sigma^2 - grad_f) + step_size Z, with Z drawn from (seed, offset + element)."""
    resolve_backend(backend, x.device)
    return langevin_update_torch(x, grad_f, step_size, sigma, seed, offset)
