import pytest
import torch
import torch.nn.functional as F

from tritongcn.kernels import (conv_relu_mask, langevin_update, mask_shape, masked_conv_transpose,
                               pack_mask, unpack_mask)
from tritongcn.kernels.langevin_update import chain_noise_torch

from conftest import CONV_CASES, assert_close, tolerance


def _reference_pre(x, w, b, stride, pad):
    return F.conv2d(x.double(), w.double(), b.double(), stride=stride, padding=pad)


@pytest.mark.parametrize("k,h,w", [(1, 1, 1), (5, 5, 7), (100, 4, 8), (3, 9, 7), (30, 74, 74)])
def test_pack_unpack_roundtrip_and_one_bit_per_unit(k, h, w):
    active = torch.rand(3, k, h, w) > 0.5
    mask = pack_mask(active)
    assert mask.dtype == torch.int32
    assert tuple(mask.shape) == mask_shape(active.shape) == (3, k, (h * w + 31) // 32)
    # Bits of storage per unit: exactly 1 when a map fills whole words, else its last word's unused bits.
    storage_bits = mask.numel() * mask.element_size() * 8
    assert storage_bits == active.numel() + 3 * k * (-(h * w) % 32)
    assert torch.equal(unpack_mask(mask, active.shape), active)


@pytest.mark.parametrize("k,h,w", [(1, 1, 1), (2, 4, 8), (7, 5, 7), (3, 33, 31)])
def test_cpu_and_device_packings_give_the_same_words(k, h, w):
    # CPU tensors go through NumPy's packbits, other devices through tensor arithmetic: one layout.
    from tritongcn.kernels.bitmask import _pack_numpy, _pack_tensor, _unpack_numpy, _unpack_tensor
    active = torch.rand(2, k, h, w, generator=torch.Generator().manual_seed(h * w)) > 0.5
    active[0, 0].view(-1)[-1] = True  # the last unit, whose bit may be the sign bit of a word
    words = _pack_numpy(active)
    assert words.dtype == _pack_tensor(active).dtype == torch.int32
    assert torch.equal(words, _pack_tensor(active))
    assert torch.equal(_unpack_numpy(words, active.shape), active)
    assert torch.equal(_unpack_tensor(words, active.shape), active)


def test_bit_layout_is_position_p_in_bit_p_mod_32_of_word_p_div_32():
    # The layout every backend shares (a Triton kernel must produce the same words).
    active = torch.zeros(1, 2, 5, 8, dtype=torch.bool)  # 40 positions: two words per channel
    active[0, 0, 3, 7] = True  # position 31: bit 31 of word 0, the sign bit
    active[0, 1, 4, 1] = True  # position 33: bit 1 of word 1
    mask = pack_mask(active)
    assert mask[0, 0].tolist() == [-(2**31), 0]
    assert mask[0, 1].tolist() == [0, 2]


def test_unpack_rejects_a_mask_of_the_wrong_shape():
    mask = pack_mask(torch.ones(1, 40, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not hold"):
        unpack_mask(mask, (1, 41, 3, 3))


@pytest.mark.parametrize("n,c,h,w,k,ks,stride,pad", CONV_CASES)
def test_conv_relu_mask_matches_float64_reference(n, c, h, w, k, ks, stride, pad):
    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, ks, ks), torch.randn(k)
    y, mask = conv_relu_mask(x, wt, b, stride, pad, backend="torch")
    pre = _reference_pre(x, wt, b, stride, pad)
    assert_close(y, pre.clamp_min(0), reduce_dim=c * ks * ks)
    bits = unpack_mask(mask, pre.shape)
    clear = pre.abs() > tolerance(y.dtype, c * ks * ks)  # away from ties the bits are exact
    assert torch.equal(bits[clear], (pre > 0)[clear])


def test_top_layer_needs_only_bits():
    x, wt, b = torch.randn(2, 3, 9, 7), torch.randn(5, 3, 3, 3), torch.randn(5)
    y, mask = conv_relu_mask(x, wt, b, 1, 1, need_output=False)
    assert y is None
    assert torch.equal(mask, conv_relu_mask(x, wt, b, 1, 1)[1])


def test_ties_are_inactive_and_nan_propagates():
    x = torch.zeros(1, 1, 5, 5)
    y, mask = conv_relu_mask(x, torch.randn(3, 1, 3, 3), torch.zeros(3))
    assert not unpack_mask(mask, y.shape).any()  # pre-activation exactly 0: inactive
    x[0, 0, 2, 2] = float("nan")
    y, mask = conv_relu_mask(x, torch.ones(3, 1, 3, 3), torch.zeros(3))
    assert torch.isnan(y).all()  # every 3x3 window covers the centre pixel
    assert not unpack_mask(mask, y.shape).any()


@pytest.mark.parametrize("n,c,h,w,k,ks,stride,pad", CONV_CASES)
def test_masked_conv_transpose_matches_autograd_in_float64(n, c, h, w, k, ks, stride, pad):
    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, ks, ks), torch.randn(k)
    y, mask = conv_relu_mask(x, wt, b, stride, pad)
    g = torch.randn_like(y)
    ours = masked_conv_transpose(g, mask, wt, stride, pad, input_shape=x.shape, backend="torch")
    x64 = x.double().requires_grad_()
    pre = F.conv2d(x64, wt.double(), b.double(), stride=stride, padding=pad)
    (expected,) = torch.autograd.grad((g.double() * torch.relu(pre)).sum(), x64)
    assert ours.shape == x.shape
    assert_close(ours, expected, reduce_dim=k * ks * ks)


def test_masked_conv_transpose_with_g_none_is_all_ones():
    x, wt, b = torch.randn(2, 3, 9, 7), torch.randn(33, 3, 3, 3), torch.randn(33)
    y, mask = conv_relu_mask(x, wt, b, 2, 1)
    ones = masked_conv_transpose(torch.ones_like(y), mask, wt, 2, 1, input_shape=x.shape)
    none = masked_conv_transpose(None, mask, wt, 2, 1, input_shape=x.shape)
    assert torch.equal(ones, none)


def test_langevin_update_is_the_formula_with_reproducible_noise():
    x, grad = torch.randn(5, 3, 9, 7), torch.randn(5, 3, 9, 7)
    eps, sigma = 0.3, 2.0
    new = langevin_update(x, grad, eps, sigma, seed=7, offset=11, backend="torch")
    z = chain_noise_torch(x.shape, seed=7, offset=11)
    drift = x.double() - eps**2 / 2 * (x.double() / sigma**2 - grad.double())
    assert_close(new, drift + eps * z.double(), reduce_dim=3, scale=x.abs().max())
    hot = langevin_update(x, grad, eps, sigma, seed=7, offset=11, backend="torch", temperature=4.0)
    assert_close(hot, drift + 2 * eps * z.double(), reduce_dim=3, scale=x.abs().max())  # twice the noise
    assert torch.equal(new, langevin_update(x, grad, eps, sigma, seed=7, offset=11))
    assert not torch.equal(new, langevin_update(x, grad, eps, sigma, seed=8, offset=11))
    assert not torch.equal(new, langevin_update(x, grad, eps, sigma, seed=7, offset=12))


def test_noise_of_a_chain_does_not_depend_on_its_batch():
    shape, chain = (7, 3, 5, 4), 3 * 5 * 4
    whole = chain_noise_torch(shape, seed=3, offset=100)
    head = chain_noise_torch((2,) + shape[1:], seed=3, offset=100)
    tail = chain_noise_torch((5,) + shape[1:], seed=3, offset=100 + 2 * chain)
    assert torch.equal(torch.cat([head, tail]), whole)


def test_noise_is_standard_normal():
    z = chain_noise_torch((64, 3, 32, 32), seed=0, offset=0).double().flatten()
    n = z.numel()
    # Mean within 5 standard errors; variance within 5 standard errors (var of s^2 is 2 / n for N(0, 1)).
    assert abs(z.mean().item()) < 5 / n**0.5
    assert abs(z.var().item() - 1) < 5 * (2 / n) ** 0.5
    # Chains are not copies of each other: correlation between two chains' noise is near zero.
    a, b = z.view(64, -1)[0], z.view(64, -1)[1]
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 5 / a.numel() ** 0.5


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend"):
        conv_relu_mask(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), backend="cudnn")
