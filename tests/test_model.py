import pytest
import torch

from conftest import assert_close
from tritongcn import GenerativeConvNet, LayerSpec
from tritongcn.profile import random_texture_net

NETS = [
    [LayerSpec(4, 3, 1, 0)],
    [LayerSpec(5, 5, 3, 2), LayerSpec(6, 3, 1, 2)],
    [LayerSpec(7, 4, 2, 1), LayerSpec(33, 3, 1, 2), LayerSpec(5, 3, 2, 0)],
    [LayerSpec(6, 7, 3, 2), LayerSpec(8, 5, 1, 2), LayerSpec(3, 3, 1, 2)],  # the texture net in small
]


def _random_net(channels, layers):
    net = GenerativeConvNet(channels, layers, init_std=0.3).double()
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.normal_(0.0, 0.5)  # both signs, so every layer has active and inactive units
    return net


@pytest.mark.parametrize("boundary", ["zero", "valid", "periodic"])
@pytest.mark.parametrize("layers", NETS)
@pytest.mark.parametrize("channels,h,w", [(1, 17, 13), (3, 21, 21), (3, 19, 24)])
def test_grad_input_equals_autograd(layers, channels, h, w, boundary):
    net = _random_net(channels, layers)
    if boundary == "valid":  # the image must hold at least one whole window, with odd remainders
        h, w = max(h, net.receptive_field() + 4), max(w, net.receptive_field() + 3)
    if boundary == "periodic":  # sides must be multiples of the total stride on the torus
        h, w = (h // net.total_stride() + 1) * net.total_stride(), (w // net.total_stride() + 1) * net.total_stride()
    x = torch.randn(3, channels, h, w, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(net.score(x, boundary).sum(), x)
    ours = net.grad_input(x.detach(), boundary=boundary)
    assert ours.shape == x.shape
    assert expected.abs().max() > 0  # a live net: the comparison is not 0 == 0
    assert_close(ours, expected, scale=expected.abs().max())


def test_grad_input_in_float32_and_at_every_depth():
    net = GenerativeConvNet.texture(3)
    x = torch.randn(2, 3, 45, 39) * 60
    for depth in (1, 2, 3):
        net.depth = depth
        xr = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(net.score(xr).sum(), xr)
        scale = expected.abs().max().item()
        assert scale > 0  # a live net
        assert_close(net.grad_input(x), expected, scale=scale)


def test_texture_net_is_the_papers():
    net = GenerativeConvNet.texture(3)
    shapes = [(c.out_channels, c.in_channels, c.kernel_size, c.stride, c.padding) for c in net.convs]
    assert shapes == [(100, 3, (15, 15), (3, 3), (2, 2)), (64, 100, (5, 5), (1, 1), (2, 2)),
                      (30, 64, (3, 3), (1, 1), (2, 2))]
    assert all(isinstance(c, torch.nn.Conv2d) for c in net.convs)
    w = net.convs[1].weight
    assert abs(w.std().item() - 0.01) < 0.001 and abs(w.mean().item()) < 0.001
    assert all((c.bias == 0).all() for c in net.convs)
    assert net.receptive_field() == 33 and net.receptive_field(1) == 15
    assert GenerativeConvNet.texture(1).convs[0].in_channels == 1


def test_texture_net_takes_a_fourth_layer_only_when_asked():
    three, four = (GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(0), layers=n) for n in (3, 4))
    assert [c.weight.shape for c in four.convs][3] == (30, 30, 5, 5)
    assert four.receptive_field() == 45 and four.total_stride() == 3
    for a, b in zip(three.convs, four.convs):  # the same first three layers, drawn first
        assert torch.equal(a.weight, b.weight)
    with pytest.raises(ValueError, match="1 to 4 layers, asked for 5"):
        GenerativeConvNet.texture(3, layers=5)


def test_grad_input_of_the_four_layer_texture_net_equals_autograd():
    net = GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(1), layers=4).double()
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.normal_(0.0, 0.05)  # both signs: every layer has active and inactive units
    x = torch.randn(2, 3, 48, 51, dtype=torch.float64) * 60
    for boundary in ("zero", "periodic"):
        xr = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(net.score(xr, boundary).sum(), xr)
        scale = expected.abs().max().item()
        assert scale > 0  # a live net
        assert_close(net.grad_input(x, boundary=boundary), expected, scale=scale)


def test_score_and_energy():
    net = _random_net(1, NETS[1])
    x = torch.randn(4, 1, 11, 11, dtype=torch.float64)
    h = torch.relu(net.convs[1](torch.relu(net.convs[0](x))))
    torch.testing.assert_close(net.score(x), h.sum(dim=(1, 2, 3)))
    sigma = 1.7
    torch.testing.assert_close(net.energy(x, sigma), (x**2).sum(dim=(1, 2, 3)) / (2 * sigma**2) - net.score(x))


def test_config_round_trip_and_depth_bounds():
    net = GenerativeConvNet.texture(3, depth=2)
    copy = GenerativeConvNet.from_config(net.config())
    copy.load_state_dict(net.state_dict())
    assert copy.depth == 2 and copy.layers == net.layers
    with pytest.raises(ValueError):
        net.depth = 4


def test_periodic_score_is_invariant_to_circular_shifts():
    # On the torus a shift by a multiple of the total stride moves every unit to another unit.
    net = _random_net(1, [LayerSpec(4, 5, 2, 2), LayerSpec(3, 3, 1, 1)])
    x = torch.randn(2, 1, 16, 12, dtype=torch.float64)
    shifted = torch.roll(x, shifts=(4, -6), dims=(2, 3))
    torch.testing.assert_close(net.score(shifted, "periodic"), net.score(x, "periodic"))
    assert not torch.allclose(net.score(shifted), net.score(x))  # zero padding has borders
    assert net.output_shape(x.shape, "periodic") == (2, 3, 8, 6)


def test_valid_boundary_scores_only_units_inside_the_image():
    net = _random_net(1, [LayerSpec(4, 5, 2, 2), LayerSpec(3, 3, 1, 1)])
    x = torch.randn(2, 1, 16, 12, dtype=torch.float64)
    # Receptive field 9, total stride 2: (16 - 9) // 2 + 1 = 4 by (12 - 9) // 2 + 1 = 2 top units.
    assert net.output_shape(x.shape, "valid") == (2, 3, 4, 2)
    x_far = x.clone()
    x_far[:, :, 15, :] += 100  # row 15 lies outside every valid window ((4 - 1) * 2 + 9 = 15 rows)
    torch.testing.assert_close(net.score(x_far, "valid"), net.score(x, "valid"))
    assert not torch.allclose(net.score(x_far), net.score(x))


def test_periodic_sizes_must_fit_the_stride():
    net = GenerativeConvNet.texture(1)
    with pytest.raises(ValueError, match="multiples of 3"):
        net.grad_input(torch.zeros(1, 1, 40, 40), boundary="periodic")
    with pytest.raises(ValueError, match="boundary must be"):
        net.score(torch.zeros(1, 1, 42, 42), "mirror")


def test_layer_specs_are_validated():
    with pytest.raises(ValueError):
        LayerSpec(4, 0)
    with pytest.raises(ValueError):
        LayerSpec(4, 3, stride=0)
    with pytest.raises(ValueError):
        LayerSpec(4, 3, padding=-1)
    net = GenerativeConvNet(1, [LayerSpec(2, 1, stride=2)])
    with pytest.raises(ValueError, match="no torus form"):
        net.grad_input(torch.zeros(1, 1, 8, 8), boundary="periodic")


def test_bfloat16_input_gradient_is_close_to_float32():
    net = random_texture_net()
    x = torch.randn(2, 3, 42, 42) * 50
    full = net.grad_input(x, boundary="periodic")
    half = net.grad_input(x, boundary="periodic", precision="bfloat16")
    assert half.dtype == torch.float32 and half.shape == full.shape
    # bfloat16 keeps 8 bits of mantissa, and a unit whose pre-activation is within rounding of 0 may flip;
    # B stays within a few percent of the float32 one.
    assert ((half - full).norm() / full.norm()).item() < 0.1
    with pytest.raises(ValueError, match="precision"):
        net.grad_input(x, precision="float16")


def test_auto_precision_is_bfloat16_for_the_triton_kernels_on_a_gpu(monkeypatch):
    import tritongcn.kernels as kernels
    from tritongcn.precision import resolve_precision
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    assert resolve_precision("auto", "cuda", "auto") == "bfloat16"
    assert resolve_precision("auto", "cuda", "torch") == "float32"  # cuDNN's float32 (TF32) path
    assert resolve_precision("float32", "cuda", "triton") == "float32"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_for_the_torch_kernels_on_a_cpu_with_native_bfloat16(monkeypatch, native):
    import tritongcn.precision as precision_module
    monkeypatch.setattr(precision_module, "cpu_has_native_bfloat16", lambda: native)
    resolve = precision_module.resolve_precision
    assert resolve("auto", "cpu", "torch") == ("bfloat16" if native else "float32")
    assert resolve("auto", "cpu", "triton") == "float32"  # the interpreter (conftest) has no bfloat16
    assert resolve("float32", "cpu") == "float32" and resolve("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="interpreter"):
        resolve("bfloat16", "cpu", "triton")
    with pytest.raises(ValueError, match="precision"):
        resolve("half", "cpu")
    # langevin resolves "auto" once; grad_input, called at every step, takes only the resolved names.
    net = GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 42, 42) * 50
    resolved = resolve("auto", "cpu", "torch")
    with pytest.raises(ValueError, match="resolve 'auto' once"):
        net.grad_input(x, precision="auto")
    from tritongcn import langevin
    assert torch.equal(langevin(net, x, 2, 0.3, 1.0), langevin(net, x, 2, 0.3, 1.0, precision=resolved))


@pytest.mark.parametrize("boundary", ["zero", "valid"])
def test_object_model_scores_with_one_filter_over_the_whole_map(boundary):
    net = GenerativeConvNet(2, [LayerSpec(5, 5, 2), LayerSpec(4, 3)], init_std=0.3, top="fc", image_size=17,
                            generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        for p in list(net.fc_biases) + [conv.bias for conv in net.convs]:
            p.normal_(0.0, 0.5)
    x = torch.randn(3, 2, 17, 17, dtype=torch.float64, requires_grad=True)
    for depth in (1, 2):
        net.depth = depth
        h = x
        for conv in net.active_convs():
            h = torch.relu(torch.nn.functional.conv2d(h, conv.weight, conv.bias, conv.stride))
        # f = <W_depth, h> + b_depth: linear on top of the ReLU maps, one top filter per depth.
        expected = (h * net.fc_weights[depth - 1]).sum(dim=(1, 2, 3)) + net.fc_biases[depth - 1]
        torch.testing.assert_close(net.score(x, boundary), expected)
        (auto,) = torch.autograd.grad(expected.sum(), x)
        torch.testing.assert_close(net.grad_input(x.detach(), boundary=boundary), auto)
        assert {id(p) for p in net.active_parameters()} == {
            id(p) for p in [*(q for c in net.active_convs() for q in c.parameters()),
                            net.fc_weights[depth - 1], net.fc_biases[depth - 1]]}
    rebuilt = GenerativeConvNet.from_config(net.config())
    assert rebuilt.top == "fc" and rebuilt.image_size == 17
    assert [tuple(w.shape) for w in rebuilt.fc_weights] == [(5, 7, 7), (4, 5, 5)]
    with pytest.raises(ValueError, match="top filter"):
        net.score(torch.zeros(1, 2, 19, 19, dtype=torch.float64))
    with pytest.raises(ValueError, match="top filter"):
        net.grad_input(torch.zeros(1, 2, 18, 18, dtype=torch.float64), boundary="periodic")


def test_object_net_is_the_papers():
    net = GenerativeConvNet.object(1, 25)
    assert [(s.out_channels, s.kernel_size, s.stride, s.padding) for s in net.layers] == [
        (100, 7, 2, 0), (64, 5, 1, 0), (20, 3, 1, 0)]
    assert [tuple(w.shape) for w in net.fc_weights] == [(100, 10, 10), (64, 6, 6), (20, 4, 4)]
    with pytest.raises(ValueError, match="image_size"):
        GenerativeConvNet(1, [LayerSpec(2, 3)], top="fc")


def test_an_object_net_of_fewer_layers_fits_smaller_images():
    with pytest.raises(ValueError, match="no map for layer 3"):
        GenerativeConvNet.object(1, 15)
    net = GenerativeConvNet.object(1, 15, layers=2)
    assert len(net.layers) == 2 and [tuple(w.shape) for w in net.fc_weights] == [(100, 5, 5), (64, 1, 1)]


def test_sigma_is_part_of_the_net_and_of_its_description():
    net = GenerativeConvNet.texture(3, sigma=2.0)
    assert net.config()["sigma"] == 2.0 and GenerativeConvNet.from_config(net.config()).sigma == 2.0
    x = torch.randn(1, 3, 42, 42)
    torch.testing.assert_close(net.energy(x), net.energy(x, 2.0))
    older = {k: v for k, v in net.config().items() if k != "sigma"}  # a file from before the net held it
    assert GenerativeConvNet.from_config(older).sigma == 1.0
    assert GenerativeConvNet.from_config(older, sigma=3.0).sigma == 3.0
    with pytest.raises(ValueError, match="sigma"):
        GenerativeConvNet.texture(3, sigma=0.0)


def test_one_rule_decides_the_sides_a_net_scores():
    from tritongcn.geometry import TEXTURE_LAYERS, receptive_field, size_problem, total_stride

    assert (receptive_field(TEXTURE_LAYERS), total_stride(TEXTURE_LAYERS)) == (33, 3)
    assert size_problem(42, 45, TEXTURE_LAYERS, "periodic") is None
    assert "multiples of 3, got 40x42" in size_problem(40, 42, TEXTURE_LAYERS, "periodic")
    assert "receptive field 33 px" in size_problem(32, 40, TEXTURE_LAYERS, "valid")
    assert size_problem(5, 5, TEXTURE_LAYERS, "zero") is None  # zero padding takes any size
    net = GenerativeConvNet.texture(3)
    with pytest.raises(ValueError, match="multiples of 3, got 40x42"):
        net.check_size((1, 3, 40, 42), "periodic")
    with pytest.raises(ValueError, match="boundary must be one of"):
        size_problem(40, 40, TEXTURE_LAYERS, "mirror")
