"""Where chains start: random-phase noise with the training images' spectrum, drawn by counters."""

import math

import pytest
import torch

from tritongcn.chains import ChainBank
from tritongcn import GenerativeConvNet, LayerSpec
from tritongcn.starts import spectrum_kernel, spectrum_noise, start_chains


def _stripes(size=48, seed=0, length=15):
    """(1, 3, size, size) mean-subtracted streaks along the anti-diagonal: white noise averaged over
    `length` pixels along it, the channels correlated."""
    g = torch.Generator().manual_seed(seed)
    white = torch.randn(size, size, generator=g)
    taps = range(-(length // 2), length // 2 + 1)
    base = sum(torch.roll(white, (k, -k), (0, 1)) for k in taps) * (50 / math.sqrt(length))
    image = torch.stack([base, 0.5 * base, -base]).unsqueeze(0)
    return image - image.mean(dim=(2, 3), keepdim=True)


def test_spectrum_noise_has_the_images_variance_colours_and_orientation():
    image = _stripes()
    kernel = spectrum_kernel(image, window=47)
    assert kernel.shape == (3, 3, 47, 47)
    noise = spectrum_noise(kernel, (64, 3, 48, 48), seed=1, offset=0)
    # One image's periodogram is noisy and the root of its noise spreads past the window: the kernel
    # keeps the smooth part, 70 to 80 % of the variance (as on the bundled textures). The colour
    # correlations stay exact, the negative one too (one colour component carries all the variance).
    ratio = noise.var(dim=(0, 2, 3)) / image.var(dim=(0, 2, 3))
    assert ((ratio > 0.6) & (ratio < 1.05)).all(), ratio
    torch.testing.assert_close(noise[:, 1], 0.5 * noise[:, 0], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(noise[:, 2], -noise[:, 0], atol=1e-3, rtol=1e-3)
    # The stripes run along the anti-diagonal: neighbours along it agree, across it they do not.
    along = (noise[..., 1:, :-1] * noise[..., :-1, 1:]).mean() / noise.var()
    across = (noise[..., 1:, 1:] * noise[..., :-1, :-1]).mean() / noise.var()
    assert along > 0.9 and across < 0.5


def test_spectrum_noise_is_drawn_by_counters_and_wraps_onto_small_tori():
    kernel = spectrum_kernel(_stripes(), window=47)
    a = spectrum_noise(kernel, (3, 3, 48, 48), seed=1, offset=0)
    b = spectrum_noise(kernel, (2, 3, 48, 48), seed=1, offset=3 * 48 * 48)  # chains 1 and 2 alone
    assert torch.equal(a[1:], b) and not torch.equal(a[0], a[1])
    assert not torch.equal(a, spectrum_noise(kernel, (3, 3, 48, 48), seed=2, offset=0))
    small = spectrum_noise(kernel, (2, 3, 21, 21), seed=1, offset=0)  # smaller than the window
    assert small.shape == (2, 3, 21, 21) and torch.isfinite(small).all()


def test_a_bank_restarts_chains_from_new_noise_of_its_start():
    net = GenerativeConvNet(3, [LayerSpec(4, 3, 1, 0)], generator=torch.Generator().manual_seed(0))
    kernel = spectrum_kernel(_stripes(), window=15)
    bank = ChainBank(net, 4, (3, 12, 12), init="spectrum", start_kernel=kernel, seed=3)
    first = bank.x.clone()
    assert torch.equal(first, start_chains("spectrum", (4, 3, 12, 12), sigma=1.0, seed=3, first_chain=0,
                                           total_chains=4, kernel=kernel))
    bank.advance(2)
    moved = bank.x.clone()
    bank.restart([1, 3])
    assert torch.equal(bank.x[0], moved[0]) and torch.equal(bank.x[2], moved[2])
    for i in (1, 3):  # a new start, not the first one again: its counters are those of step 2
        assert not torch.equal(bank.x[i], first[i]) and not torch.equal(bank.x[i], moved[i])
    with pytest.raises(ValueError, match="spectrum kernel"):
        ChainBank(net, 2, (3, 12, 12), init="spectrum")


def test_bounded_chains_stay_inside_the_image_range():
    net = GenerativeConvNet(1, [LayerSpec(4, 3, 1, 0)], init_std=5.0, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([100.0])
    free = ChainBank(net, 4, (1, 12, 12), init="noise", sigma=80.0, step_size=1.0, seed=1)
    bounded = ChainBank(net, 4, (1, 12, 12), init="noise", sigma=80.0, step_size=1.0, seed=1, mean=mean)
    free.advance(3)
    bounded.advance(3)
    # The large weights throw free chains out of [0, 255]; bounded ones are clamped there after each step.
    assert (free.x + mean).min() < 0 or (free.x + mean).max() > 255
    assert (bounded.x + mean).min() >= 0 and (bounded.x + mean).max() <= 255
    resumed = ChainBank.from_state(net, bounded.state_dict())  # the bounds travel with saved chains
    assert torch.equal(resumed.bounds[1], bounded.bounds[1])
