"""B(I) = df/dI, the input gradient of a ReLU generative ConvNet, by the bitmask contract (docs/design.md):
the bottom-up pass keeps only each layer's packed activation bits, and the top-down pass is the
deconvolution gated by them. Never a float activation kept, never an autograd graph."""

import contextlib

import torch
import torch.nn.functional as F

from .geometry import conv_flops
from .kernels import channel_alignment, conv_relu_mask, masked_conv_transpose
from .kernels.launch import LAYOUTS
from .precision import compute_dtype


def kernel_weights(model, dtype: torch.dtype, align: int = 1) -> list:
    """(weight, bias) of each active layer in `dtype` for the kernels, with each layer's filters (and so
    the next layer's input channels) rounded up to a multiple of `align` by zero filters: a zero
    filter's response is 0, its bit off, its gradient 0, so f and B are unchanged. Made once per update
    of the parameters, not once per Langevin step."""
    out, channels = [], model.in_channels
    for conv in model.active_convs():
        k = conv.weight.shape[0]
        padded = -(-k // align) * align
        if (padded, channels) == (k, conv.weight.shape[1]) and conv.weight.dtype == dtype:
            # The same detached tensors until an update (they share the parameters' version counter), so
            # the kernels' own layouts of them are cached too, and a CUDA graph can read them.
            out.append(tuple(LAYOUTS.get(p, "detached", lambda t: t.detach()) for p in (conv.weight, conv.bias)))
        else:
            grow = (0, 0, 0, 0, 0, channels - conv.weight.shape[1], 0, padded - k)
            weight = LAYOUTS.get(conv.weight, f"{dtype} {grow}",
                                 lambda t, g=grow: F.pad(t.detach().to(dtype), g))
            bias = LAYOUTS.get(conv.bias, f"{dtype} {padded}",
                               lambda t, extra=padded - k: F.pad(t.detach().to(dtype), (0, extra)))
            out.append((weight, bias))
        channels = padded
    return out


@torch.no_grad()
def grad_input(model, x: torch.Tensor, backend: str = "auto", boundary: str = "zero", precision: str = "float32",
               record=None) -> torch.Tensor:
    """B(I) = df/dI by the bitmask contract: bottom-up bits, then the gated top-down deconvolution.

    Only the packed bits of each layer survive the bottom-up pass (docs/design.md §1, Theorem 1): B depends
    on I only through its activation pattern. `precision="bfloat16"` runs both passes' convolutions in
    bfloat16 (fp32 accumulation inside the convolution; several times faster on CPUs with AMX or
    AVX512-BF16); B comes back in x's dtype. `record(site, flops)`, if given, is a context manager
    factory wrapped around each kernel call (the profiler's timers).
    """
    record = record or (lambda site, flops=0: contextlib.nullcontext())
    model.check_size(x.shape, boundary)
    # Resolved once by the caller (a bank, a learner), not at every step: "auto" is refused here.
    # "float32" keeps x's own dtype (float64 in the exactness tests); "bfloat16" casts.
    dtype = torch.bfloat16 if compute_dtype(precision) == torch.bfloat16 else x.dtype
    layers = list(zip(model.layers, model.active_convs()))
    weights = kernel_weights(model, dtype, channel_alignment(backend, x.device))
    masks, input_shapes, out_shapes = [], [], model.layer_shapes(x.shape, boundary)
    flops = [conv_flops(x.shape, conv.weight.shape, shape) for (_, conv), shape in zip(layers, out_shapes)]
    h = x  # the first layer computes in the weights' dtype
    for i, ((spec, _), (w, b)) in enumerate(zip(layers, weights)):
        periodic, pad = model.padding_of(spec, boundary)
        input_shapes.append(h.shape)
        with record(f"conv_relu_mask L{i + 1}", flops[i]):
            h, mask = conv_relu_mask(h, w, b, spec.stride, pad, need_output=i < len(layers) - 1,
                                     periodic=periodic, backend=backend)
        masks.append(mask)
    g = None  # df/d(top responses) is all ones for the texture score, the top filter for objects
    if model.top == "fc":
        top = model.fc_weights[model.depth - 1].to(dtype)
        top = F.pad(top, (0, 0, 0, 0, 0, weights[-1][0].shape[0] - top.shape[0]))  # zero filters' zero
        g = top.expand((x.shape[0],) + tuple(top.shape)).contiguous()
    for i in reversed(range(len(layers))):
        (spec, _), (w, _), shape = layers[i], weights[i], input_shapes[i]
        periodic, pad = model.padding_of(spec, boundary)
        with record(f"masked_conv_transpose L{i + 1}", flops[i]):
            # Gated by the layer below's bits as it is produced: the next call reads it as gated.
            g = masked_conv_transpose(g, masks[i], w, spec.stride, pad, shape, periodic=periodic,
                                      backend=backend, g_gated=i < len(layers) - 1,
                                      gate_output=masks[i - 1] if i > 0 else None)
    return g.to(x.dtype)
