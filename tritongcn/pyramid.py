"""A multi-scale generative ConvNet: a pyramid of small ReLU nets, coarse to fine.

Scale k is a generative ConvNet of the paper, p_k(I) ∝ exp(f_k(I)) N(I; 0, sigma^2), of the image resized
to that scale's side: 3x3 stride-1 ReLU layers on the torus, so each f_k is piecewise linear, p_k piecewise
Gaussian and its gradient B_k(I) the bitmask-gated deconvolution of the kernels. A sample is drawn coarse
to fine, as learning draws its chains (`learn.pyramid`): the coarsest scale's chains start from
random-phase noise with the training image's spectrum at that scale; each finer scale's start from the
sample of the scale below, upsampled (bicubic, on the torus); every scale runs its own `steps` Langevin
steps. The coarse scales hold the layout that a small receptive field cannot see at the finest one, and
each finer scale draws the detail its coarser one cannot hold.

Images are mean-subtracted, as everywhere in the package; `bounds` keep the chains inside the range of
valid images at every step.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .geometry import LayerSpec, receptive_field
from .model import GenerativeConvNet
from .sampler import langevin

PYRAMID_WIDTHS = (64, 32, 32, 32)  # each scale's 3x3 layers: a receptive field of 9 px
# About He's scale for 3x3 filters over 32 maps. The paper's N(0, 0.01^2) leaves B(I) of these small nets
# near 0, and chains then fall to the mean image (bench/TUNING.md, the pyramid's first runs).
PYRAMID_INIT_STD = 0.08
PYRAMID_STEPS = 15  # Langevin steps per scale, in learning and in sampling alike
UPSAMPLE_PAD = 2  # the bicubic kernel's reach, in pixels of the coarser scale


def scale_sides(side: int, scales: int, coarsest: int) -> list:
    """The sides of `scales` scales in a geometric progression from `coarsest` up to `side`, coarsest first."""
    if scales < 1 or not 0 < coarsest <= side:
        raise ValueError(f"a pyramid needs at least one scale and 0 < coarsest <= side, got {scales} scales "
                         f"from {coarsest} to {side} px")
    if scales == 1:
        return [side]
    ratio = (coarsest / side) ** (1 / (scales - 1))
    sides = [round(side * ratio ** k) for k in reversed(range(scales))]
    if len(set(sides)) < scales:
        raise ValueError(f"{scales} scales from {coarsest} to {side} px would repeat a side: {sides}")
    return sides


def upsample_periodic(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images on the torus resized to `side` x `side`: padded circularly, resized bicubically, cropped back,
    so the result tiles as the input did."""
    scale = side / x.shape[-1]
    big = F.interpolate(F.pad(x, (UPSAMPLE_PAD,) * 4, mode="circular"), scale_factor=scale, mode="bicubic",
                        align_corners=False)
    offset = round(UPSAMPLE_PAD * scale)
    return big[..., offset:offset + side, offset:offset + side]


class PyramidNet(nn.Module):
    """The scales' nets, coarse to fine, and the Langevin dynamics that draws a chain through them.

    `sides` are the scales' sides at the training image's size; a sample of another size scales them all
    (`sides_for`). Each scale runs `steps` Langevin steps of `step_size` with the reference's `sigma`."""

    def __init__(self, in_channels: int, sides, widths=PYRAMID_WIDTHS, steps: int = PYRAMID_STEPS,
                 step_size: float = 1.0, sigma: float = 1.0, init_std: float = PYRAMID_INIT_STD, seed: int = 0):
        super().__init__()
        if steps < 1 or step_size <= 0:
            raise ValueError(f"a pyramid needs steps >= 1 and step_size > 0, got {steps} and {step_size}")
        self.in_channels, self.sides, self.widths = in_channels, tuple(int(s) for s in sides), tuple(widths)
        self.steps, self.step_size, self.sigma = int(steps), float(step_size), float(sigma)
        layers = [LayerSpec(w, 3, 1, 1) for w in self.widths]
        self.nets = nn.ModuleList(
            GenerativeConvNet(in_channels, layers, init_std=init_std, sigma=sigma,
                              generator=torch.Generator().manual_seed(seed * 100 + k))
            for k in range(len(self.sides)))

    def config(self) -> dict:
        """What it takes to rebuild this pyramid (weights aside): plain types only, safe to store."""
        return {"kind": "pyramid", "in_channels": self.in_channels, "sides": list(self.sides),
                "widths": list(self.widths), "steps": self.steps, "step_size": self.step_size, "sigma": self.sigma}

    @classmethod
    def from_config(cls, config: dict) -> "PyramidNet":
        return cls(config["in_channels"], config["sides"], config["widths"], config["steps"], config["step_size"],
                   config["sigma"])

    def sides_for(self, side: int) -> list:
        """The scales' sides for samples of `side` px: the training sides scaled by side / the finest one."""
        return [max(4, round(s * side / self.sides[-1])) for s in self.sides]

    def run(self, k: int, x: torch.Tensor, seed: int, first_step: int = 0, boundary: str = "periodic",
            bounds=None, known=None, precision: str = "auto", backend: str = "auto") -> torch.Tensor:
        """Scale k's Langevin steps from `x` (not modified): on the torus, or without padding on a crop;
        `known` = (values, mask) holds pixels as `langevin` does."""
        return langevin(self.nets[k], x, self.steps, self.step_size, self.sigma, seed=seed, first_step=first_step,
                        boundary=boundary, precision=precision, backend=backend, bounds=bounds, known=known)

    def reach(self) -> int:
        """How far, in pixels, a pixel's energy gradient reaches: the receptive field of a scale's net less 1."""
        return receptive_field(self.nets[0].layers) - 1

    @staticmethod
    def upsampled(x: torch.Tensor, side: int, bounds=None) -> torch.Tensor:
        """Samples of one scale as the start of the next, `side` px, inside `bounds` (low, high) per channel."""
        x = upsample_periodic(x, side)
        if bounds is not None:
            low, high = (torch.as_tensor(b, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for b in bounds)
            x = torch.maximum(torch.minimum(x, high), low)
        return x

    def sample(self, start: torch.Tensor, side: int, seed: int, bounds=None, precision: str = "auto",
               backend: str = "auto", every_scale: bool = False):
        """Chains from `start`, (N, C, s, s) at the coarsest of the scales `sides_for(side)`, through every
        scale, coarse to fine: the (N, C, side, side) samples, or with `every_scale` the list of each
        scale's."""
        sides = self.sides_for(side)
        if start.shape[-2:] != (sides[0], sides[0]):
            raise ValueError(f"samples of {side} px start at {sides[0]} x {sides[0]} px, got {tuple(start.shape)}")
        x, out = start, []
        for k, side in enumerate(sides):
            if k:
                x = self.upsampled(x, side, bounds)
            x = self.run(k, x, seed + 17 * k, bounds=bounds, precision=precision, backend=backend)
            out.append(x)
        return out if every_scale else x
