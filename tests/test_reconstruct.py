import json

from click.testing import CliRunner
from PIL import Image

from conftest import texture_file
from tritongcn.cli import main


def test_reconstruct_writes_each_image_beside_its_reconstruction_and_mode(model_path, tmp_path):
    images = [texture_file(tmp_path / "a.png"), texture_file(tmp_path / "b.png", size=56)]
    out = tmp_path / "rec"
    result = CliRunner().invoke(main, ["reconstruct", str(model_path), *map(str, images), "--out", str(out),
                                       "--mode", "--steps", "30"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "reconstruct.json").read_text())
    assert [e["file"] for e in report["images"]] == [str(p) for p in images]
    for entry in report["images"]:
        # The descent ends nearer a mode (an image that reconstructs itself) than the image started.
        assert entry["mode_residual"] < entry["reconstruction_error"] < 10
        with Image.open(out / entry["output"]) as im:  # image | reconstruction | mode, side by side, titled
            assert im.width >= 3 * 40 and im.height > 40
        assert entry["mode_reached"] == (entry["mode_residual"] < 1e-6)
    assert "reconstruction error" in result.output and "over 2 images" in result.output
    # 30 steps reach no mode of this tiny model: said in words, with what to do.
    assert "no mode reached in 30 steps" in result.output and "more --steps" in result.output

    # An earlier result is never replaced silently.
    again = CliRunner().invoke(main, ["reconstruct", str(model_path), str(images[0]), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_reconstruct_refuses_bad_input_in_one_line(model_path, tmp_path):
    grey = texture_file(tmp_path / "grey.png", colour=False)  # the model was learned on colour
    (tmp_path / "empty").mkdir()
    for args, message in [([str(tmp_path / "missing.png")], "no such file"),
                          ([str(tmp_path / "empty")], "no PNG or JPEG"),
                          ([str(grey)], "grayscale image")]:
        result = CliRunner().invoke(main, ["reconstruct", str(model_path), *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_reconstruct_uses_the_layers_the_model_learned(tmp_path):
    # A two-layer run: the third layer keeps its random initial weights and must stay off.
    from conftest import TINY
    image = texture_file(tmp_path / "tex.png")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(run), *TINY, "--layers", "2"])
    assert result.exit_code == 0, result.output
    import torch
    from tritongcn import GenerativeConvNet
    from tritongcn.autoencoder import reconstruct, reconstruction_error
    from tritongcn.images import load_image, preprocess
    state = torch.load(run / "model.pt", weights_only=True)
    net = GenerativeConvNet.from_config(state["model_config"])
    net.load_state_dict(state["model"])
    assert net.depth == 2
    x = preprocess(load_image(image), 40).unsqueeze(0) - state["mean"].view(1, -1, 1, 1)
    expected = reconstruction_error(x, reconstruct(net, x, 1.0, "valid")).item()
    result = CliRunner().invoke(main, ["reconstruct", str(run / "model.pt"), str(image), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "reconstruct.json").read_text())
    assert abs(report["images"][0]["reconstruction_error"] - expected) < 1e-4
