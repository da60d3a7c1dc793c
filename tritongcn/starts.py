"""Where Langevin chains start.

- "zero": the mean image (0 for mean-subtracted data), the release's start. Every chain starts at the
  same point and only the Langevin noise tells them apart.
- "noise": N(0, sigma^2) white noise, a draw from the model's Gaussian reference distribution.
- "spectrum": random-phase noise with the training images' power spectrum, the classical Gaussian
  texture model: a stationary Gaussian image with the data's colours, orientations and scales but none of
  their higher-order structure. Langevin dynamics from here only have to add what the ConvNet knows. From
  white noise or the mean image they settle first on the fine structures the 33 px receptive field sees
  and seldom find the larger arrangement (long ridges, ripples), which this start already holds.

The spectrum travels with the model as a small spatial kernel (`spectrum_kernel`): per principal colour
component, the zero-phase square root of the data's autocovariance, cut to a window and tapered, so noise
of any size is one periodic convolution of white noise with it (`spectrum_noise`). Its noise is addressed
like the Langevin noise, by (seed, counter), so a chain's start depends on its index and on when it
(re)starts, never on the batch.
"""

import math

import torch

from .config import STARTS
from .kernels.langevin_update import _splitmix64, chain_noise_torch
SPECTRUM_WINDOW = 97  # px: correlations up to 48 px, beyond the texture net's 33 px receptive field
_START_STREAM = 0x1A17  # keeps the noise that starts chains apart from the Langevin noise


def spectrum_kernel(images: torch.Tensor, window: int = SPECTRUM_WINDOW, known: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """(C, C, k, k) kernel whose periodic convolution with C fields of unit white noise has the power
    spectrum and the colour covariance of the mean-subtracted (M, C, H, W) `images`, up to the window.

    The channels are first turned into their principal colour components, which are uncorrelated; each
    component gets the zero-phase square root of its autocovariance, cut to k = min(window, the images'
    side, odd) and Hann-tapered so the cut rings no frequencies; entry [c, j] is component j's root
    weighted by channel c's share of it. (One field for all channels would make every pair of channels
    correlate positively: blue water against orange light came out purple.) One image's periodogram is
    noisy, and the root of that noise spreads past any window: the kernel keeps the smooth part of the
    spectrum, 70 to 80 % of the variance on photographs, and the Langevin steps bring the rest.

    `known` (M, 1, H, W) bool, where given, leaves the other pixels out: the colours and the
    autocovariance are then measured on known pixels and known pairs of pixels only (`_known_spectrum`).
    """
    images = images.detach().double().cpu()
    m, c, h, w = images.shape
    k = min(window, h - (1 - h % 2), w - (1 - w % 2))
    weight = torch.ones(m, 1, h, w, dtype=torch.float64) if known is None else known.detach().cpu().double()
    mean = (images * weight).sum(dim=(2, 3), keepdim=True) / weight.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    centred = (images - mean) * weight
    pixels = centred.transpose(0, 1).reshape(c, -1)
    _, basis = torch.linalg.eigh(pixels @ pixels.T / weight.sum().clamp_min(1))  # columns: colour components
    components = torch.einsum("cj,mchw->mjhw", basis, centred)
    if known is None:
        power = torch.fft.fft2(components).abs().pow(2).mean(dim=0)
        # |K|^2 = power / (H W) makes a field of variance sum(power) / (H W)^2, the component's own variance.
        root = torch.fft.ifft2(power.sqrt() / math.sqrt(h * w)).real  # centred at pixel (0, 0)
    else:
        root = _known_spectrum(components, weight)
    kernel = torch.roll(root, (k // 2, k // 2), (1, 2))[:, :k, :k]
    taper = torch.hann_window(k + 2, periodic=False, dtype=torch.float64)[1:-1]
    kernel = kernel * taper.view(1, -1, 1) * taper.view(1, 1, -1)
    return (basis.view(c, c, 1, 1) * kernel.unsqueeze(0)).float()


def _known_spectrum(components: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(J, H, W) zero-phase square roots, centred at pixel (0, 0), of the power spectra of the (M, J, H, W)
    `components` (zero where `weight` is) on the H x W torus, as `spectrum_kernel` takes them from the
    periodogram of whole images, but from an autocovariance whose every lag is measured over the pairs of
    known pixels that far apart. The periodogram of an image with its hole filled mixes the hole's edges
    in and loses the long-range correlations (twice as far from the whole image's spectrum in the tests)."""
    m, j, h, w = components.shape
    size = (2 * h, 2 * w)  # zero padding: no lag wraps around
    pairs = torch.fft.irfft2(torch.fft.rfft2(weight, s=size).abs().pow(2), s=size).sum(dim=0)
    products = torch.fft.irfft2(torch.fft.rfft2(components, s=size).abs().pow(2), s=size).sum(dim=0)
    autocovariance = products / pairs.clamp_min(1)  # lag 0 at (0, 0), lag -d at 2h - d
    # Onto the H x W torus, each lag from its nearer side, as a periodogram of an H x W image has them.
    rows = torch.arange(h) - h * (torch.arange(h) > h // 2)
    cols = torch.arange(w) - w * (torch.arange(w) > w // 2)
    torus = autocovariance[:, rows.view(-1, 1) % size[0], cols.view(1, -1) % size[1]]
    power = torch.fft.fft2(torus).real.clamp_min(0)  # an estimate can dip below zero; a spectrum cannot
    return torch.fft.ifft2(power.sqrt()).real


def spectrum_noise(kernel: torch.Tensor, shape, seed: int, offset: int, device="cpu") -> torch.Tensor:
    """(N, C, H, W) random-phase noise: C fields of white noise keyed by (seed, offset) like
    `chain_noise_torch` (chain n takes the counters from offset + n C H W), convolved on the torus with
    `kernel` (C, C, k, k): output channel c sums kernel[c, j] over the fields j."""
    n, c, h, w = shape
    white = chain_noise_torch((n, c, h, w), seed, offset, device=device)
    k = kernel.shape[-1]
    # The kernel wrapped onto the H x W torus (sides smaller than the window fold onto themselves).
    rows = (torch.arange(k) - k // 2) % h
    cols = (torch.arange(k) - k // 2) % w
    wrapped = torch.zeros(c, c, h, w, dtype=torch.float32)
    wrapped.index_put_((torch.arange(c).view(-1, 1, 1, 1), torch.arange(c).view(1, -1, 1, 1),
                        rows.view(1, 1, -1, 1), cols.view(1, 1, 1, -1)), kernel.float().cpu(), accumulate=True)
    spectrum = torch.fft.rfft2(wrapped.to(device))
    mixed = torch.einsum("cjhw,njhw->nchw", spectrum, torch.fft.rfft2(white))
    return torch.fft.irfft2(mixed, s=(h, w))


def start_chains(start: str, shape, *, sigma: float, seed: int, first_chain: int, total_chains: int, step: int = 0,
                 kernel: torch.Tensor | None = None, device="cpu") -> torch.Tensor:
    """Chains first_chain .. first_chain + N - 1 of a bank of `total_chains`, (re)started at Langevin
    step `step`, drawn from `start` (see the module's docstring); their noise counters are those of
    that step's Langevin noise, in a stream of their own, so no two starts share noise."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    device = torch.device(device)
    if start == "zero":
        return torch.zeros(shape, device=device)
    n, c, h, w = shape
    key = _splitmix64(seed ^ _START_STREAM)
    if start == "noise":
        numel = c * h * w
        return sigma * chain_noise_torch(shape, key, offset=(step * total_chains + first_chain) * numel,
                                         device=device)
    if kernel is None:
        raise ValueError("a 'spectrum' start needs the spectrum kernel of the training images")
    if kernel.dim() != 4 or kernel.shape[:2] != (c, c):
        raise ValueError(f"a spectrum kernel of shape {tuple(kernel.shape)} cannot start {c}-channel chains")
    return spectrum_noise(kernel, shape, key, offset=(step * total_chains + first_chain) * c * h * w,
                          device=device)
