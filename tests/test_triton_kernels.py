"""The Triton kernels against float64 torch references, run by the interpreter (conftest sets
TRITON_INTERPRET=1), over the awkward shapes of test_kernels.CONV_CASES."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from test_kernels import CONV_CASES  # noqa: E402

from tritongcn import GenerativeConvNet, LayerSpec, langevin  # noqa: E402
from tritongcn.kernels import (conv_relu_mask, langevin_update, masked_conv_transpose,  # noqa: E402
                               pack_mask, resolve_backend, unpack_mask)
from tritongcn.kernels.langevin_update_triton import randn_triton  # noqa: E402
from tritongcn.kernels.torus import torus_padding, wrap_pad  # noqa: E402

TRITON = "triton"


def _tolerance(terms):
    # fp32 accumulation of `terms` products of unit-variance numbers.
    return 2e-5 * terms ** 0.5


@pytest.mark.parametrize("n,c,h,w,k,ks,stride,pad", CONV_CASES)
def test_conv_relu_mask_matches_float64_reference(n, c, h, w, k, ks, stride, pad):
    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, ks, ks), torch.randn(k)
    y, mask = conv_relu_mask(x, wt, b, stride, pad, backend=TRITON)
    pre = F.conv2d(x.double(), wt.double(), b.double(), stride=stride, padding=pad)
    tol = _tolerance(c * ks * ks)
    torch.testing.assert_close(y.double(), pre.clamp_min(0), atol=tol, rtol=1e-5)
    bits = unpack_mask(mask, pre.shape)  # also checks the mask's dtype and shape
    clear = pre.abs() > tol  # away from ties the bits are exact
    assert torch.equal(bits[clear], (pre > 0)[clear])
    # The bits of channels past K (the last word's high bits) are zero, as the torch packer leaves them.
    assert torch.equal(mask, pack_mask(bits))


@pytest.mark.parametrize("k", [5, 30, 64, 100])
def test_conv_relu_mask_without_output_and_without_bias(k):
    x, wt = torch.randn(5, 3, 9, 7), torch.randn(k, 3, 3, 3)
    y, mask = conv_relu_mask(x, wt, None, 1, 1, need_output=False, backend=TRITON)
    assert y is None
    pre = F.conv2d(x.double(), wt.double(), padding=1)
    clear = pre.abs() > _tolerance(27)
    assert torch.equal(unpack_mask(mask, pre.shape)[clear], (pre > 0)[clear])


def test_conv_ties_are_inactive_and_nan_propagates():
    x = torch.zeros(3, 1, 5, 5)
    y, mask = conv_relu_mask(x, torch.randn(33, 1, 3, 3), torch.zeros(33), backend=TRITON)
    assert not unpack_mask(mask, y.shape).any() and not y.any()
    x[1, 0, 2, 2] = float("nan")
    y, mask = conv_relu_mask(x, torch.ones(33, 1, 3, 3), torch.zeros(33), backend=TRITON)
    assert torch.isnan(y[1]).all() and not torch.isnan(y[[0, 2]]).any()
    assert not unpack_mask(mask, y.shape).any()


@pytest.mark.parametrize("n,c,h,w,k,ks,stride,pad", CONV_CASES)
def test_masked_conv_transpose_matches_autograd_in_float64(n, c, h, w, k, ks, stride, pad):
    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, ks, ks), torch.randn(k)
    _, mask = conv_relu_mask(x, wt, b, stride, pad, backend="torch")
    x64 = x.double().requires_grad_()
    pre = F.conv2d(x64, wt.double(), b.double(), stride=stride, padding=pad)
    gate = unpack_mask(mask, pre.shape).double()  # the bits the kernel reads (ties included)
    g = torch.randn(pre.shape)
    tol = _tolerance(k * ks * ks)
    for upstream in (g, None):
        ours = masked_conv_transpose(upstream, mask, wt, stride, pad, input_shape=x.shape, backend=TRITON)
        weight = gate if upstream is None else gate * upstream.double()
        (expected,) = torch.autograd.grad((weight * pre).sum(), x64, retain_graph=True)
        assert ours.shape == x.shape and ours.dtype == torch.float32
        torch.testing.assert_close(ours.double(), expected, atol=tol, rtol=1e-5)


def test_masked_conv_transpose_propagates_nan():
    wt = torch.randn(4, 2, 3, 3)
    mask = pack_mask(torch.ones(1, 4, 3, 3, dtype=torch.bool))  # every unit active
    g = torch.ones(1, 4, 3, 3)
    g[0, 1, 1, 1] = float("nan")
    gx = masked_conv_transpose(g, mask, wt, 1, 0, input_shape=(1, 2, 5, 5), backend=TRITON)
    assert torch.isnan(gx[0, :, 1:4, 1:4]).all() and not torch.isnan(gx[0, :, 0]).any()


# Periodic layers (convolutions on the torus): sides multiples of the stride, kernels up to side + stride.
PERIODIC_CASES = [(1, 1, 5, 5, 5, 3, 1), (3, 3, 9, 6, 33, 5, 3), (2, 3, 8, 6, 7, 4, 2), (1, 2, 4, 4, 3, 5, 1),
                  (3, 3, 6, 9, 5, 7, 3)]


@pytest.mark.parametrize("backend", ["torch", TRITON])
@pytest.mark.parametrize("n,c,h,w,k,ks,stride", PERIODIC_CASES)
def test_periodic_layers_match_float64_circular_padding(n, c, h, w, k, ks, stride, backend):
    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, ks, ks), torch.randn(k)
    before, after = torus_padding(ks, stride)
    x64 = x.double().requires_grad_()
    pre = F.conv2d(wrap_pad(x64, before, after), wt.double(), b.double(), stride=stride)
    assert pre.shape[2:] == (h // stride, w // stride)
    y, mask = conv_relu_mask(x, wt, b, stride, periodic=True, backend=backend)
    tol = _tolerance(c * ks * ks)
    torch.testing.assert_close(y.double(), pre.detach().clamp_min(0), atol=tol, rtol=1e-5)
    bits = unpack_mask(mask, pre.shape)
    clear = pre.detach().abs() > tol
    assert torch.equal(bits[clear], (pre > 0)[clear])
    g = torch.randn(pre.shape)
    ours = masked_conv_transpose(g, mask, wt, stride, input_shape=x.shape, periodic=True, backend=backend)
    (expected,) = torch.autograd.grad((bits.double() * g.double() * pre).sum(), x64)
    torch.testing.assert_close(ours.double(), expected, atol=_tolerance(k * ks * ks), rtol=1e-5)


def test_periodic_layers_refuse_sides_off_the_stride_and_kernels_that_wrap_twice():
    with pytest.raises(ValueError, match="multiples"):
        conv_relu_mask(torch.zeros(1, 1, 7, 6), torch.zeros(1, 1, 5, 5), stride=3, periodic=True)
    with pytest.raises(ValueError, match="more than once"):
        conv_relu_mask(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 7, 7), periodic=True)


def test_langevin_update_is_the_formula_with_the_kernels_noise():
    x, grad = torch.randn(5, 3, 9, 7), torch.randn(5, 3, 9, 7)
    eps, sigma = 0.3, 2.0
    new = langevin_update(x, grad, eps, sigma, seed=7, offset=11, backend=TRITON)
    z = randn_triton(x.shape, seed=7, offset=11, device="cpu")
    expected = x.double() - eps**2 / 2 * (x.double() / sigma**2 - grad.double()) + eps * z.double()
    torch.testing.assert_close(new.double(), expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(new, langevin_update(x, grad, eps, sigma, seed=7, offset=11, backend=TRITON))
    assert not torch.equal(new, langevin_update(x, grad, eps, sigma, seed=8, offset=11, backend=TRITON))
    assert not torch.equal(new, langevin_update(x, grad, eps, sigma, seed=7, offset=12, backend=TRITON))
    inplace = x.clone()
    langevin_update(inplace, grad, eps, sigma, seed=7, offset=11, out=inplace, backend=TRITON)
    assert torch.equal(inplace, new)


def test_kernel_noise_is_addressed_by_counter_beyond_32_bits():
    big = 3 * 2**32 + 5  # counters of a long run of a large bank
    whole = randn_triton((3000,), seed=1, offset=big, device="cpu")
    assert torch.equal(whole[1000:], randn_triton((2000,), seed=1, offset=big + 1000, device="cpu"))
    assert not torch.equal(whole, randn_triton((3000,), seed=1, offset=big - 2**32, device="cpu"))


def test_kernel_noise_is_standard_normal():
    z = randn_triton((200_000,), seed=0, offset=12345, device="cpu").double()
    n = z.numel()
    assert abs(z.mean().item()) < 5 / n**0.5
    assert abs(z.var().item() - 1) < 5 * (2 / n) ** 0.5
    # Tails: the share beyond 2 standard deviations is 4.55% for N(0, 1).
    tail = (z.abs() > 2).double().mean().item()
    assert abs(tail - 0.0455) < 5 * (0.0455 * 0.9545 / n) ** 0.5
    # Neighbouring counters are uncorrelated.
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 5 / n**0.5


# The texture net's shape (a strided 15x15-like first layer, then 5x5 and 3x3, channels past one mask word),
# narrowed so that the interpreter gets through it in seconds.
SMALL_TEXTURE_NET = [LayerSpec(33, 7, 3, 2), LayerSpec(9, 5, 1, 2), LayerSpec(5, 3, 1, 2)]


@pytest.mark.parametrize("boundary", ["zero", "valid", "periodic"])
def test_grad_input_agrees_with_the_torch_backend_on_a_three_layer_net(boundary):
    net = GenerativeConvNet(3, SMALL_TEXTURE_NET, init_std=0.1, generator=torch.Generator().manual_seed(0))
    # Periodic sides must be multiples of the net's stride (3); "valid" needs the receptive field (25).
    x = torch.randn(2, 3, *{"zero": (17, 16), "valid": (26, 25), "periodic": (18, 15)}[boundary]) * 4
    ours = net.grad_input(x, backend=TRITON, boundary=boundary)
    expected = net.grad_input(x, backend="torch", boundary=boundary)
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, atol=1e-5 * expected.abs().max().item(), rtol=1e-4)


def test_grad_input_of_the_object_model_agrees_with_the_torch_backend():
    # The top filter's weights arrive as the gradient g of the top layer (HAS_G), not all ones.
    net = GenerativeConvNet(2, [LayerSpec(6, 5, 2), LayerSpec(4, 3)], init_std=0.3, top="fc", image_size=15,
                            generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.normal_(0.0, 0.5)
    x = torch.randn(3, 2, 15, 15) * 2
    for depth in (1, 2):
        net.depth = depth
        expected = net.grad_input(x, backend="torch")
        assert expected.abs().max() > 0
        torch.testing.assert_close(net.grad_input(x, backend=TRITON), expected,
                                   atol=1e-5 * expected.abs().max().item(), rtol=1e-4)


def test_langevin_agrees_with_the_torch_backend_given_the_same_noise():
    net = GenerativeConvNet(3, SMALL_TEXTURE_NET, init_std=0.1, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(3, 3, 14, 13) * 4
    steps, eps, sigma, seed = 3, 0.3, 1.5, 4
    ours = langevin(net, x0, steps, eps, sigma, seed=seed, backend=TRITON, first_step=2)
    x = x0.clone()
    for t in range(2, 2 + steps):
        grad = net.grad_input(x, backend="torch")
        z = randn_triton(x.shape, seed, offset=t * x.numel(), device="cpu")
        x = x - eps**2 / 2 * (x / sigma**2 - grad) + eps * z
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_auto_picks_torch_on_the_cpu_and_triton_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    assert resolve_backend("auto", "cpu") == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_backend("triton", "cpu")
