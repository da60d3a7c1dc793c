"""How close samples are to their training texture, with a scale to read the figure against.

Two figures, each computed for the samples and for three references:
- real crops of the training texture (the floor: what another piece of the same texture scores),
- random-phase noise with the texture's power spectrum (the classical Gaussian texture model),
- white noise with the texture's mean and standard deviation per channel.

`patch_swd`: a multi-scale sliced Wasserstein distance between the distributions of 7x7 colour patches
(no extra dependency; sees colour and fine structure). `ps_z`: the mean absolute z-score of the
Portilla-Simoncelli statistics of the luminance (with plenoptic, the `eval` extra). Lower is better.
And one check of another kind: whether the samples are the training photo redrawn (`copycheck`).
"""

import importlib.util
import math

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, for the grayscale statistics of colour crops
SMALLEST_CROP = 7 * 2 ** (3 - 1)  # the default patch SWD: 7x7 patches at a quarter of the resolution


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luminance of (N, C, H, W) images, C = 1 or 3."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def random_crops(images: torch.Tensor, size: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` square crops of side `size` at uniform random places of random images of (N, C, H, W)."""
    n, _, h, w = images.shape
    if size > min(h, w):
        raise ValueError(f"crops of {size} px do not fit in {h}x{w} images")
    idx = torch.randint(n, (count,), generator=gen)
    top = torch.randint(h - size + 1, (count,), generator=gen)
    left = torch.randint(w - size + 1, (count,), generator=gen)
    return torch.stack([images[i, :, t:t + size, l:l + size] for i, t, l in zip(idx, top, left)])


def random_phase_noise(texture: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` images with the texture's amplitude spectrum and random phases (shared by the channels,
    so the colour correlations stay), and its mean colour."""
    c, h, w = texture.shape
    mean = texture.mean(dim=(1, 2), keepdim=True)
    amplitude = torch.fft.fft2(texture - mean).abs()
    # The phase of white noise's spectrum is Hermitian-symmetric, so the result is real.
    phase = torch.angle(torch.fft.fft2(torch.randn(count, 1, h, w, generator=gen)))
    noise = torch.fft.ifft2(amplitude.unsqueeze(0) * torch.exp(1j * phase)).real
    return noise + mean


def white_noise(texture: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` images of Gaussian white noise with the texture's per-channel mean and standard deviation."""
    c, h, w = texture.shape
    mean = texture.mean(dim=(1, 2)).view(1, c, 1, 1)
    std = texture.std(dim=(1, 2)).view(1, c, 1, 1)
    return torch.randn(count, c, h, w, generator=gen) * std + mean


def _patches(images: torch.Tensor, patch: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` random patch x patch windows of (N, C, H, W) images as (count, C * patch * patch) rows."""
    cols = F.unfold(images, patch)  # (N, C * patch^2, L)
    n, d, length = cols.shape
    which = torch.randint(n * length, (count,), generator=gen)
    return cols.permute(0, 2, 1).reshape(n * length, d)[which]


def patch_swd(reference: torch.Tensor, candidate: torch.Tensor, patch: int = 7, scales: int = 3,
              projections: int = 256, count: int = 4096, seed: int = 0) -> float:
    """Multi-scale sliced Wasserstein-1 distance between the patch distributions of two image sets.

    At each scale (images average-pooled by 1, 2, 4, ...), `count` random patches are drawn from each set,
    standardised by the reference patches' mean and overall standard deviation, projected on random unit
    directions, and the sorted projections compared. The figure is the mean over directions and scales.
    """
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for s in range(scales):
        factor = 2**s
        ref = F.avg_pool2d(reference.double(), factor) if factor > 1 else reference.double()
        cand = F.avg_pool2d(candidate.double(), factor) if factor > 1 else candidate.double()
        if min(ref.shape[-2:]) < patch or min(cand.shape[-2:]) < patch:
            raise ValueError(f"images too small for {patch}x{patch} patches at scale 1/{factor}")
        p, q = _patches(ref, patch, count, gen), _patches(cand, patch, count, gen)
        mu, sd = p.mean(dim=0), p.std().clamp_min(1e-8)
        p, q = (p - mu) / sd, (q - mu) / sd
        directions = torch.randn(p.shape[1], projections, generator=gen, dtype=torch.float64)
        directions /= directions.norm(dim=0, keepdim=True)
        pp, _ = torch.sort(p @ directions, dim=0)
        qq, _ = torch.sort(q @ directions, dim=0)
        total += (pp - qq).abs().mean().item()
    return total / scales


def portilla_simoncelli_available() -> bool:
    """Whether plenoptic (the `eval` extra) is installed."""
    return importlib.util.find_spec("plenoptic") is not None


def ps_statistics(crops: torch.Tensor) -> torch.Tensor:
    """(N, S) Portilla-Simoncelli statistics (plenoptic) of the luminance of (N, C, H, W) crops."""
    import plenoptic as po

    lum = luminance(crops.float()) / 255.0
    side = min(lum.shape[-2:])
    # As many scales as keep the coarsest band at least as wide as the 9x9 autocorrelation window.
    scales = max(1, int(math.log2(side / 9)))
    model = po.models.PortillaSimoncelli(lum.shape[-2:], n_scales=scales)
    with torch.no_grad():
        stats = model(lum)  # (N, 1, S); statistics fixed by symmetry come out as zeros
    return stats.reshape(stats.shape[0], -1).double()


def ps_z(real: torch.Tensor, candidate: torch.Tensor) -> float:
    """Mean absolute z-score of the candidate crops' mean statistics against real crops' spread."""
    mean, std = real.mean(dim=0), real.std(dim=0)
    live = std > 1e-12 * max(1.0, std.max().item())  # statistics that vary across real crops
    return ((candidate.mean(dim=0)[live] - mean[live]) / std[live]).abs().mean().item()


def largest_crop(texture_shape, samples_shape) -> int:
    """The default crop side: the samples' side or half the texture's, whichever is smaller, rounded down
    to a multiple of 8 (the steerable pyramid halves the crop three times)."""
    side = min(min(samples_shape[-2:]), min(texture_shape[-2:]) // 2)
    return side - side % 8


PS_MISSING = "not computed: it needs plenoptic, pip install 'tritongcn[eval]'"


def evaluate(texture: torch.Tensor, samples: torch.Tensor, crop: int | None = None, crops: int = 64,
             seed: int = 0, use_ps: bool | None = None, others: dict | None = None,
             references: bool = True, progress=None) -> dict:
    """Figures for the samples and the three references (see the module's docstring).

    `texture` is the preprocessed training image (C, H, W) in [0, 255]; `samples` are (N, C, h, w) in
    [0, 255]. Crops of side `crop` (default: the smaller of the samples' side and half the texture's)
    are cut from each set; the real crops are scored against a second, independent draw of real crops.
    `others` ({name: images}) are more sets scored the same way in the same pass (the default crop then
    fits them too), each under its name. `references=False` leaves the three references out (the same
    crops are drawn, so the other figures do not change): for scoring many sets against one texture.
    `progress(name)` is told when the reference's statistics and each set's figures are done
    (`evaluation_steps` in all).
    """
    others = others or {}
    if texture.dim() != 3 or any(s.dim() != 4 or s.shape[1] != texture.shape[0]
                                 for s in [samples, *others.values()]):
        raise ValueError("texture must be (C, H, W) and samples (N, C, h, w) with the same C")
    gen = torch.Generator().manual_seed(seed)
    texture = texture.double().cpu()
    sets = {name: images.double().cpu() for name, images in {"samples": samples, **others}.items()}
    crop = crop or min(largest_crop(texture.shape, images.shape) for images in sets.values())
    crop -= crop % 8  # the steerable pyramid halves the crop three times
    candidates = {
        "samples": random_crops(sets["samples"], crop, crops, gen),
        "real_crops": random_crops(texture.unsqueeze(0), crop, crops, gen),
        "random_phase": random_crops(random_phase_noise(texture, 8, gen), crop, crops, gen),
        "white_noise": random_crops(white_noise(texture, 8, gen), crop, crops, gen),
    }
    reference = random_crops(texture.unsqueeze(0), crop, crops, gen)
    # The other sets' crops are drawn last, so the figures above are those `tritongcn eval` gives.
    candidates.update({name: random_crops(images, crop, crops, gen) for name, images in sets.items()
                       if name != "samples"})
    use_ps = portilla_simoncelli_available() if use_ps is None else use_ps
    ref_stats = ps_statistics(reference) if use_ps else None
    progress = progress or (lambda name: None)
    progress("reference")
    result = {"crop": crop, "crops": crops, "seed": seed}
    if not use_ps:  # said in the file, so that a missing figure is never read as a lost one
        result["ps_z"] = PS_MISSING if not portilla_simoncelli_available() else "not computed (use_ps=False)"
    for name in [*sets, *(("real_crops", "random_phase", "white_noise") if references else ())]:
        images = candidates[name]
        figures = {"patch_swd": patch_swd(reference, images, seed=seed)}
        if use_ps:
            figures["ps_z"] = ps_z(ref_stats, ps_statistics(images))
        result[name] = figures
        progress(name)
    result["copy"] = _copy_figures(texture, sets["samples"], seed)
    return result


def _copy_figures(texture: torch.Tensor, samples: torch.Tensor, seed: int):
    """The copy check's figures (`copycheck.copy_check`), or why they were not computed."""
    from .copycheck import copy_check

    try:
        return copy_check(texture, samples, seed)
    except ValueError as err:
        return f"not computed: {err}"


def evaluation_steps(others: int = 0, references: bool = True) -> int:
    """How many times `evaluate` tells its `progress`: the reference, the samples, the others, the references."""
    return 2 + others + (3 if references else 0)
