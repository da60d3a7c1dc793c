"""Convolutions on the torus: circular padding of k - s pixels and its adjoint (the torch path's helpers),
and the output shape rule of a layer on the torus or with zero padding, which both backends share.

A layer with `periodic=True` wraps the image around instead of zero padding it: k - s pixels of circular
padding in all (`torus_padding`) give exactly size / s outputs, every pixel is seen by the same number of
filters, and samples tile seamlessly. The Triton kernels wrap their indices instead of padding a copy.
"""

import torch
import torch.nn.functional as F


def torus_padding(kernel_size: int, stride: int) -> tuple:
    """(before, after) circular padding that makes a layer a convolution on the torus.

    Wrapping with a layer's own zero-padding amount instead would leave a seam where the image meets itself.
    """
    total = kernel_size - stride
    if total < 0:
        raise ValueError(f"a layer whose stride ({stride}) exceeds its kernel ({kernel_size}) skips pixels "
                         "and has no torus form")
    return total // 2, total - total // 2


def check_torus(input_shape, kernel_size: int, stride: int) -> None:
    """Raise ValueError unless a periodic layer fits an input of `input_shape`."""
    h, w = input_shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f"a periodic layer of stride {stride} needs sides that are multiples of it, got {h}x{w}")
    if kernel_size > min(h, w) + stride:
        raise ValueError(f"a periodic {kernel_size}x{kernel_size} layer wraps more than once around {h}x{w}")


def wrap_pad(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Circular padding: the image continues on the opposite side, as on a torus."""
    return F.pad(x, (before, after, before, after), mode="circular") if before or after else x


def wrap_pad_adjoint(g: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """The adjoint of `wrap_pad`: gradient on the padded image folded back onto the image it came from."""
    if not (before or after):
        return g
    h, w = g.shape[-2] - before - after, g.shape[-1] - before - after
    rows = g[..., before:before + h, :].clone()
    if before:
        rows[..., h - before:h, :] += g[..., :before, :]
    if after:
        rows[..., :after, :] += g[..., before + h:, :]
    out = rows[..., before:before + w].clone()
    if before:
        out[..., w - before:w] += rows[..., :before]
    if after:
        out[..., :after] += rows[..., before + w:]
    return out


def conv_output_shape(input_shape, w_shape, stride, padding, periodic=False) -> tuple:
    """(N, K, Ho, Wo) of conv2d over an input of `input_shape` with weights of `w_shape`.

    A periodic layer (a convolution on the torus, see torus.py) has size / stride outputs per side.
    """
    n, _, h, wd = input_shape
    k, _, kh, kw = w_shape
    if periodic:
        check_torus(input_shape, kh, stride)
        return (n, k, h // stride, wd // stride)
    return (n, k, (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1)
