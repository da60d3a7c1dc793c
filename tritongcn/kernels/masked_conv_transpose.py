"""The bit-gated transposed convolution: the input gradient of one ReLU conv layer.

d/dx sum(g * relu(conv2d(x, w, b))) = conv_transpose2d(g * delta, w), with delta the layer's activation bits.
"""

import torch

from .bitmask import unpack_mask
from .torus import check_torus, torus_padding, wrap_pad_adjoint


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


def masked_conv_transpose_torch(g, mask, w, stride=1, padding=0, input_shape=None, periodic=False):
    """Reference and CPU path.

    `g` is the gradient arriving at the layer's ReLU output, or None for all ones (the top layer of the
    texture model, whose score is the plain sum of its responses). The result has `input_shape`.
    """
    if input_shape is None:
        raise ValueError("masked_conv_transpose needs input_shape, the shape of the layer's input")
    out_shape = conv_output_shape(input_shape, w.shape, stride, padding, periodic)
    gate = unpack_mask(mask, out_shape)
    gated = gate.to(w.dtype) if g is None else g * gate
    if periodic:
        before, after = torus_padding(w.shape[-1], stride)
        n, c, h, wd = input_shape
        padded = (n, c, h + before + after, wd + before + after)
        return wrap_pad_adjoint(torch.nn.grad.conv2d_input(padded, w, gated, stride=stride), before, after)
    # conv2d_input picks the output padding that restores input_shape (strided layers lose remainders).
    return torch.nn.grad.conv2d_input(tuple(input_shape), w, gated, stride=stride, padding=padding)
