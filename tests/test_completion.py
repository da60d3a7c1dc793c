"""Completion and expansion: conditional Langevin dynamics with known pixels held, learning from the known
part of an image, and the `complete` and `expand` commands (torch backend, float32 unless said)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import TINY, TINY_CONFIG, texture_file
from tritongcn.chains import ChainBank
from tritongcn.cli import main
from tritongcn.completion import canvas, complete, surroundings_level, work_region
from tritongcn.config import LearnConfig
from tritongcn.learn import Learner, per_position_score
from tritongcn.model import GenerativeConvNet
from tritongcn.sampler import langevin

F32 = dict(backend="torch", precision="float32")


def _net(channels=3, depth=2, seed=0):
    net = GenerativeConvNet.texture(channels, depth=depth, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for conv in net.convs:  # biases of both signs, so that the activation pattern is mixed
            conv.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed + 1))
    return net


def _hole(h, w, top, left, size):
    unknown = torch.zeros(h, w, dtype=torch.bool)
    unknown[top:top + size, left:left + size] = True
    return unknown


# --- conditional Langevin dynamics ---------------------------------------------------------------------

def test_known_pixels_are_held_and_the_rest_move_as_without_them():
    net, x = _net(), 30 * torch.randn(3, 3, 36, 36)
    mask = ~_hole(36, 36, 9, 12, 15).view(1, 1, 36, 36)
    out = langevin(net, x, 1, 1.0, 1.0, seed=3, boundary="periodic", known=(x, mask), **F32)
    free = langevin(net, x, 1, 1.0, 1.0, seed=3, boundary="periodic", **F32)
    assert torch.equal(out[:, :, mask[0, 0]], x[:, :, mask[0, 0]])
    # The first step's gradient at the unknown pixels is the free chain's: the known ones had their values.
    assert torch.equal(out[:, :, ~mask[0, 0]], free[:, :, ~mask[0, 0]])
    assert not torch.equal(out[:, :, ~mask[0, 0]], x[:, :, ~mask[0, 0]])
    many = langevin(net, x, 4, 1.0, 1.0, seed=3, boundary="periodic", known=(x, mask), **F32)
    assert torch.equal(many[:, :, mask[0, 0]], x[:, :, mask[0, 0]])


def test_noise_free_steps_descend_to_the_piece_mode():
    net, x = _net(), 30 * torch.randn(2, 3, 36, 36)
    out = langevin(net, x, 1, 0.8, 1.5, boundary="periodic", noise=False, **F32)
    grad = net.grad_input(x, boundary="periodic", precision="float32")
    half = 0.5 * 0.8 ** 2
    torch.testing.assert_close(out, x * (1 - half / 1.5 ** 2) + half * grad, rtol=0, atol=1e-5)
    # No noise: the same whatever the seed.
    assert torch.equal(out, langevin(net, x, 1, 0.8, 1.5, seed=9, boundary="periodic", noise=False, **F32))


def test_a_bank_with_known_pixels_gives_the_same_chains_in_any_chunks():
    net = _net()
    image = 30 * torch.randn(1, 3, 36, 36)
    known = ~_hole(36, 36, 3, 3, 20).view(1, 1, 36, 36)
    kwargs = dict(boundary="periodic", seed=2, init="noise", known=(image, known), **F32)
    whole = ChainBank(net, 5, (3, 36, 36), **kwargs)
    chunked = ChainBank(net, 5, (3, 36, 36), memory_budget=1, **kwargs)
    assert chunked.chunk_size == 1
    for bank in (whole, chunked):
        assert torch.equal(bank.x[:, :, known[0, 0]], image.expand(5, -1, -1, -1)[:, :, known[0, 0]])
        bank.advance(3)
        bank.restart([1])
        bank.advance(2)
    assert torch.equal(whole.x, chunked.x)
    assert torch.equal(whole.x[:, :, known[0, 0]], image.expand(5, -1, -1, -1)[:, :, known[0, 0]])
    # Chains differ in the unknown pixels: each draws its own noise.
    assert not torch.equal(whole.x[0], whole.x[2])


def test_a_bank_takes_known_values_per_chain():
    net = _net()
    images = 30 * torch.randn(3, 3, 36, 36)
    known = torch.rand(3, 1, 36, 36) > 0.5
    bank = ChainBank(net, 3, (3, 36, 36), boundary="periodic", init="noise", known=(images, known), **F32)
    bank.advance(2)
    for i in range(3):
        assert torch.equal(bank.x[i][:, known[i, 0]], images[i][:, known[i, 0]])
    with pytest.raises(ValueError, match="do not fit"):
        ChainBank(net, 3, (3, 36, 36), boundary="periodic", known=(images[:2], known[:2]), **F32)


# --- learning from the known part of an image ----------------------------------------------------------

def test_known_positions_are_the_windows_without_an_unknown_pixel():
    net = _net(depth=2)
    unknown = _hole(64, 64, 40, 45, 4)
    maps = net.known_positions(~unknown.view(1, 1, 64, 64))
    assert [tuple(m.shape[-2:]) for m in maps] == [tuple(s[-2:]) for s in net.layer_shapes((1, 3, 64, 64), "valid")]
    got = maps[-1][0, 0]
    field, stride = net.receptive_field(), net.total_stride()
    h = (64 - field) // stride + 1
    expected = torch.tensor([[not unknown[i * stride:i * stride + field, j * stride:j * stride + field].any()
                              for j in range(h)] for i in range(h)])
    assert got.shape == expected.shape and torch.equal(got, expected)
    assert 0 < got.sum() < got.numel()


def _stripes(size):
    """A (1, 3, size, size) mean-free striped texture with noise."""
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    noise = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    wave = 60 * torch.sin(xx * 0.8 + yy * 0.3) + 20 * noise
    return torch.stack([wave, 0.8 * wave, -wave]).unsqueeze(0)


def test_the_data_score_ignores_what_the_unknown_pixels_hold():
    net, x = _net(depth=2), _stripes(72)
    known = ~_hole(72, 72, 30, 40, 6).view(1, 1, 72, 72)
    positions = net.known_positions(known)
    score = per_position_score(net, x, "valid", known=positions)
    scribbled = torch.where(known, x, 200 * torch.randn_like(x))
    assert score == per_position_score(net, scribbled, "valid", known=positions)
    assert score != per_position_score(net, scribbled, "valid")
    everything = [torch.ones_like(p) for p in positions]
    masked, plain = [], []
    torch.testing.assert_close(per_position_score(net, x, "valid", masked, known=everything),
                               per_position_score(net, x, "valid", plain))
    assert masked == pytest.approx(plain)


def test_a_learner_with_a_hole_learns_from_the_rest_only():
    images = _stripes(72) + 128
    known = ~_hole(72, 72, 0, 0, 6).view(1, 1, 72, 72)
    config = LearnConfig(**{**TINY_CONFIG, "image_size": 72}, seed=1)
    learner = Learner.from_images(images, config, known=known)
    torch.testing.assert_close(learner.mean, images[0][:, known[0, 0]].mean(dim=1))
    assert torch.equal(learner.data.images[:, :, ~known[0, 0]], torch.zeros(1, 3, 36))
    scribbled = torch.where(known, images, 255 * torch.rand_like(images))
    other = Learner.from_images(scribbled, config, known=known)
    for a, b in zip(learner.run(), other.run()):  # the hole's content changes nothing
        assert a["f_obs"] == b["f_obs"] and a["f_syn"] == b["f_syn"]


def _cross_power(kernel):
    """(C, C, 64, 64) cross-spectra of the noise a spectrum kernel makes: what it means, whatever basis."""
    spectra = torch.fft.fft2(kernel.double(), s=(64, 64))
    return torch.einsum("ajhw,bjhw->abhw", spectra, spectra.conj()).real


def test_the_spectrum_of_a_holed_image_comes_from_its_known_pixels():
    from tritongcn.starts import spectrum_kernel

    # A periodic texture (white noise blurred on the torus, elongated, with correlated colours): there,
    # pairs of known pixels measure what the periodogram measures.
    noise = torch.randn(3, 96, 96, generator=torch.Generator().manual_seed(3))
    freq = torch.fft.fftfreq(96).abs()
    blur = torch.exp(-(freq.view(-1, 1) / 0.05) ** 2 - (freq.view(1, -1) / 0.15) ** 2)
    fields = torch.fft.ifft2(torch.fft.fft2(noise) * blur).real
    image = 400 * torch.stack([fields[0], 0.6 * fields[0] + 0.4 * fields[1], fields[2] - fields[0]]).unsqueeze(0)
    everything = torch.ones(1, 1, 96, 96, dtype=torch.bool)
    plain = _cross_power(spectrum_kernel(image, window=31))
    allknown = _cross_power(spectrum_kernel(image, window=31, known=everything))
    assert (allknown - plain).norm() < 0.1 * plain.norm()  # 0.07: the periodogram's pairs wrap around
    known = ~_hole(96, 96, 30, 40, 24).view(1, 1, 96, 96)
    holed = spectrum_kernel(image, window=31, known=known)
    scribbled = torch.where(known, image, 300 * torch.rand_like(image))
    assert torch.equal(holed, spectrum_kernel(scribbled, window=31, known=known))  # the hole says nothing
    # Closer to the whole image's spectrum than the periodogram of the image with its hole at the mean.
    zero_filled = _cross_power(spectrum_kernel(torch.where(known, image, image.mean(dim=(2, 3), keepdim=True)),
                                               window=31))
    assert (_cross_power(holed) - plain).norm() < 0.1 * plain.norm()
    assert (zero_filled - plain).norm() > 1.5 * (_cross_power(holed) - plain).norm()


def test_too_little_known_texture_is_refused():
    known = ~_hole(72, 72, 20, 20, 30).view(1, 1, 72, 72)
    with pytest.raises(ValueError, match="too little texture to learn from"):
        Learner.from_images(_stripes(72) + 128, LearnConfig(**{**TINY_CONFIG, "image_size": 72}), known=known)


# --- completion and expansion as functions ---------------------------------------------------------------

def test_the_work_region_reaches_one_receptive_field_around_the_hole():
    net = _net(depth=3)
    region = work_region(_hole(100, 120, 40, 50, 10), net)
    reach = net.receptive_field() - 1
    assert (region.top, region.left) == (40 - reach, 50 - reach)
    assert region.height >= 10 + 2 * reach and region.height % net.total_stride() == 0
    assert region.width >= 10 + 2 * reach and region.width % net.total_stride() == 0


@pytest.mark.parametrize("where", [(30, 40), (0, 0), (88, 110)])  # inside, at a corner, past the far edges
def test_completion_keeps_the_known_pixels_exactly_and_is_reproducible(where):
    net, mean = _net(depth=3), torch.tensor([120.0, 100.0, 90.0])
    image = (torch.rand(3, 100, 120) * 255).round()
    unknown = _hole(100, 120, *where, 12)
    args = dict(mean=mean, steps=3, step_size=1.0, chains=2, init="noise", **F32)
    out = complete(net, image, unknown, seed=4, **args)
    assert out.shape == (2, 3, 100, 120)
    assert torch.equal(out[:, :, ~unknown], image.expand(2, -1, -1, -1)[:, :, ~unknown])
    assert torch.equal(out, complete(net, image, unknown, seed=4, **args))
    assert not torch.equal(out, complete(net, image, unknown, seed=5, **args))
    assert not torch.equal(out[0], out[1]) and out.min() >= 0 and out.max() <= 255


def test_the_surroundings_level_continues_the_known_shading_into_the_hole():
    mean = torch.tensor([128.0])
    flat = torch.full((1, 60, 60), 37.0)
    unknown = _hole(60, 60, 20, 20, 16)
    assert torch.allclose(surroundings_level(flat, ~unknown, mean, blur=5.0), flat, atol=1e-3)
    halves = torch.cat([torch.full((1, 60, 30), 40.0), torch.full((1, 60, 30), 200.0)], dim=2)
    level = surroundings_level(halves, ~_hole(60, 60, 22, 4, 16), mean, blur=5.0)
    assert (level[0, 22:38, 4:16] - 40.0).abs().max() < 1.0  # the dark side's level, not the mean 128
    lonely = torch.zeros(200, 200, dtype=torch.bool)
    lonely[:4, :4] = True  # far from the only known pixels, the mean colour
    level = surroundings_level(torch.full((1, 200, 200), 10.0), lonely, mean, blur=4.0)
    assert level[0, 0, 0] == pytest.approx(10.0, abs=1e-3) and level[0, -1, -1] == pytest.approx(128.0)


def test_a_hole_in_a_dark_part_fills_dark():
    """The chains are centred on the surroundings' level: a model that sees no constant level (zero-mean
    first-layer filters) fills a hole at its surroundings' brightness, not at the image's mean colour."""
    net = _net(channels=1, depth=1)
    with torch.no_grad():
        net.convs[0].weight.sub_(net.convs[0].weight.mean(dim=(1, 2, 3), keepdim=True))
    image = torch.cat([torch.full((1, 96, 48), 40.0), torch.full((1, 96, 48), 220.0)], dim=2)
    unknown = _hole(96, 96, 36, 8, 24)
    out = complete(net, image, unknown, mean=torch.tensor([130.0]), steps=30, step_size=1.0, init="noise", **F32)
    assert abs(out[0, 0, 36:60, 8:32].mean().item() - 40.0) < 10.0


def test_expansion_keeps_the_image_and_a_periodic_one_needs_stride_multiples():
    net, mean = _net(depth=2), torch.full((3,), 128.0)
    image = (torch.rand(3, 20, 30) * 255).round()
    board, unknown = canvas(image, 36, 45, at=(3, 6))
    assert torch.equal(board[:, 6:26, 3:33], image) and unknown.sum() == 36 * 45 - 20 * 30
    for periodic in (False, True):
        out = complete(net, board, unknown, mean=mean, steps=2, step_size=1.0, init="noise", periodic=periodic, **F32)
        assert torch.equal(out[0, :, 6:26, 3:33], image)
    with pytest.raises(ValueError, match="multiples of"):
        complete(net, board[:, :35], unknown[:35], mean=mean, steps=1, step_size=1.0, periodic=True, **F32)
    with pytest.raises(ValueError, match="does not fit"):
        canvas(image, 36, 45, at=(20, 0))
    with pytest.raises(ValueError, match="cannot hold"):
        canvas(image, 10, 45)


def test_completion_refuses_what_it_cannot_do():
    net, mean = _net(), torch.zeros(3)
    image = torch.rand(3, 40, 40) * 255
    args = dict(mean=mean, steps=1, step_size=1.0, **F32)
    with pytest.raises(ValueError, match="nothing to complete"):
        complete(net, image, torch.zeros(40, 40, dtype=torch.bool), **args)
    with pytest.raises(ValueError, match="every pixel is unknown"):
        complete(net, image, torch.ones(40, 40, dtype=torch.bool), **args)
    with pytest.raises(ValueError, match="1-channel image"):
        complete(net, image[:1], _hole(40, 40, 5, 5, 5), **args)


# --- the commands ----------------------------------------------------------------------------------------

def _png(path):
    return np.asarray(Image.open(path))


def _mask_file(path, size, box):
    arr = np.zeros((size, size), dtype=np.uint8)
    top, left, side = box
    arr[top:top + side, left:left + side] = 255
    Image.fromarray(arr, "L").save(path)
    return path


def test_complete_with_a_model_keeps_the_known_pixels_bit_identical(tmp_path, model_path):
    image = texture_file(tmp_path / "tex.png", size=60)
    mask = _mask_file(tmp_path / "mask.png", 60, (20, 25, 14))
    out = tmp_path / "done"
    args = ["complete", str(image), str(model_path), "--mask", str(mask), "--out", str(out), "--chains", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    unknown = _png(mask) > 127
    before, after = _png(image), _png(out / "completed.png")
    assert np.array_equal(after[~unknown], before[~unknown]) and not np.array_equal(after, before)
    assert np.array_equal(_png(out / "mask.png") > 127, unknown)
    assert np.array_equal(_png(out / "completions" / "00000.png"), after)
    assert not np.array_equal(_png(out / "completions" / "00001.png"), after)
    assert (out / "before_after.png").exists()
    info = json.loads((out / "complete.json").read_text())
    assert info["unknown_pixels"] == unknown.sum() and info["chains"] == 2
    again = CliRunner().invoke(main, args[:-2] + ["--out", str(tmp_path / "again"), "--chains", "2"])
    assert again.exit_code == 0, again.output
    assert np.array_equal(_png(tmp_path / "again" / "completed.png"), after)  # same seed, same completion
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "--overwrite" in refused.output


def test_complete_learns_from_the_known_pixels_when_no_model_is_given(tmp_path):
    from tritongcn.runs.completion import CompleteRun, FillSettings, complete as run_complete

    image = texture_file(tmp_path / "tex.png", size=80)
    settings = FillSettings(learn_settings=dict(layers=2, sample_size=36, chains=2, iterations=2, langevin_steps=2,
                                                sample_steps=3, finish_iterations=0))
    out = run_complete(CompleteRun(image, tmp_path / "out", hole=(10, 12, 9, 9), settings=settings),
                       _quiet_reporter())
    assert (out / "model" / "model.pt").exists() and (out / "completed.png").exists()
    before, after = _png(image), _png(out / "completed.png")
    unknown = np.zeros((80, 80), dtype=bool)
    unknown[12:21, 10:19] = True
    assert np.array_equal(after[~unknown], before[~unknown]) and not np.array_equal(after, before)
    learned = torch.load(out / "model" / "model.pt", weights_only=True)
    assert learned["config"]["image_size"] == 80  # the whole image at its own size, not a 224 px crop
    assert learned["config"]["shading"] == "flatten"  # the fill's shading comes from the surroundings


def test_a_runaway_around_a_hole_is_told_the_fill_commands_options():
    from tritongcn.runs.completion import fill_runaway_advice

    assert fill_runaway_advice(152).startswith("--image-size 224 or a MODEL learned by `tritongcn learn`")
    assert fill_runaway_advice(600).startswith("a MODEL learned by")  # already larger than learn's size
    assert "--temperature" not in fill_runaway_advice(152)  # not an option of complete and expand


def _quiet_reporter():
    from tritongcn.runs import Reporter

    return Reporter(say=lambda message: None, warn=lambda message: None)


def test_expand_grows_the_image_and_tiles_when_periodic(tmp_path, model_path):
    image = texture_file(tmp_path / "tex.png", size=40)
    out = tmp_path / "grown"
    result = CliRunner().invoke(main, ["expand", str(image), str(model_path), "--size", "70x50", "--at", "5,4",
                                       "--tile", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "expanding to 72x51" in result.output  # rounded up to the net's stride of 3
    grown = _png(out / "expanded.png")
    assert grown.shape == (51, 72, 3) and np.array_equal(grown[4:44, 5:45], _png(image))
    assert _png(out / "tiled.png").shape == (102, 144, 3)
    assert json.loads((out / "expand.json").read_text())["size"] == [72, 51]


def _one_line_error(result, words):
    lines = result.output.strip().splitlines()
    assert result.exit_code in (1, 2), result.output
    assert any(words in line for line in lines), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", ["mask_size", "all_known", "all_unknown", "both", "neither", "hole_outside",
                                  "channels", "too_small_canvas", "outside_canvas", "outside_canvas_no_model"])
def test_bad_completion_input_gets_one_line_and_nothing_written(tmp_path, model_path, case):
    image = texture_file(tmp_path / "tex.png", size=60)
    gray = texture_file(tmp_path / "gray.png", size=60, colour=False)
    out = tmp_path / "out"
    common = ["--out", str(out)]
    cases = {
        "mask_size": (["complete", str(image), str(model_path), "--mask",
                       str(_mask_file(tmp_path / "m1.png", 50, (5, 5, 5)))], "must be the same size"),
        "all_known": (["complete", str(image), str(model_path), "--mask",
                       str(_mask_file(tmp_path / "m2.png", 60, (0, 0, 0)))], "marks no pixel"),
        "all_unknown": (["complete", str(image), str(model_path), "--mask",
                         str(_mask_file(tmp_path / "m3.png", 60, (0, 0, 60)))], "every pixel"),
        "both": (["complete", str(image), "--hole", "1,1,5,5", "--mask", str(image)], "one of them"),
        "neither": (["complete", str(image), str(model_path)], "one of them"),
        "hole_outside": (["complete", str(image), str(model_path), "--hole", "50,50,20,20"], "does not lie inside"),
        "channels": (["complete", str(gray), str(model_path), "--hole", "5,5,9,9"], "grayscale or both colour"),
        "too_small_canvas": (["expand", str(image), str(model_path), "--size", "50x80"], "smaller than the image"),
        "outside_canvas": (["expand", str(image), str(model_path), "--size", "80", "--at", "30,0"], "does not fit"),
        # refused before a model is learned for it
        "outside_canvas_no_model": (["expand", str(image), "--size", "80", "--at", "30,0"], "does not fit"),
    }
    args, words = cases[case]
    _one_line_error(CliRunner().invoke(main, args + common), words)
    assert not out.exists()


def test_learn_with_a_mask_refuses_a_folder_and_learns_from_one_image(tmp_path):
    image = texture_file(tmp_path / "tex.png", size=80)
    mask = _mask_file(tmp_path / "mask.png", 80, (0, 0, 8))
    out = tmp_path / "run"
    tiny = [*TINY, "--image-size", "80", "--layers", "2"]
    result = CliRunner().invoke(main, ["learn", str(image), "--mask", str(mask), "--out", str(out), *tiny])
    assert result.exit_code == 0, result.output
    assert (out / "model.pt").exists() and not (out / "eval.json").exists()
    folder = tmp_path / "many"
    folder.mkdir()
    texture_file(folder / "a.png", size=80)
    texture_file(folder / "b.png", size=80)
    refused = CliRunner().invoke(main, ["learn", str(folder), "--mask", str(mask), "--out", str(tmp_path / "x"),
                                        *tiny])
    _one_line_error(refused, "one image")


def test_expand_compares_the_models_scale_with_the_image_not_the_canvas(model_path, tmp_path):
    # The model learned at 40 px; the image is 40 px and the canvas 80: no note about another scale.
    image = texture_file(tmp_path / "tex.png", size=40)
    result = CliRunner().invoke(main, ["expand", str(image), str(model_path), "--size", "80", "--steps", "1",
                                       "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert "learned its texture from" not in result.output
    result = CliRunner().invoke(main, ["expand", str(image), str(model_path), "--size", "120", "--steps", "1",
                                       "--image-size", "80", "--out", str(tmp_path / "f")])
    assert result.exit_code == 0 and "learned its texture from 40 px images and this image is 80 px" in result.output
