import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tritongcn.cli import main
from tritongcn.evaluate import evaluate, patch_swd, random_phase_noise, white_noise


def texture_file(size, seed):
    """Sparse bright blobs with sharp edges on a dark ground, in colour: far from Gaussian, so the
    random-phase model (which keeps only the spectrum) misses its look, as it does for real textures."""
    g = torch.Generator().manual_seed(seed)
    field = torch.nn.functional.avg_pool2d(torch.randn(1, 1, size + 4, size + 4, generator=g), 5, 1)[0, 0]
    blobs = (field > 0.1).double()
    base = 40 + 170 * blobs + 3 * torch.randn(size, size, generator=g, dtype=torch.float64)
    return torch.stack([base, 0.6 * base + 30, 255 - base]).clamp(0, 255)


def test_random_phase_noise_keeps_the_spectrum_and_mean():
    tex = texture_file(64, 0)
    noise = random_phase_noise(tex, 3, torch.Generator().manual_seed(1))
    assert noise.shape == (3, 3, 64, 64)
    torch.testing.assert_close(noise.mean(dim=(2, 3)), tex.mean(dim=(1, 2)).expand(3, 3))
    amp = torch.fft.fft2(tex - tex.mean(dim=(1, 2), keepdim=True)).abs()
    torch.testing.assert_close(torch.fft.fft2(noise[0] - noise[0].mean(dim=(1, 2), keepdim=True)).abs(), amp)
    assert not torch.allclose(noise[0], tex)


def test_patch_swd_grows_with_the_difference_between_the_sets():
    tex = texture_file(96, 0).unsqueeze(0)
    same = patch_swd(tex, tex)  # not 0: the two sides draw different random patches
    darker = [patch_swd(tex, tex * factor) for factor in (0.9, 0.7, 0.5)]
    assert same < darker[0] < darker[1] < darker[2]


def test_the_metrics_rank_real_texture_above_random_phase_above_white_noise():
    tex = texture_file(160, 0)
    samples = texture_file(160, 1).unsqueeze(0)  # a new piece of the same texture, not seen by the evaluation
    phase = random_phase_noise(tex, 1, torch.Generator().manual_seed(5))
    white = white_noise(tex, 1, torch.Generator().manual_seed(5))
    score = {name: evaluate(tex, s, crop=64, crops=24, use_ps=False)["samples"]["patch_swd"]
             for name, s in (("real", samples), ("phase", phase), ("white", white))}
    assert score["real"] < score["phase"] < score["white"]
    # The references the evaluation prints keep the same order.
    ref = evaluate(tex, samples, crop=64, crops=24, use_ps=False)
    assert ref["real_crops"]["patch_swd"] < ref["random_phase"]["patch_swd"] < ref["white_noise"]["patch_swd"]


def test_portilla_simoncelli_ranks_the_same_way():
    pytest.importorskip("plenoptic", reason="the eval extra (plenoptic) is not installed")
    tex = texture_file(160, 0)
    samples = texture_file(160, 1).unsqueeze(0)
    phase = random_phase_noise(tex, 1, torch.Generator().manual_seed(5))
    white = white_noise(tex, 1, torch.Generator().manual_seed(5))
    z = {name: evaluate(tex, s, crop=64, crops=16, use_ps=True)["samples"]["ps_z"]
         for name, s in (("real", samples), ("phase", phase), ("white", white))}
    assert z["real"] < z["phase"] < z["white"]


def test_eval_command_prints_a_table_and_json(tmp_path):
    tex = texture_file(128, 0)
    Image.fromarray(tex.permute(1, 2, 0).round().byte().numpy(), "RGB").save(tmp_path / "tex.png")
    (tmp_path / "samples").mkdir()
    other = texture_file(128, 1)
    for i in range(2):
        crop = other[:, i * 48:i * 48 + 64, :64].permute(1, 2, 0).round().byte().numpy()
        Image.fromarray(crop, "RGB").save(tmp_path / "samples" / f"{i}.png")
    args = ["eval", str(tmp_path / "tex.png"), str(tmp_path / "samples"), "--image-size", "128",
            "--crops", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "real_crops" in result.output and "random_phase" in result.output and "white_noise" in result.output
    result = CliRunner().invoke(main, args + ["--json"])
    figures = __import__("json").loads(result.stdout)  # the progress line goes to standard error
    assert figures["samples_evaluated"] == 2 and figures["crop"] == 64
    assert figures["real_crops"]["patch_swd"] < figures["white_noise"]["patch_swd"]


def test_eval_refuses_mismatched_inputs(tmp_path):
    Image.fromarray(np.zeros((128, 128, 3), np.uint8) + 90, "RGB").save(tmp_path / "tex.png")
    Image.fromarray(np.zeros((64, 64), np.uint8), "L").save(tmp_path / "gray.png")
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "tex.png"), str(tmp_path / "gray.png")])
    assert result.exit_code == 1 and "grayscale" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "tex.png"), str(tmp_path / "nothing.png")])
    assert result.exit_code == 1 and "no such file" in result.output


def test_a_result_without_ps_z_says_why(monkeypatch):
    import tritongcn.evaluate as evaluate_module

    tex = texture_file(96, 0)
    monkeypatch.setattr(evaluate_module, "portilla_simoncelli_available", lambda: False)
    result = evaluate(tex, texture_file(96, 1).unsqueeze(0), crop=32, crops=4)
    assert "plenoptic" in result["ps_z"] and "tritongcn[eval]" in result["ps_z"]
    assert "ps_z" not in result["samples"] and result["samples"]["patch_swd"] > 0
