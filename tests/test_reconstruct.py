import json

from click.testing import CliRunner
from PIL import Image

from test_cli import _texture
from tritongcn.cli import main


def test_reconstruct_writes_each_image_beside_its_reconstruction_and_mode(model_path, tmp_path):
    images = [_texture(tmp_path / "a.png"), _texture(tmp_path / "b.png", size=56)]
    out = tmp_path / "rec"
    result = CliRunner().invoke(main, ["reconstruct", str(model_path), *map(str, images), "--out", str(out),
                                       "--mode", "--steps", "30"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "reconstruct.json").read_text())
    assert [e["file"] for e in report["images"]] == [str(p) for p in images]
    for entry in report["images"]:
        assert 0 < entry["reconstruction_error"] < 10 and entry["mode_residual"] >= 0
        with Image.open(out / entry["output"]) as im:  # image | reconstruction | mode, side by side
            assert im.width > 3 * im.height - 20
    assert "reconstruction error" in result.output

    # An earlier result is never replaced silently.
    again = CliRunner().invoke(main, ["reconstruct", str(model_path), str(images[0]), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_reconstruct_refuses_bad_input_in_one_line(model_path, tmp_path):
    grey = _texture(tmp_path / "grey.png", colour=False)  # the model was learned on colour
    (tmp_path / "empty").mkdir()
    for args, message in [([str(tmp_path / "missing.png")], "no such file"),
                          ([str(tmp_path / "empty")], "no PNG or JPEG"),
                          ([str(grey)], "grayscale image")]:
        result = CliRunner().invoke(main, ["reconstruct", str(model_path), *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # nothing half-written
