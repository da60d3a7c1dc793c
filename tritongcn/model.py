"""The generative ConvNet: p(I) ∝ exp(f(I)) N(I; 0, sigma^2), with f a ReLU ConvNet (DESIGN.md §1)."""

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import conv_output_shape, conv_relu_mask, masked_conv_transpose


@dataclass(frozen=True)
class LayerSpec:
    out_channels: int  # number of filters
    kernel_size: int  # square kernels, as in the paper
    stride: int = 1
    padding: int = 0  # zero padding on every side

    def __post_init__(self):
        if min(self.out_channels, self.kernel_size, self.stride) < 1 or self.padding < 0:
            raise ValueError(f"a layer needs out_channels, kernel_size, stride >= 1 and padding >= 0: {self}")


# The paper's texture net with the MatConvNet release's padding (frame_config.m, add_bottom_filters.m).
TEXTURE_LAYERS = (
    LayerSpec(100, 15, stride=3, padding=2),
    LayerSpec(64, 5, stride=1, padding=2),
    LayerSpec(30, 3, stride=1, padding=2),
)
BOUNDARIES = ("zero", "valid", "periodic")
# The release initialises weights N(0, 0.01^2) on images in [0, 255], biases at 0.
RELEASE_INIT_STD = 0.01


def torus_padding(spec: LayerSpec) -> tuple:
    """(before, after) circular padding that makes a layer a convolution on the torus.

    k - s pixels in all give exactly size / s outputs and every pixel is seen by the same number of
    filters; wrapping with the layer spec's own padding would leave a seam where the image meets itself.
    """
    total = spec.kernel_size - spec.stride
    if total < 0:
        raise ValueError(f"a layer whose stride exceeds its kernel skips pixels and has no torus form: {spec}")
    return total // 2, total - total // 2


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


class GenerativeConvNet(nn.Module):
    """A ReLU ConvNet score f(I) for the texture model: the sum of all top-layer responses.

    The first `depth` layers are in use (layers are grown one at a time while learning); the rest keep
    their initial weights until they are switched on.

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
                 init_std: float = RELEASE_INIT_STD, generator: torch.Generator | None = None):
        super().__init__()
        if in_channels < 1 or not layers:
            raise ValueError("a GenerativeConvNet needs at least one input channel and one layer")
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
        self.depth = len(self.layers) if depth is None else depth

    @classmethod
    def texture(cls, in_channels: int = 3, depth: int | None = None,
                generator: torch.Generator | None = None) -> "GenerativeConvNet":
        """The paper's texture net: 100 x 15x15 stride 3, 64 x 5x5, 30 x 3x3, release padding and init."""
        return cls(in_channels, TEXTURE_LAYERS, depth, generator=generator)

    @property
    def depth(self) -> int:
        return self._depth

    @depth.setter
    def depth(self, depth: int) -> None:
        if not 1 <= depth <= len(self.layers):
            raise ValueError(f"depth must be between 1 and {len(self.layers)}, got {depth}")
        self._depth = int(depth)

    def config(self) -> dict:
        """What it takes to rebuild this net (weights aside): plain types only, safe to store."""
        return {"in_channels": self.in_channels, "layers": [asdict(l) for l in self.layers],
                "depth": self.depth}

    @classmethod
    def from_config(cls, config: dict) -> "GenerativeConvNet":
        return cls(config["in_channels"], [LayerSpec(**l) for l in config["layers"]], config["depth"])

    def extra_repr(self) -> str:
        return f"depth={self.depth}"

    def active_convs(self):
        return list(self.convs)[: self.depth]

    def receptive_field(self, depth: int | None = None) -> int:
        """Side in pixels of the input window one top-layer unit sees."""
        size, jump = 1, 1
        for spec in self.layers[: depth or self.depth]:
            size += (spec.kernel_size - 1) * jump
            jump *= spec.stride
        return size

    def total_stride(self, depth: int | None = None) -> int:
        """Product of the strides: periodic images need sides that are multiples of it."""
        return math.prod(spec.stride for spec in self.layers[: depth or self.depth])

    def _padding(self, spec: LayerSpec, boundary: str) -> tuple:
        """(circular padding before, after; zero padding) of one layer under `boundary`."""
        if boundary == "zero":
            return 0, 0, spec.padding
        if boundary == "valid":
            return 0, 0, 0
        if boundary == "periodic":
            return (*torus_padding(spec), 0)
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")

    def check_size(self, shape, boundary: str) -> None:
        """Raise ValueError if images of `shape` cannot be scored under `boundary` at this depth."""
        if boundary == "periodic":
            step = self.total_stride()
            if shape[-1] % step or shape[-2] % step:
                raise ValueError(f"periodic images need sides that are multiples of {step}, "
                                 f"got {shape[-2]}x{shape[-1]}")
        elif boundary == "valid" and min(shape[-2:]) < self.receptive_field():
            raise ValueError(f"a {shape[-2]}x{shape[-1]} image has no unit whose window fits inside it "
                             f"(receptive field {self.receptive_field()} px)")

    def output_shape(self, input_shape, boundary: str = "zero") -> tuple:
        """Shape (N, K, Ho, Wo) of the top active layer's response to an input of `input_shape`."""
        shape = tuple(input_shape)
        for spec, conv in zip(self.layers, self.active_convs()):
            before, after, pad = self._padding(spec, boundary)
            padded = shape[:2] + (shape[2] + before + after, shape[3] + before + after)
            shape = conv_output_shape(padded, conv.weight.shape, spec.stride, pad)
        return shape

    def score(self, x: torch.Tensor, boundary: str = "zero") -> torch.Tensor:
        """f(I) per image, shape (N,): differentiable by autograd (used for the weight gradient)."""
        self.check_size(x.shape, boundary)
        h = x
        for spec, conv in zip(self.layers, self.active_convs()):
            before, after, pad = self._padding(spec, boundary)
            h = torch.relu(F.conv2d(wrap_pad(h, before, after), conv.weight, conv.bias, spec.stride, pad))
        return h.sum(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor, boundary: str = "zero") -> torch.Tensor:
        return self.score(x, boundary)

    def energy(self, x: torch.Tensor, sigma: float, boundary: str = "zero") -> torch.Tensor:
        """E(I) = ||I||^2 / (2 sigma^2) - f(I) per image."""
        return x.pow(2).sum(dim=(1, 2, 3)) / (2.0 * sigma * sigma) - self.score(x, boundary)

    @torch.no_grad()
    def grad_input(self, x: torch.Tensor, backend: str = "auto", boundary: str = "zero") -> torch.Tensor:
        """B(I) = df/dI by the bitmask contract: bottom-up bits, then the gated top-down deconvolution.

        Only the packed bits of each layer survive the bottom-up pass (DESIGN.md §1, Theorem 1): B depends
        on I only through its activation pattern.
        """
        self.check_size(x.shape, boundary)
        layers = list(zip(self.layers, self.active_convs()))
        masks, input_shapes = [], []
        h = x
        for i, (spec, conv) in enumerate(layers):
            before, after, pad = self._padding(spec, boundary)
            h = wrap_pad(h, before, after)
            input_shapes.append(h.shape)
            h, mask = conv_relu_mask(h, conv.weight, conv.bias, spec.stride, pad,
                                     need_output=i < len(layers) - 1, backend=backend)
            masks.append(mask)
        g = None  # df/d(top responses) is all ones for the texture score
        for (spec, conv), mask, shape in zip(reversed(layers), reversed(masks), reversed(input_shapes)):
            before, after, pad = self._padding(spec, boundary)
            g = masked_conv_transpose(g, mask, conv.weight, spec.stride, pad, shape, backend=backend)
            g = wrap_pad_adjoint(g, before, after)
        return g
