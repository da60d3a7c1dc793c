import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import TINY, texture_file
from tritongcn import __version__
from tritongcn.cli import main

def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("colour,mode", [(True, "RGB"), (False, "L")])
def test_tiny_learn_writes_every_output(tmp_path, colour, mode):
    image = texture_file(tmp_path / "tex.png", colour=colour)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    # Not a terminal: plain progress lines, the last at 100 % (3 layers grown, 2 iterations each), and
    # the time it all took.
    assert "learning (" in result.output and "6/6 (100%)" in result.output and "done in" in result.output

    # Four new samples of the learned model at --sample-size, not the learning chains.
    samples = sorted((out / "samples").iterdir())
    assert [p.name for p in samples] == [f"{i:05d}.png" for i in range(4)]
    with Image.open(samples[0]) as im:
        assert im.mode == mode and im.size == (36, 36)
    with Image.open(out / "chains.png") as im:  # the learning chains: 3 of 33 px, the receptive field
        assert im.mode == mode and im.width > 2 * 33
    assert not (out / "preview.png").exists()
    with Image.open(out / "grid.png") as im:
        # The training image, then two panels of 2 x 2 cells of 36 px: samples and real crops.
        assert im.mode == mode and im.width > 40 + 2 * (2 * 36) and im.height >= 40
    with Image.open(out / "learning_curve.png") as im:
        assert im.size[0] >= 600
    with Image.open(out / "filters.png") as im:  # the first layer's filters, each in its channels
        assert im.mode == mode and im.width > 15 * 4 and im.height > 15 * 4

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["layer"] for r in records] == [1, 1, 2, 2, 3, 3]  # grown one at a time
    for r in records:
        assert {"layer", "iteration", "f_obs", "f_syn", "gap", "grad_norm", "seconds"} <= set(r)
        assert r["gap"] == pytest.approx(r["f_obs"] - r["f_syn"], rel=1e-5, abs=1e-6)
        # The share of active units of each grown layer, for the data and for the chains.
        assert len(r["active_obs"]) == len(r["active_syn"]) == r["layer"]
        assert all(0 <= a <= 1 for a in r["active_obs"] + r["active_syn"])

    state = torch.load(out / "model.pt", weights_only=True)
    assert state["version"] == __version__
    assert state["config"]["chains"] == 3 and state["chains"].shape == (3, 1 if not colour else 3, 33, 33)
    assert state["start_kernel"].shape[:2] == ((1, 1) if not colour else (3, 3))
    assert {"model", "optimizer", "model_config", "mean"} <= set(state)
    assert state["model"]["convs.0.weight"].shape == (100, 1 if not colour else 3, 15, 15)


def _assert_clean_failure(result, out, *words):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.output.strip().splitlines()
    assert len(message) == 1, result.output
    for word in words:
        assert word in message[0]
    assert not out.exists()  # nothing half-written


def test_missing_path(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(tmp_path / "nope.png"), "--out", str(out)])
    _assert_clean_failure(result, out, "no such file")


def test_not_an_image(tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not a picture")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(bogus), "--out", str(out)])
    _assert_clean_failure(result, out, "not an image")


def test_image_smaller_than_receptive_field(tmp_path):
    small = texture_file(tmp_path / "small.png", size=30)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(small), "--out", str(out)])
    _assert_clean_failure(result, out, "receptive field", "30x30")
    # With one layer the receptive field is 15 px, so the same image is accepted.
    result = CliRunner().invoke(main, ["learn", str(small), "--out", str(out), "--layers", "1", *TINY])
    assert result.exit_code == 0, result.output


def test_learn_with_the_fourth_texture_layer_and_sample_it(tmp_path):
    image = texture_file(tmp_path / "tex.png", size=48)
    out = tmp_path / "run"
    tiny = [*TINY, "--image-size", "48", "--sample-size", "48"]  # the four layers see 45 px
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), "--layers", "4", *tiny])
    assert result.exit_code == 0, result.output
    state = torch.load(out / "model.pt", weights_only=True)
    assert len(state["model_config"]["layers"]) == 4 and state["model_config"]["depth"] == 4
    assert state["model"]["convs.3.weight"].shape == (30, 30, 5, 5)
    assert {json.loads(line)["layer"] for line in (out / "metrics.jsonl").read_text().splitlines()} == {1, 2, 3, 4}
    result = CliRunner().invoke(main, ["sample", str(out / "model.pt"), "--chains", "2", "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "samples-48" / "samples").iterdir())) == 2
    # Smaller than what four layers see: refused before any learning, with the fix.
    result = CliRunner().invoke(main, ["learn", str(texture_file(tmp_path / "small.png", size=40)), "--out",
                                       str(tmp_path / "r2"), "--layers", "4", *TINY])
    _assert_clean_failure(result, tmp_path / "r2", "receptive field", "fewer --layers")
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(tmp_path / "r3"), "--model", "object",
                                       "--layers", "4", *TINY])
    assert result.exit_code == 2 and "Traceback" not in result.output  # a usage error, named
    assert "Invalid value for --layers: the object net has at most 3 layers" in result.output
    assert not (tmp_path / "r3").exists()


def test_an_earlier_run_is_not_overwritten_unless_asked(model_path, tmp_path):
    import shutil

    image = model_path.parent.parent / "tex.png"  # a copy of the session's TINY learn run, to overwrite
    out = tmp_path / "run"
    shutil.copytree(model_path.parent, out)
    before = (out / "model.pt").read_bytes()
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *TINY, "--seed", "1"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert (out / "model.pt").read_bytes() == before
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *TINY, "--seed", "1",
                                       "--overwrite"])
    assert result.exit_code == 0 and (out / "model.pt").read_bytes() != before


def test_learn_flattens_the_shading_when_asked(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *TINY, "--shading", "flatten"])
    assert result.exit_code == 0, result.output
    assert "the images' shading flattened" in result.output  # the recipe's line says so
    assert torch.load(out / "model.pt", weights_only=True)["config"]["shading"] == "flatten"


def test_learn_says_when_it_flattens_a_photo_that_is_more_light_than_texture(tmp_path):
    rng = np.random.default_rng(0)
    light = np.linspace(20, 235, 48)[None, :] + rng.normal(0, 8, (48, 48))  # a slope with a little grain
    image = tmp_path / "lit.png"
    Image.fromarray(np.clip(light, 0, 255).astype(np.uint8), "L").save(image)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "the light's slope across the image holds" in result.output and "--shading keep" in result.output
    assert torch.load(out / "model.pt", weights_only=True)["config"]["shading"] == "flatten"


def test_periodic_sample_size_must_fit_the_stride(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    args = ["learn", str(image), "--out", str(out), *TINY, "--sample-size", "40"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "multiples of 3, got 40x40" in result.output and "(try 42)" in result.output
    assert not out.exists()
    result = CliRunner().invoke(main, args + ["--zero-padding"])  # the release geometry takes any size
    assert result.exit_code == 0, result.output
    with Image.open(out / "samples" / "00000.png") as im:
        assert im.size == (40, 40)


def test_samples_default_to_the_training_images_size(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    args = [a for a in TINY if a not in ("--sample-size", "36")]
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    with Image.open(out / "samples" / "00000.png") as im:
        assert im.size == (42, 42)  # --image-size 40 rounded up to the texture net's stride 3


@pytest.mark.parametrize("option,value", [("--chains", "0"), ("--step-size", "-0.3"), ("--sigma", "nan"),
                                          ("--lr", "0"), ("--iterations", "-1"), ("--sample-size", "0")])
def test_nonsense_options_are_usage_errors(tmp_path, option, value):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), option, value])
    assert result.exit_code == 2 and option in result.output
    assert not out.exists()


def test_output_folder_that_cannot_be_made(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(blocker / "sub"), *TINY])
    _assert_clean_failure(result, blocker / "sub", "cannot create the output folder")


def test_nan_pixels_are_refused(tmp_path):
    path = tmp_path / "nan.tif"
    arr = np.full((48, 48), 0.5, dtype=np.float32)
    arr[5, 5] = np.nan
    Image.fromarray(arr, mode="F").save(path)
    out = tmp_path / "run"
    _assert_clean_failure(CliRunner().invoke(main, ["learn", str(path), "--out", str(out)]), out, "NaN")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 48 x 48 image is then over twice the limit
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    _assert_clean_failure(CliRunner().invoke(main, ["learn", str(image), "--out", str(out)]), out, "safety limit")


def test_a_device_that_cannot_run_is_a_usage_error(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), "--device", "meta"])
    assert result.exit_code == 2 and "--device" in result.output and not out.exists()


def test_divergence_stops_with_a_one_line_message(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    # A learning rate of 1e30 moves the weights by up to 2e31 per step (the clipped gradient's largest entry
    # is 20): the scores overflow within a few iterations.
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *TINY, "--lr", "1e30",
                                       "--iterations", "6"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "diverged" in errors[0] and "--lr" in errors[0]
    assert not (out / "model.pt").exists()


def test_the_model_file_loads_and_foreign_files_are_refused(model_path, tmp_path):
    from tritongcn.checkpoints import load_checkpoint
    from tritongcn.io import InputError

    state = load_checkpoint(model_path)  # the session's TINY learn run
    assert state["format"] == "tritongcn.model" and state["layer"] == 3
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    for name in ("other.pt", "junk.pt", "missing.pt"):
        with pytest.raises(InputError):
            load_checkpoint(tmp_path / name)


def test_learn_scores_its_samples_into_eval_json(tmp_path):
    image = texture_file(tmp_path / "tex.png", size=64)
    out = tmp_path / "run"
    args = ["learn", str(image), "--out", str(out), "--image-size", "64", "--sample-size", "36",
            "--chains", "2", "--iterations", "1", "--langevin-steps", "1", "--sample-steps", "1", "--finish", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "eval.json").read_text())
    assert figures["crop"] == 32  # the samples' 36 px and half the 64 px image, down to a multiple of 8
    for name in ("samples", "learning_chains", "real_crops", "random_phase", "white_noise"):
        assert figures[name]["patch_swd"] > 0
    assert figures["real_crops"]["patch_swd"] < figures["white_noise"]["patch_swd"]
    assert "eval, samples: patch_swd" in result.output and "eval, learning chains: patch_swd" in result.output


def test_learn_from_a_folder_by_contrastive_divergence(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        texture_file(folder / f"{i}.png", size=48 + 4 * i)
    (folder / "notes.txt").write_text("not an image: skipped")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(folder), "--out", str(out), "--cd", "1", "--zero-padding",
                                       "--image-size", "40", "--iterations", "3", "--layers", "2"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["layer"] == 2 and "reconstruction_error" in r for r in records)
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["config"]["cd_steps"] == 1 and state["chains"].shape == (3, 3, 40, 40)
    assert len(list((out / "samples").iterdir())) == 3 and (out / "grid.png").exists()
    assert not (out / "eval.json").exists() and "single training image" in result.output

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["learn", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1 and "without PNG or JPEG" in result.output


def test_learn_and_sample_the_object_model_on_aligned_images(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:25j, -1:1:25j]
    for i in range(4):
        face = 200 * np.exp(-3 * (xx**2 + yy**2)) + rng.normal(0, 10, (25, 25))
        Image.fromarray(np.clip(face, 0, 255).astype(np.uint8), "L").save(folder / f"{i}.png")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(folder), "--model", "object", "--out", str(out),
                                       "--iterations", "2", "--chains", "2", "--langevin-steps", "2"])
    assert result.exit_code == 0, result.output
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["model_config"]["top"] == "fc" and state["model_config"]["image_size"] == 25
    assert state["config"]["model"] == "object" and state["chains"].shape == (2, 1, 25, 25)
    with Image.open(out / "samples" / "00000.png") as im:
        assert im.size == (25, 25)

    samples = tmp_path / "samples"
    result = CliRunner().invoke(main, ["sample", str(out / "model.pt"), "--chains", "3", "--steps", "2",
                                       "--out", str(samples)])
    assert result.exit_code == 0, result.output
    with Image.open(samples / "samples" / "00000.png") as im:
        assert im.size == (25, 25)
    result = CliRunner().invoke(main, ["sample", str(out / "model.pt"), "--size", "30", "--out",
                                       str(tmp_path / "s2")])
    assert result.exit_code == 1 and "25 px" in result.output


def test_learn_ends_with_its_finish_and_says_so(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *TINY, "--layers", "1",
                                       "--finish", "4"])
    assert result.exit_code == 0, result.output
    assert "then 4 updates on new chains, 30 steps each" in result.output
    assert "finish 4/4" in result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["finishing"] for r in records] == [False] * 2 + [True] * 4
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["config"]["finish_iterations"] == 4 and state["chains"].shape == (3, 3, 21, 21)
