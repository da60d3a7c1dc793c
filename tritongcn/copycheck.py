"""Whether samples are new pieces of the texture or the training photo shifted: the copy check.

A model whose top units see most of the image can learn to redraw the photo, and a redrawn photo scores
very well on texture statistics. The check cuts patches of a quarter of the photo's side from the samples
and finds, for each, its best match anywhere in the photo by normalised cross-correlation (NCC: 1 for a
piece of the photo, up to its contrast and an offset per channel). The scale to read it against is the same
figure between the photo's two halves, which are two pieces of one texture and not copies of each other:
patches of the left half searched in the right half and the other way round. Samples that are the
texture match the photo about as well as its halves match each other; copies match it far better.

A sample patch counts as a copy when its best match lies above the midpoint between the halves' largest
figure and 1, and the samples are called copied when more than `COPY_SHARE` of their patches are. (Their
mean alone would not do: the samples' patches are searched in the whole photo, twice the area each half's
are searched in, so new pieces of the texture average a few hundredths above the halves; the 2016
release's samples of bark do.)
"""

import torch
import torch.nn.functional as F

from .evaluate import random_crops

PATCHES = 64  # patches cut from the samples, and from the two halves together
COPY_SHARE = 0.1  # the photo shifted: about 0.5 (the rest cross its seam); new texture: 0 on every photo tried
SMALLEST_PATCH = 8


def patch_side(texture_shape) -> int:
    """The side of the compared patches: a quarter of the photo's smaller side."""
    return min(texture_shape[-2:]) // 4


def best_matches(patches: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(K,): each of the (K, C, P, P) patches' largest NCC with any P x P window of the (C, H, W) image.

    Each channel's mean is taken from the patch and from every window before they are compared, so a
    patch matches a window that is the same up to an offset per channel and one contrast gain. Flat patches
    or windows (no variance) match nothing: 0."""
    p = patches.shape[-1]
    centred = patches - patches.mean(dim=(-2, -1), keepdim=True)
    norms = centred.flatten(1).norm(dim=1)
    unit = centred / norms.clamp_min(1e-6).view(-1, 1, 1, 1)
    image = image.unsqueeze(0)
    # <unit, window> equals <unit, window - its mean>, as the unit patch's channels sum to zero
    dots = F.conv2d(image, unit)
    window_sums = F.avg_pool2d(image, p, stride=1) * p * p
    window_squares = F.avg_pool2d(image * image, p, stride=1) * p * p
    variance = (window_squares - window_sums * window_sums / (p * p)).sum(dim=1, keepdim=True)
    ncc = dots / variance.clamp_min(1e-6).sqrt()
    best = ncc.flatten(2).amax(dim=2)[0]
    return torch.where(norms > 1e-6, best, torch.zeros_like(best)).clamp(-1.0, 1.0)


def copy_check(texture: torch.Tensor, samples: torch.Tensor, seed: int = 0) -> dict:
    """The copy figures of (N, C, h, w) samples against the (C, H, W) training photo, both in [0, 255]:

    {"patch": P, "samples": {"mean", "largest", "copies"}, "photo_halves": {"mean", "largest"}, "threshold",
     "copied"}: the mean and largest over patches of their best NCC with the photo (the samples' patches) or
    with the photo's other half (the halves' patches); `copies`, the share of the samples' patches above
    `threshold`, the midpoint between the halves' largest figure and 1; `copied` when it is over
    COPY_SHARE."""
    side = patch_side(texture.shape)
    if side < SMALLEST_PATCH or min(samples.shape[-2:]) < side:
        raise ValueError(f"the copy check needs a photo of at least {4 * SMALLEST_PATCH} px and samples of at "
                         f"least a quarter of its side ({side} px)")
    gen = torch.Generator().manual_seed(seed)
    texture, samples = texture.float().cpu(), samples.float().cpu()
    ours = best_matches(random_crops(samples, side, PATCHES, gen), texture)
    half = texture.shape[-1] // 2
    left, right = texture[..., :half], texture[..., half:]
    halves = torch.cat([best_matches(random_crops(left.unsqueeze(0), side, PATCHES // 2, gen), right),
                        best_matches(random_crops(right.unsqueeze(0), side, PATCHES // 2, gen), left)])
    figures = {name: {"mean": round(v.mean().item(), 4), "largest": round(v.max().item(), 4)}
               for name, v in (("samples", ours), ("photo_halves", halves))}
    threshold = (1.0 + halves.max().item()) / 2
    figures["samples"]["copies"] = round((ours > threshold).float().mean().item(), 4)
    return {"patch": side, **figures, "threshold": round(threshold, 4),
            "copied": figures["samples"]["copies"] > COPY_SHARE}


def copy_line(figures: dict) -> str:
    """The copy check in one line, as `eval` and `learn` print it."""
    ours, halves = figures["samples"], figures["photo_halves"]
    verdict = "COPIED: the samples redraw pieces of the photo" if figures["copied"] else "new pieces of the texture"
    return (f"copy check, {figures['patch']} px patches' best match in the photo (NCC, 1 = a copy): samples "
            f"{ours['mean']:.2f} (largest {ours['largest']:.2f}), the photo's two halves {halves['mean']:.2f} "
            f"(largest {halves['largest']:.2f}); {ours['copies']:.0%} of the samples' patches above "
            f"{figures['threshold']:.2f}: {verdict}")
