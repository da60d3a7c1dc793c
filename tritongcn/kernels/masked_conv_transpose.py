"""The bit-gated transposed convolution: the input gradient of one ReLU conv layer.

d/dx sum(g * relu(conv2d(x, w, b))) = conv_transpose2d(g * delta, w), with delta the layer's activation bits.
"""

import torch
import torch.nn.functional as F

from .bitmask import unpack_mask
from .torus import conv_output_shape, torus_padding, wrap_pad_adjoint


def conv_input_gradient(g, w, stride, padding, input_shape):
    """conv2d's input gradient (a transposed convolution) fitted to `input_shape`.

    Strided layers by phase decomposition: input rows with the same (row + padding) mod stride meet the
    kernel rows of that phase only, so the stride^2 phases are one stride-1 transposed convolution with
    stride^2 as many output channels (the kernel cut into its phases), then `pixel_shuffle` interleaves
    them. On the CPU this is about 4x faster than oneDNN's strided backward-data for the texture net's
    first layer, whose 3 input channels leave that kernel little to vectorise.
    """
    if stride == 1:
        return torch.nn.grad.conv2d_input(tuple(input_shape), w, g, stride=1, padding=padding)
    k, c, kh, kw = w.shape
    taps_h, taps_w = -(-kh // stride), -(-kw // stride)
    padded = F.pad(w, (0, taps_w * stride - kw, 0, taps_h * stride - kh))
    # Channel c * stride^2 + a * stride + b holds kernel taps (stride * j + a, stride * i + b) of channel c.
    phases = (padded.view(k, c, taps_h, stride, taps_w, stride).permute(0, 1, 3, 5, 2, 4)
              .reshape(k, c * stride * stride, taps_h, taps_w))
    # Row stride * q + a of the shuffled result is input row stride * q + a - padding.
    full = F.pixel_shuffle(F.conv_transpose2d(g, phases), stride)
    h, wd = input_shape[-2:]
    out = full[..., padding:padding + h, padding:padding + wd]
    missing_h, missing_w = h - out.shape[-2], wd - out.shape[-1]
    if missing_h or missing_w:  # rows past the last window get no gradient
        out = F.pad(out, (0, missing_w, 0, missing_h))
    return out.contiguous()


def masked_conv_transpose_torch(g, mask, w, stride=1, padding=0, input_shape=None, periodic=False,
                                g_gated=False, gate_output=None):
    """Reference and CPU path.

    `g` is the gradient arriving at the layer's ReLU output, or None for all ones (the top layer of the
    texture model, whose score is the plain sum of its responses); `g_gated` says it is already zero where
    the layer's bit is off. The result has `input_shape`; with `gate_output`, the bits of the layer below,
    it is zeroed where those are off (the gradient at that layer's pre-activation).
    """
    if input_shape is None:
        raise ValueError("masked_conv_transpose needs input_shape, the shape of the layer's input")
    out_shape = conv_output_shape(input_shape, w.shape, stride, padding, periodic)
    if g is None:
        gated = unpack_mask(mask, out_shape).to(w.dtype)
    else:
        gated = g.to(w.dtype) if g_gated else g.to(w.dtype) * unpack_mask(mask, out_shape)
    if periodic:
        before, after = torus_padding(w.shape[-1], stride)
        n, c, h, wd = input_shape
        padded = (n, c, h + before + after, wd + before + after)
        gx = wrap_pad_adjoint(conv_input_gradient(gated, w, stride, 0, padded), before, after)
    else:
        gx = conv_input_gradient(gated, w, stride, padding, input_shape)
    if gate_output is not None:
        gx *= unpack_mask(gate_output, gx.shape)
    return gx
