"""Convolution + bias + ReLU that also returns the activation pattern as packed bits.

The bits are all the backward pass of the generative ConvNet needs from the forward pass (docs/design.md §1):
B = dF/dI is a top-down deconvolution gated by them, so no float activation is kept between the passes.
"""

import torch
import torch.nn.functional as F

from .bitmask import pack_mask
from .torus import check_torus, torus_padding, wrap_pad


def conv_relu_mask_torch(x, w, b=None, stride=1, padding=0, need_output=True, periodic=False):
    """Reference and CPU path: (relu(conv2d(x, w, b)), packed bits of conv2d(x, w, b) > 0).

    With `need_output=False` the float output is not returned (None): the top layer of the texture
    model needs only its bits. With `periodic=True` the layer is a convolution on the torus (torus.py) and
    `padding` is not used.
    """
    x = x.to(w.dtype)  # the arithmetic is the weights' (the Triton kernel casts as it loads)
    if periodic:
        check_torus(x.shape, w.shape[-1], stride)
        x, padding = wrap_pad(x, *torus_padding(w.shape[-1], stride)), 0
    pre = F.conv2d(x, w, b, stride=stride, padding=padding)
    # `pre > 0` is False for 0 and for NaN; NaN is carried by the float output (relu keeps NaN).
    mask = pack_mask(pre > 0)
    if not need_output:
        return None, mask
    return torch.relu_(pre), mask
