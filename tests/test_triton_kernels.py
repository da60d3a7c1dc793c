"""The Triton kernels against float64 torch references, run by the interpreter (conftest sets
TRITON_INTERPRET=1), over the awkward shapes of conftest.CONV_CASES."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from conftest import CONV_CASES, assert_close, tolerance  # noqa: E402

from tritongcn import GenerativeConvNet, LayerSpec, langevin  # noqa: E402
from tritongcn.kernels import (conv_relu_mask, langevin_update, masked_conv_transpose,  # noqa: E402
                               pack_mask, resolve_backend, unpack_mask)
from tritongcn.kernels.langevin_update_triton import randn_triton  # noqa: E402
from tritongcn.kernels.torus import torus_padding, wrap_pad  # noqa: E402

TRITON = "triton"


@pytest.mark.parametrize("n,c,h,w,k,ks,stride,pad", CONV_CASES)
def test_conv_relu_mask_matches_float64_reference(n, c, h, w, k, ks, stride, pad):
    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, ks, ks), torch.randn(k)
    y, mask = conv_relu_mask(x, wt, b, stride, pad, backend=TRITON)
    pre = F.conv2d(x.double(), wt.double(), b.double(), stride=stride, padding=pad)
    tol = tolerance(y.dtype, c * ks * ks)
    assert_close(y, pre.clamp_min(0), reduce_dim=c * ks * ks)
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
    clear = pre.abs() > tolerance(torch.float32, 27)
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
    for upstream in (g, None):
        ours = masked_conv_transpose(upstream, mask, wt, stride, pad, input_shape=x.shape, backend=TRITON)
        weight = gate if upstream is None else gate * upstream.double()
        (expected,) = torch.autograd.grad((weight * pre).sum(), x64, retain_graph=True)
        assert ours.shape == x.shape and ours.dtype == torch.float32
        assert_close(ours, expected, reduce_dim=k * ks * ks)


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
    tol = tolerance(y.dtype, c * ks * ks)
    assert_close(y, pre.detach().clamp_min(0), reduce_dim=c * ks * ks)
    bits = unpack_mask(mask, pre.shape)
    clear = pre.detach().abs() > tol
    assert torch.equal(bits[clear], (pre > 0)[clear])
    g = torch.randn(pre.shape)
    ours = masked_conv_transpose(g, mask, wt, stride, input_shape=x.shape, periodic=True, backend=backend)
    (expected,) = torch.autograd.grad((bits.double() * g.double() * pre).sum(), x64)
    assert_close(ours, expected, reduce_dim=k * ks * ks)


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
    assert_close(new, expected, reduce_dim=3, scale=x.abs().max())
    assert torch.equal(new, langevin_update(x, grad, eps, sigma, seed=7, offset=11, backend=TRITON))
    hot = langevin_update(x, grad, eps, sigma, seed=7, offset=11, backend=TRITON, temperature=4.0)
    assert_close(hot, expected + eps * z.double(), reduce_dim=3, scale=x.abs().max())  # twice the noise
    assert not torch.equal(new, langevin_update(x, grad, eps, sigma, seed=8, offset=11, backend=TRITON))
    assert not torch.equal(new, langevin_update(x, grad, eps, sigma, seed=7, offset=12, backend=TRITON))
    inplace = x.clone()
    langevin_update(inplace, grad, eps, sigma, seed=7, offset=11, out=inplace, backend=TRITON)
    assert torch.equal(inplace, new)


def test_langevin_update_reads_its_offset_from_a_device_counter():
    # The counter a CUDA graph of steps advances: the same noise as the int it holds, and the value at launch.
    x, grad = torch.randn(4, 3, 9, 7), torch.randn(4, 3, 9, 7)
    big = 3 * 2**32 + 11
    counter = torch.tensor(big)
    by_counter = langevin_update(x, grad, 0.5, 1.0, seed=3, offset=counter, backend=TRITON)
    assert torch.equal(by_counter, langevin_update(x, grad, 0.5, 1.0, seed=3, offset=big, backend=TRITON))
    counter.add_(1)
    assert torch.equal(langevin_update(x, grad, 0.5, 1.0, seed=3, offset=counter, backend=TRITON),
                       langevin_update(x, grad, 0.5, 1.0, seed=3, offset=big + 1, backend=TRITON))
    for bad in (torch.tensor([1, 2]), torch.tensor(1, dtype=torch.int32)):
        with pytest.raises(ValueError, match="one int64"):
            langevin_update(x, grad, 0.5, 1.0, seed=3, offset=bad, backend=TRITON)


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
    assert_close(ours, expected, scale=expected.abs().max())


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
        assert_close(net.grad_input(x, backend=TRITON), expected, scale=expected.abs().max())


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
    assert_close(ours, x, reduce_dim=steps, scale=x.abs().max())


def test_auto_picks_torch_on_the_cpu_and_triton_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    assert resolve_backend("auto", "cpu") == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_backend("triton", "cpu")


def test_gated_gradient_and_output_gate_match_the_torch_path():
    # grad_input's calls: the gradient arrives gated (g_gated) and channels last, the result is gated by
    # the bits of the layer below (gate_output).
    x, wt, b = torch.randn(2, 20, 9, 8), torch.randn(17, 20, 3, 3), torch.randn(17)
    _, mask = conv_relu_mask(x, wt, b, 1, 1, backend="torch")
    gate = unpack_mask(mask, (2, 17, 9, 8))
    g = (torch.randn(2, 17, 9, 8) * gate).contiguous(memory_format=torch.channels_last)
    below = pack_mask(torch.rand(2, 20, 9, 8) < 0.5)
    expected = masked_conv_transpose(g, mask, wt, 1, 1, x.shape, backend="torch", g_gated=True, gate_output=below)
    ungated = masked_conv_transpose(torch.randn(2, 17, 9, 8), mask, wt, 1, 1, x.shape, backend="torch")
    for backend in ("torch", TRITON):
        ours = masked_conv_transpose(g, mask, wt, 1, 1, x.shape, backend=backend, g_gated=True, gate_output=below)
        assert_close(ours, expected, reduce_dim=17 * 9, scale=expected.abs().max())
        assert not ours[~unpack_mask(below, x.shape)].any()  # zero wherever the layer below is off
        assert not torch.equal(ours, ungated)
    with pytest.raises(ValueError, match="gate_output"):
        masked_conv_transpose(g, mask, wt, 1, 1, x.shape, backend=TRITON, g_gated=True, gate_output=mask)


def test_channels_last_inputs_give_the_same_results():
    x, wt, b = torch.randn(3, 20, 11, 7), torch.randn(18, 20, 3, 3), torch.randn(18)
    y, mask = conv_relu_mask(x, wt, b, 1, 1, backend=TRITON)
    y_last, mask_last = conv_relu_mask(x.contiguous(memory_format=torch.channels_last), wt, b, 1, 1, backend=TRITON)
    assert y.is_contiguous(memory_format=torch.channels_last)  # 18 channels: written channels last
    assert torch.equal(y_last, y)
    assert torch.equal(mask_last, mask)


@pytest.mark.parametrize("n,c,h,w,k,ks,stride,pad", [(2, 3, 16, 13, 5, 7, 3, 2), (1, 2, 9, 10, 4, 5, 2, 0),
                                                     (2, 1, 12, 12, 3, 4, 2, 3)])
def test_strided_few_channel_layers_run_over_pixel_blocks(n, c, h, w, k, ks, stride, pad):
    # Space to depth: a strided layer over few channels runs as a stride-1 layer over stride x stride
    # blocks, its padding shifted to whole blocks.
    from tritongcn.kernels.conv_relu_mask_triton import space_to_depth
    x, wt, bias = torch.randn(n, c, h, w), torch.randn(k, c, ks, ks), torch.randn(k)
    blocks = space_to_depth(x, stride, 32, torch.float32)
    assert blocks.shape == (n, 32, -(-h // stride), -(-w // stride)) and not blocks[:, c * stride**2:].any()
    assert torch.equal(blocks[:, :c * stride**2, 1, 0], x[:, :, stride:2 * stride, :stride].reshape(n, -1))
    y, mask = conv_relu_mask(x, wt, bias, stride, pad, backend=TRITON)
    pre = F.conv2d(x.double(), wt.double(), bias.double(), stride=stride, padding=pad)
    assert_close(y, pre.clamp_min(0), reduce_dim=c * ks * ks)


def test_weights_are_laid_out_once_and_again_after_an_update():
    from tritongcn.kernels.launch import LAYOUTS
    x, wt = torch.randn(1, 20, 6, 6), torch.randn(4, 20, 3, 3)
    made = []
    laid = LAYOUTS.get(wt, "test", lambda t: made.append(1) or t.flip(0))
    assert LAYOUTS.get(wt, "test", lambda t: made.append(1) or t.flip(0)) is laid and len(made) == 1
    y, _ = conv_relu_mask(x, wt, None, 1, 1, backend=TRITON)
    wt.mul_(-1)  # an in-place update (an optimizer step) bumps the version: the layout is made again
    y_new, _ = conv_relu_mask(x, wt, None, 1, 1, backend=TRITON)
    assert_close(y_new, F.relu(F.conv2d(x.double(), wt.double(), padding=1)), reduce_dim=20 * 9)
    assert not torch.equal(y_new, y)
    LAYOUTS.get(wt, "test", lambda t: made.append(1) or t)
    assert len(made) == 2


@pytest.mark.parametrize("boundary", ["zero", "periodic"])
def test_channels_rounded_up_by_zero_filters_change_nothing(monkeypatch, boundary):
    # On a GPU the Triton kernels run with channel counts rounded up to 16 (wide aligned loads).
    import tritongcn.gradient as gradient_module
    net = GenerativeConvNet(3, SMALL_TEXTURE_NET, init_std=0.1, generator=torch.Generator().manual_seed(3))
    x = torch.randn(2, 3, 18, 15) * 4
    expected = net.grad_input(x, backend="torch", boundary=boundary)
    monkeypatch.setattr(gradient_module, "channel_alignment", lambda backend, device: 16)
    weights = net.kernel_weights(torch.float32, 16)
    assert [tuple(w.shape[:2]) for w, _ in weights] == [(48, 3), (16, 48), (16, 16)]
    for backend in ("torch", TRITON):
        assert_close(net.grad_input(x, backend=backend, boundary=boundary), expected, scale=expected.abs().max())


def test_chains_do_not_depend_on_the_chunk_size():
    from tritongcn import ChainBank
    net = GenerativeConvNet(3, SMALL_TEXTURE_NET, init_std=0.1, generator=torch.Generator().manual_seed(4))
    banks = [ChainBank(net, 5, (3, 18, 15), backend=TRITON, init="noise", seed=2, precision="float32",
                       memory_budget=budget) for budget in (1 << 30, 1)]
    assert banks[1].chunk_size == 1
    for bank in banks:
        bank.advance(2)
    assert torch.equal(banks[0].x, banks[1].x)


def test_steps_run_in_recorded_blocks_give_the_same_chains():
    # `graph_steps`: blocks of steps driven by a device-side counter (recorded as a CUDA graph on a GPU,
    # run as recorded here). 3 steps in blocks of 2 leave one step to the plain loop; bounds, known pixels,
    # a shard's place in its bank and a temperature all ride along. A two-layer net keeps it quick.
    from tritongcn import ChainBank
    net = GenerativeConvNet(3, [LayerSpec(6, 5, 3, 2), LayerSpec(4, 3, 1, 1)], init_std=0.1,
                            generator=torch.Generator().manual_seed(4))
    x = torch.randn(2, 3, 9, 6) * 20
    known = (torch.full((1, 3, 9, 6), 5.0), torch.zeros(1, 1, 9, 6, dtype=torch.bool))
    known[1][..., :3, :] = True
    options = dict(seed=6, backend=TRITON, first_step=7, boundary="periodic", chain_start=2, total_chains=9,
                   precision="float32", bounds=(torch.full((3,), -30.0), torch.full((3,), 30.0)), known=known,
                   temperature=2.0)
    plain = langevin(net, x, 3, 0.6, 1.0, **options)
    assert torch.equal(langevin(net, x, 3, 0.6, 1.0, graph_steps=2, **options), plain)
    assert not torch.equal(langevin(net, x, 3, 0.6, 1.0, graph_steps=2, **{**options, "first_step": 8}), plain)
    banks = [ChainBank(net, 3, (3, 9, 6), backend=TRITON, init="noise", seed=2, precision="float32",
                       graph_steps=k) for k in (0, 2)]
    for bank in banks:
        bank.advance(2)
    assert torch.equal(banks[0].x, banks[1].x)


@pytest.mark.parametrize("value,expected", [("1", True), ("0", False), ("", False), (" 0 ", False), ("yes", True)])
def test_the_interpreter_switch_reads_zero_as_off(monkeypatch, value, expected):
    from tritongcn.kernels.launch import interpreting
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert interpreting() is expected
