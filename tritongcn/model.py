"""The generative ConvNet: p(I) ∝ exp(f(I)) N(I; 0, sigma^2), with f a ReLU ConvNet (docs/design.md §1)."""

import contextlib
import math
from dataclasses import asdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import (BOUNDARIES, DEEPER_TEXTURE_LAYERS, OBJECT_LAYERS, TEXTURE_LAYERS, LayerSpec, receptive_field,
                       size_problem, total_stride)
from .gradient import grad_input, kernel_weights
from .kernels import conv_output_shape
from .kernels.torus import torus_padding as kernel_torus_padding
from .kernels.torus import wrap_pad

TOPS = ("sum", "fc")
# The release initialises weights N(0, 0.01^2) on images in [0, 255], biases at 0.
RELEASE_INIT_STD = 0.01


def torus_padding(spec: LayerSpec) -> tuple:
    """(before, after) circular padding that makes a layer a convolution on the torus (kernels.torus)."""
    return kernel_torus_padding(spec.kernel_size, spec.stride)


class GenerativeConvNet(nn.Module):
    """A ReLU ConvNet score f(I). `top="sum"` is the texture model: f is the sum of all top-layer
    responses, for images of any size. `top="fc"` is the object model: f = <W, h> + b, one linear filter
    W covering the whole top map h, which fixes the image size (`image_size`, the side of square images).

    The first `depth` layers are in use (layers are grown one at a time while learning); the rest keep
    their initial weights until they are switched on. The object model keeps one top filter per depth,
    each sized for the map of its layer, so growing a layer switches to a fresh top filter.

    `boundary` says what a layer sees beyond the image's edge (`score`, `energy`, `grad_input`):
    - "zero": the layer specs' zero padding (the release);
    - "valid": no padding, only units whose window lies inside the image: the statistics of the image's
      interior, with nothing made up at the border (used for observed textures);
    - "periodic": every layer is a convolution on the torus (circular padding of k - s pixels,
      `torus_padding`), so the image has no border at all. With zero padding, border pixels are seen by
      fewer filters, the Gaussian reference wins there and samples get a flat frame; on the torus they
      do not, and samples tile seamlessly. Image sides must be multiples of `total_stride()`.
    """

    def __init__(self, in_channels: int, layers: Sequence[LayerSpec], depth: int | None = None,
                 init_std: float = RELEASE_INIT_STD, generator: torch.Generator | None = None,
                 top: str = "sum", image_size: int | None = None, sigma: float = 1.0):
        super().__init__()
        if in_channels < 1 or not layers:
            raise ValueError("a GenerativeConvNet needs at least one input channel and one layer")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive finite number, got {sigma}")
        # The reference Gaussian's standard deviation: p(I) ∝ exp(f(I)) N(I; 0, sigma^2), part of the model.
        self.sigma = float(sigma)
        if top not in TOPS:
            raise ValueError(f"top must be one of {', '.join(TOPS)}, got {top!r}")
        if top == "fc" and not image_size:
            raise ValueError("the object model (top='fc') needs the image_size its top filter covers")
        self.top, self.image_size = top, int(image_size) if top == "fc" else None
        self.in_channels = in_channels
        self.layers = tuple(LayerSpec(**l) if isinstance(l, dict) else l for l in layers)
        self.convs = nn.ModuleList()
        channels = in_channels
        for spec in self.layers:
            conv = nn.Conv2d(channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding)
            nn.init.normal_(conv.weight, 0.0, init_std, generator=generator)
            nn.init.zeros_(conv.bias)
            self.convs.append(conv)
            channels = spec.out_channels
        self.fc_weights, self.fc_biases = nn.ParameterList(), nn.ParameterList()
        if top == "fc":
            shape = (1, in_channels, self.image_size, self.image_size)
            for spec, conv in zip(self.layers, self.convs):
                shape = conv_output_shape(shape, conv.weight.shape, spec.stride, spec.padding)
                if min(shape[-2:]) < 1:
                    raise ValueError(f"{self.image_size} px images leave no map for layer "
                                     f"{len(self.fc_weights) + 1}")
                weight = torch.empty(shape[1:])
                nn.init.normal_(weight, 0.0, init_std, generator=generator)
                self.fc_weights.append(nn.Parameter(weight))
                self.fc_biases.append(nn.Parameter(torch.zeros(())))
        self.depth = len(self.layers) if depth is None else depth

    @classmethod
    def texture(cls, in_channels: int = 3, depth: int | None = None,
                generator: torch.Generator | None = None, sigma: float = 1.0,
                layers: int = len(TEXTURE_LAYERS)) -> "GenerativeConvNet":
        """The paper's texture net: 100 x 15x15 stride 3, 64 x 5x5, 30 x 3x3, release padding and init;
        `layers=4` adds a fourth layer, 30 x 5x5 (geometry.DEEPER_TEXTURE_LAYERS)."""
        if not 1 <= layers <= len(DEEPER_TEXTURE_LAYERS):
            raise ValueError(f"the texture net has 1 to {len(DEEPER_TEXTURE_LAYERS)} layers, asked for {layers}")
        return cls(in_channels, DEEPER_TEXTURE_LAYERS[:layers], depth, generator=generator, sigma=sigma)

    @classmethod
    def object(cls, in_channels: int, image_size: int, depth: int | None = None,
               generator: torch.Generator | None = None, layers: int = len(OBJECT_LAYERS),
               sigma: float = 1.0) -> "GenerativeConvNet":
        """The paper's object net: 100 x 7x7 stride 2, 64 x 5x5, 20 x 3x3 (no padding), then one fully
        connected filter over the whole map of images of `image_size` px. `layers` < 3 builds the first
        ones only, so images too small for the third layer's map can still learn the first two."""
        return cls(in_channels, OBJECT_LAYERS[:layers], depth, generator=generator, top="fc",
                   image_size=image_size, sigma=sigma)

    @property
    def depth(self) -> int:
        return self._depth

    @depth.setter
    def depth(self, depth: int) -> None:
        if not 1 <= depth <= len(self.layers):
            raise ValueError(f"depth must be between 1 and {len(self.layers)}, got {depth}")
        self._depth = int(depth)

    @contextlib.contextmanager
    def at_depth(self, depth: int):
        """The net at another depth for a while (what a run checks at its start must hold at its end)."""
        saved, self.depth = self.depth, depth
        try:
            yield self
        finally:
            self.depth = saved

    def config(self) -> dict:
        """What it takes to rebuild this net (weights aside): plain types only, safe to store."""
        return {"in_channels": self.in_channels, "layers": [asdict(l) for l in self.layers],
                "depth": self.depth, "top": self.top, "image_size": self.image_size, "sigma": self.sigma}

    @classmethod
    def from_config(cls, config: dict, sigma: float = 1.0) -> "GenerativeConvNet":
        """The net `config()` describes. `sigma`: for descriptions written before the net held its own
        (model files whose sigma is in their learning settings only)."""
        return cls(config["in_channels"], [LayerSpec(**l) for l in config["layers"]], config["depth"],
                   top=config.get("top", "sum"), image_size=config.get("image_size"),
                   sigma=config.get("sigma", sigma))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, top={self.top}" + (f", image_size={self.image_size}" if self.image_size else "")

    def active_convs(self):
        return list(self.convs)[: self.depth]

    def active_parameters(self) -> list:
        """The parameters f depends on at this depth: the active layers' and, for the object model, the
        top filter of this depth."""
        return [p for _, p in self.active_named_parameters()]

    def active_named_parameters(self) -> list:
        """`active_parameters()` as (name, parameter) pairs, named as `named_parameters()` names them."""
        pairs = [(f"convs.{i}.{name}", p) for i, conv in enumerate(self.active_convs())
                 for name, p in conv.named_parameters()]
        if self.top == "fc":
            top = self.depth - 1
            pairs += [(f"fc_weights.{top}", self.fc_weights[top]), (f"fc_biases.{top}", self.fc_biases[top])]
        return pairs

    def top_score(self, top: torch.Tensor) -> torch.Tensor:
        """f per image from the top active layer's ReLU output."""
        if self.top == "fc":
            return (top * self.fc_weights[self.depth - 1]).sum(dim=(1, 2, 3)) + self.fc_biases[self.depth - 1]
        return top.sum(dim=(1, 2, 3))

    def receptive_field(self, depth: int | None = None) -> int:
        """Side in pixels of the input window one top-layer unit sees (at `depth`, default the current)."""
        return receptive_field(self.layers[: depth or self.depth])

    def total_stride(self, depth: int | None = None) -> int:
        """Product of the strides: periodic images need sides that are multiples of it."""
        return total_stride(self.layers[: depth or self.depth])

    def padding_of(self, spec: LayerSpec, boundary: str) -> tuple:
        """(periodic, zero padding) of one layer under `boundary`."""
        if boundary == "zero":
            return False, spec.padding
        if boundary == "valid":
            return False, 0
        if boundary == "periodic":
            torus_padding(spec)  # refuses layers that have no torus form
            return True, 0
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")

    def check_size(self, shape, boundary: str) -> None:
        """Raise ValueError if images of `shape` cannot be scored under `boundary` at this depth."""
        problem = size_problem(shape[-2], shape[-1], self.layers[: self.depth], boundary)
        if problem:
            raise ValueError(problem)
        if self.top == "fc":
            fc_shape = tuple(self.fc_weights[self.depth - 1].shape)
            if boundary == "periodic" or tuple(self.layer_shapes(shape, boundary)[-1][1:]) != fc_shape:
                raise ValueError(f"the object model's top filter covers the map of {self.image_size}x"
                                 f"{self.image_size} images: got {shape[-2]}x{shape[-1]} images with "
                                 f"boundary {boundary!r}")

    def layer_shapes(self, input_shape, boundary: str = "zero") -> list:
        """Output shape (N, K, Ho, Wo) of each active layer for an input of `input_shape`."""
        shapes, shape = [], tuple(input_shape)
        for spec, conv in zip(self.layers, self.active_convs()):
            periodic, pad = self.padding_of(spec, boundary)
            shape = conv_output_shape(shape, conv.weight.shape, spec.stride, pad, periodic)
            shapes.append(shape)
        return shapes

    def known_positions(self, known: torch.Tensor) -> list:
        """Per active layer, (N, 1, h, w) bool: its positions, under boundary "valid", whose whole receptive
        window lies in the known pixels of `known` (N, 1, H, W) bool. A unit whose window holds an unknown
        pixel says nothing about the image: learning from a photo with a hole counts the others only."""
        unknown, maps = (~known.bool()).float(), []
        for spec in self.layers[: self.depth]:  # a window holds an unknown pixel iff its max is 1
            unknown = F.max_pool2d(unknown, spec.kernel_size, spec.stride)
            maps.append(unknown == 0)
        return maps

    def output_shape(self, input_shape, boundary: str = "zero") -> tuple:
        """Shape (N, K, Ho, Wo) of the top active layer's response to an input of `input_shape`."""
        return self.layer_shapes(input_shape, boundary)[-1]

    def relu_responses(self, x: torch.Tensor, boundary: str = "zero"):
        """Each active layer's ReLU output for images x, bottom-up, with plain torch ops (autograd-able)."""
        self.check_size(x.shape, boundary)
        h = x
        for spec, conv in zip(self.layers, self.active_convs()):
            periodic, pad = self.padding_of(spec, boundary)
            if periodic:
                h = wrap_pad(h, *torus_padding(spec))
            h = torch.relu(F.conv2d(h, conv.weight, conv.bias, spec.stride, pad))
            yield h

    def score(self, x: torch.Tensor, boundary: str = "zero") -> torch.Tensor:
        """f(I) per image, shape (N,): differentiable by autograd (used for the weight gradient), so it
        keeps a graph unless called under torch.no_grad()."""
        for top in self.relu_responses(x, boundary):  # keep only the current layer's output alive
            pass
        return self.top_score(top)

    @torch.no_grad()
    def active_fraction(self, x: torch.Tensor, boundary: str = "zero") -> torch.Tensor:
        """Share of ReLU units (all active layers together) that are on, per image: where in the model's
        piecewise-Gaussian partition the image sits, in one number."""
        on = total = 0
        for h in self.relu_responses(x, boundary):
            on = on + (h > 0).flatten(1).sum(dim=1)
            total += h[0].numel()
        return on.float() / total

    def forward(self, x: torch.Tensor, boundary: str = "zero") -> torch.Tensor:
        return self.score(x, boundary)

    def energy(self, x: torch.Tensor, sigma: float | None = None, boundary: str = "zero") -> torch.Tensor:
        """E(I) = ||I||^2 / (2 sigma^2) - f(I) per image (sigma: the model's own unless given)."""
        sigma = self.sigma if sigma is None else sigma
        return x.pow(2).sum(dim=(1, 2, 3)) / (2.0 * sigma * sigma) - self.score(x, boundary)

    def kernel_weights(self, dtype: torch.dtype, align: int = 1) -> list:
        """(weight, bias) of each active layer as the kernels take them (`gradient.kernel_weights`)."""
        return kernel_weights(self, dtype, align)

    @torch.no_grad()
    def grad_input(self, x: torch.Tensor, backend: str = "auto", boundary: str = "zero",
                   precision: str = "float32", record=None) -> torch.Tensor:
        """B(I) = df/dI by the bitmask contract: bottom-up bits, then the gated top-down deconvolution
        (`gradient.grad_input`)."""
        return grad_input(self, x, backend, boundary, precision, record)
