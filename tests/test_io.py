import numpy as np
import pytest
import torch
from PIL import Image

from tritongcn.figures import draw_learning_curve, make_grid
from tritongcn.images import load_image, preprocess
from tritongcn.io import InputError


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3), ("RGBA", 3), ("P", 3), ("CMYK", 3),
                                           ("LA", 1), ("I;16", 1)])
def test_load_image_modes(tmp_path, mode, channels):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        im = Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16))
    else:
        im = rgb.convert(mode)
    path = tmp_path / ("a.tif" if mode == "CMYK" else "a.png")
    im.save(path)
    arr = load_image(path)
    assert arr.shape == (20, 30, channels) and arr.dtype == np.float32
    assert 0 <= arr.min() and arr.max() <= 255


def test_sixteen_bit_uses_the_full_range(tmp_path):
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png")[0, :, 0].tolist() == [0.0, 255.0]


def test_truncated_and_empty_files_are_input_errors(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8) + 100).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("cut.png", "empty.png"):
        with pytest.raises(InputError):
            load_image(tmp_path / name)


def test_preprocess_resizes_the_shorter_side_and_crops_the_centre():
    image = np.zeros((40, 80, 1), dtype=np.float32)
    image[:, 30:50] = 255  # a bar in the middle columns
    out = preprocess(image, 20)
    assert out.shape == (1, 20, 20)
    # 80 columns become 40; the centred 20 keep columns 10..29, where the bar (15..24) lies in the middle.
    assert out[0, 10, 10] > 200 and out[0, 10, 0] < 50


def test_grid_and_learning_curve(tmp_path):
    grid = make_grid(torch.full((3, 50, 50), 128.0), torch.rand(5, 3, 20, 20) * 255)
    assert grid.mode == "RGB" and grid.width > 50 + 3 * 20 and grid.height >= 50
    records = [{"layer": 1 + i // 10, "gap": float(np.sin(i)), "grad_norm": 10.0 ** (i % 4)} for i in range(30)]
    draw_learning_curve(records, tmp_path / "curve.png")
    with Image.open(tmp_path / "curve.png") as im:
        pixels = np.asarray(im)
    # Both curves were drawn: red-ish (gap) and blue-ish (gradient norm) pixels exist.
    assert ((pixels[..., 0] > 150) & (pixels[..., 2] < 80)).any()
    assert ((pixels[..., 2] > 150) & (pixels[..., 0] < 80)).any()


def test_filter_sheet_shows_each_filter_at_full_contrast_around_grey():
    from tritongcn.figures import filter_sheet
    weight = torch.zeros(4, 3, 5, 5)
    weight[0, 0, 2, 2] = 1e-3  # a tiny filter still reaches white
    weight[1, 1, 0, 0] = -7.0  # and a large negative one black
    sheet = np.asarray(filter_sheet(weight, scale=2))
    assert sheet.shape == (2 + 2 * (10 + 2), 2 + 2 * (10 + 2), 3)  # 2 x 2 filters of 10 px, 2 px gaps
    first = sheet[2:12, 2:12]
    assert first[4:6, 4:6, 0].min() == 255 and first[0, 0, 0] in (127, 128)
    second = sheet[2:12, 14:24]
    assert second[0:2, 0:2, 1].max() == 0
