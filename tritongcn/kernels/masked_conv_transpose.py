"""The bit-gated transposed convolution: the input gradient of one ReLU conv layer.

d/dx sum(g * relu(conv2d(x, w, b))) = conv_transpose2d(g * delta, w), with delta the layer's activation bits.
"""

import torch

from .bitmask import unpack_mask


def conv_output_shape(input_shape, w_shape, stride, padding) -> tuple:
    """(N, K, Ho, Wo) of conv2d over an input of `input_shape` with weights of `w_shape`."""
    n, _, h, wd = input_shape
    k, _, kh, kw = w_shape
    return (n, k, (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1)


def masked_conv_transpose_torch(g, mask, w, stride=1, padding=0, input_shape=None):
    """Reference and CPU path.

    `g` is the gradient arriving at the layer's ReLU output, or None for all ones (the top layer of the
    texture model, whose score is the plain sum of its responses). The result has `input_shape`.
    """
    if input_shape is None:
        raise ValueError("masked_conv_transpose needs input_shape, the shape of the layer's input")
    out_shape = conv_output_shape(input_shape, w.shape, stride, padding)
    gate = unpack_mask(mask, out_shape)
    gated = gate.to(w.dtype) if g is None else g * gate
    # conv2d_input picks the output padding that restores input_shape (strided layers lose remainders).
    return torch.nn.grad.conv2d_input(tuple(input_shape), w, gated, stride=stride, padding=padding)
