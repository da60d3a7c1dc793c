"""Completion and expansion: the unknown pixels of an image sampled given the known ones.

Because p(I) is explicit, the unknown pixels U of an image given its known pixels K have the density
p(I_U | I_K) ∝ exp(f(I)) N(I; 0, σ²) with I_K held fixed, and Langevin dynamics on I_U alone sample it:
the gradient at the unknown pixels is the model's B(I) there, whatever the known ones do
(`langevin(known=...)`). A hole in a photo is filled that way, and an image grows by making the canvas
around it unknown.

The chains need only the part of the image whose pixels reach the unknown ones through the net: the
unknown pixels' bounding box grown by the receptive field less one on every side. On that work region
every unit whose window touches an unknown pixel sees nothing but image, so the region is sampled on the
torus (no border for the net to see), and where it sticks out of the image the pixels out there are
unknown too, sampled and then thrown away: the image's edge is continued, not padded. `periodic=True`
instead samples the whole image on the torus: what comes out tiles seamlessly.

The model's first-layer filters are zero-mean, so f does not see a region's overall brightness: only its
reference Gaussian holds the level, around the mean colour of the images it learned from. For a fill, that
Gaussian is centred instead on the surroundings' level (`surroundings_level`, the known pixels blurred
into the hole), so a hole in a shaded part of a photo fills at the shade around it.

The samples end with a few noise-free steps (`FINISH_STEPS`) so that the filled pixels carry no residual
Langevin noise, and the known pixels come back exactly as they went in.
"""

from dataclasses import dataclass

import torch

from .chains import ChainBank
from .config import stride_multiple
from .model import GenerativeConvNet

# Noise-free steps at the end of a completion: each closes step_size^2 / (2 sigma^2) of the way to its
# ReLU piece's mode (half of it at the default step of 1), so ten leave no Langevin noise to see.
FINISH_STEPS = 10
# The surroundings' level (`surroundings_level`) is the known pixels blurred by a Gaussian of this many
# receptive fields, so it holds the slow shading the zero-mean first-layer filters cannot see.
LEVEL_BLUR = 0.5
# Far from every known pixel the level falls back to the mean colour: its weight against the blur's.
LEVEL_FALLBACK = 1e-6
# How a model learned for a completion differs from the default recipe (LearnConfig's settings). The fill
# takes its shading from the surroundings' level, so the model needs only the texture: the photo's slope
# of light is flattened out of what it learns. With it, the bundled wood no longer ran away while learning
# around a 64 px hole, and the fills beat OpenCV's by patch_swd and ps_z on every texture and hole of
# bench/README.md.
MODEL_SETTINGS = {"shading": "flatten"}


def surroundings_level(image: torch.Tensor, known: torch.Tensor, mean: torch.Tensor, blur: float) -> torch.Tensor:
    """(C, H, W): the slowly varying level of `image` (C, H, W) around its (H, W) bool `known` pixels,
    continued into the unknown ones: the known pixels blurred by a Gaussian of std `blur` px over the
    blurred mask (a normalized convolution), tending to the colour `mean` (C,) far from every known pixel."""
    radius = _blur_reach(blur)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / blur) ** 2)
    kernel = kernel / kernel.sum()
    weight = known.float()[None, None]
    stacked = torch.cat([image.float()[None] * weight, weight], dim=1)  # (1, C + 1, H, W)
    channels = stacked.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = torch.nn.functional.conv2d(stacked, rows, padding=(radius, 0), groups=channels)
    blurred = torch.nn.functional.conv2d(blurred, cols, padding=(0, radius), groups=channels)[0]
    mean = mean.float().view(-1, 1, 1)
    return (blurred[:-1] + LEVEL_FALLBACK * mean) / (blurred[-1:] + LEVEL_FALLBACK)


def _blur_reach(blur: float) -> int:
    """How far, in px, `surroundings_level`'s Gaussian of std `blur` reaches: three standard deviations."""
    return max(1, int(3 * blur))


@dataclass(frozen=True)
class Region:
    """A rectangle of image coordinates: top-left corner (may lie outside the image) and size."""

    top: int
    left: int
    height: int
    width: int


def work_region(unknown: torch.Tensor, model: GenerativeConvNet) -> Region:
    """The part of an image, (H, W) bool `unknown`, that completing it involves: the unknown pixels'
    bounding box grown by the receptive field less one on each side (every unit whose window touches an
    unknown pixel), its sides rounded up to multiples of the net's total stride for the torus."""
    rows, cols = unknown.any(dim=1).nonzero().flatten(), unknown.any(dim=0).nonzero().flatten()
    if not len(rows):
        raise ValueError("no pixel is unknown: there is nothing to complete")
    reach, stride = model.receptive_field() - 1, model.total_stride()
    top, left = int(rows[0]) - reach, int(cols[0]) - reach
    height = stride_multiple(int(rows[-1]) + reach + 1 - top, stride)
    width = stride_multiple(int(cols[-1]) + reach + 1 - left, stride)
    return Region(top, left, height, width)


def chain_region(unknown: torch.Tensor, model: GenerativeConvNet, periodic: bool, shape) -> Region:
    """The region of an image of `shape` (H, W) that the chains of a completion sample, the one rule: the
    whole image on the torus when `periodic` (sides multiples of the net's stride), else `work_region`."""
    h, w = shape
    if unknown.shape != (h, w):
        raise ValueError(f"a mask of {tuple(unknown.shape)} for an image of {h}x{w}")
    if unknown.all():
        raise ValueError("every pixel is unknown: nothing is left to complete the image from")
    if not periodic:
        return work_region(unknown, model)
    if h % model.total_stride() or w % model.total_stride():
        raise ValueError(f"a periodic completion needs sides that are multiples of {model.total_stride()}, "
                         f"got {h}x{w}")
    if not unknown.any():
        raise ValueError("no pixel is unknown: there is nothing to complete")
    return Region(0, 0, h, w)


def _overlap(region: Region, shape) -> tuple:
    """(slices in the image, slices in the region) of their common part, for an image of `shape` (H, W)."""
    top, left = max(region.top, 0), max(region.left, 0)
    bottom = min(region.top + region.height, shape[0])
    right = min(region.left + region.width, shape[1])
    image = (slice(top, bottom), slice(left, right))
    inside = (slice(top - region.top, bottom - region.top), slice(left - region.left, right - region.left))
    return image, inside


def _region_level(model: GenerativeConvNet, pixels: torch.Tensor, unknown: torch.Tensor, mean: torch.Tensor,
                  region: Region) -> torch.Tensor:
    """(1, C, h, w): the surroundings' level over `region` of the image `pixels` (C, H, W), the mean colour
    where the region lies outside the image.

    The chains are centred on it instead of the mean colour: the model's reference Gaussian then pulls the
    unknown pixels to the shading around them, which the zero-mean first-layer filters do not see (a
    constant level adds nothing to f); centred on the mean colour, a hole in a darker or lighter part of the
    image fills at the image's average brightness. Only the image within the blur's reach of the region
    counts: a small hole in a large photo blurs a crop, not the whole photo (17 s for 12 Mpx on 2 cores)."""
    mean, blur = mean.float().cpu(), LEVEL_BLUR * model.receptive_field()
    reach = _blur_reach(blur)
    grown = Region(region.top - reach, region.left - reach, region.height + 2 * reach, region.width + 2 * reach)
    crop, grown_part = _overlap(grown, pixels.shape[1:])
    level = mean.view(1, -1, 1, 1).repeat(1, 1, grown.height, grown.width)  # outside the image: the mean
    level[(0, slice(None)) + grown_part] = surroundings_level(pixels[(slice(None),) + crop], ~unknown[crop],
                                                             mean, blur)
    return level[:, :, reach:reach + region.height, reach:reach + region.width]


@torch.no_grad()
def complete(model: GenerativeConvNet, image: torch.Tensor, unknown: torch.Tensor, *, mean: torch.Tensor,
             steps: int, step_size: float, chains: int = 1, seed: int = 0, init: str = "spectrum",
             start_kernel: torch.Tensor | None = None, periodic: bool = False, region: Region | None = None,
             finish_steps: int = FINISH_STEPS, progress=None, **bank_options) -> torch.Tensor:
    """`chains` completions (K, C, H, W) in [0, 255] of `image` (C, H, W) in [0, 255], whose pixels are
    unknown where the (H, W) bool `unknown` is set: sampled by `steps` Langevin steps of `step_size` from
    `init` (see tritongcn.starts; "spectrum" needs the model's `start_kernel`) and `finish_steps`
    noise-free ones, each chain with its own noise; the known pixels are returned exactly. `mean` (C,) is
    the colour the model's images were centred on. `periodic=True` samples the whole image on the torus
    (sides multiples of the net's stride), so the result tiles; `region`, `chain_region`'s answer where the
    caller has it already. `progress(chain_steps)` is told of each
    chunk of work; `bank_options` go to ChainBank (memory_budget, backend, device, precision, notify).
    """
    channels, h, w = image.shape
    if channels != model.in_channels:
        raise ValueError(f"a {channels}-channel image cannot be completed by a model of {model.in_channels} "
                         "channels")
    unknown = unknown.bool().cpu()
    region = region or chain_region(unknown, model, periodic, (h, w))
    image_part, region_part = _overlap(region, (h, w))
    pixels = image.float().cpu()
    level = _region_level(model, pixels, unknown, mean, region)
    values = torch.zeros(1, channels, region.height, region.width)
    known = torch.zeros(1, 1, region.height, region.width, dtype=torch.bool)  # outside the image: unknown
    values[(0, slice(None)) + region_part] = pixels[(slice(None),) + image_part]
    values -= level
    known[(0, 0) + region_part] = ~unknown[image_part]
    # No per-channel bounds: the level varies by pixel; the result is clamped to [0, 255] below.
    bank = ChainBank(model, chains, (channels, region.height, region.width), boundary="periodic",
                     step_size=step_size, sigma=model.sigma, seed=seed, init=init, start_kernel=start_kernel,
                     known=(values, known), **bank_options)
    per_chunk = (lambda done: progress(done * steps)) if progress else None
    bank.advance(steps, per_chunk)
    per_chunk = (lambda done: progress(done * finish_steps)) if progress else None
    bank.advance(finish_steps, per_chunk, noise=False)
    filled = (bank.x.cpu() + level)[(slice(None), slice(None)) + region_part]
    out = pixels.expand(chains, -1, -1, -1).clone()
    hole = unknown[image_part].expand_as(filled[:, :1]).expand_as(filled)
    out[(slice(None), slice(None)) + image_part] = torch.where(
        hole, filled.clamp(0, 255), out[(slice(None), slice(None)) + image_part])
    return out


def canvas(image: torch.Tensor, height: int, width: int, at: tuple | None = None) -> tuple:
    """(canvas (C, height, width), unknown (height, width) bool): `image` (C, H, W) placed with its
    top-left corner at `at` = (x, y) (default: centred), everything around it unknown."""
    channels, h, w = image.shape
    if height < h or width < w:
        raise ValueError(f"a {width}x{height} canvas cannot hold the {w}x{h} image")
    x, y = ((width - w) // 2, (height - h) // 2) if at is None else (int(at[0]), int(at[1]))
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"the {w}x{h} image placed at {x},{y} does not fit in the {width}x{height} canvas")
    out = torch.zeros(channels, height, width)
    out[:, y:y + h, x:x + w] = image
    unknown = torch.ones(height, width, dtype=torch.bool)
    unknown[y:y + h, x:x + w] = False
    return out, unknown
