"""Bad input gets a one-line error naming the problem, exit code 1 or 2, no traceback, nothing written."""

import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import TINY, texture_file
from tritongcn.cli import main


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb(path):
    """A 60-byte PNG that declares 100000 x 100000 pixels (10 gigapixels)."""
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))


def _truncated(path, fmt):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "missing": (lambda p: None, "no such file"),
    "empty": (lambda p: p.write_bytes(b""), "not an image"),
    "text": (lambda p: p.write_text("GIF89a? no, just words"), "not an image"),
    "truncated_png": (lambda p: _truncated(p, "PNG"), "unreadable image"),
    "truncated_jpeg": (lambda p: _truncated(p, "JPEG"), "unreadable image"),
    "bomb": (_bomb, "safety limit"),
    "constant": (lambda p: Image.new("RGB", (48, 48), (90, 90, 90)).save(p, format="PNG"), "constant image"),
    "solid_colour": (lambda p: Image.new("RGB", (48, 48), (200, 100, 50)).save(p, format="PNG"), "constant image"),
    "tiny": (lambda p: texture_file(p, size=20), "smaller than the net's receptive field"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_image_files_are_refused_in_one_line(tmp_path, kind):
    make, words = BAD_FILES[kind]
    path = tmp_path / f"{kind}.png"
    make(path)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(path), "--out", str(out), *TINY])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], result.output
    assert str(path.name) in lines[0] and not out.exists()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "I;16"])
def test_other_image_modes_are_learned_from(tmp_path, mode):
    rgb = Image.open(texture_file(tmp_path / "rgb.png"))
    if mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    elif mode in ("RGBA", "LA"):
        image = rgb.convert(mode)
        alpha = np.full(image.size[::-1], 255, dtype=np.uint8)
        alpha[:, :12] = 0  # a transparent band
        image.putalpha(Image.fromarray(alpha))
    else:
        image = rgb.convert(mode)
    path = tmp_path / ("tex.tif" if mode == "CMYK" else "tex.png")
    image.save(path)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(path), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    if mode in ("RGBA", "LA"):
        assert "alpha channel is ignored (25% of the pixels are not opaque" in result.output
    else:
        assert "alpha" not in result.output
    channels = 1 if mode in ("LA", "I;16") else 3
    with Image.open(out / "samples" / "00000.png") as im:
        assert len(im.getbands()) == channels


@pytest.mark.parametrize("option,value", [
    ("--chains", "-2"), ("--langevin-steps", "0"), ("--step-size", "nan"), ("--step-size", "inf"),
    ("--sigma", "0"), ("--sigma", "-1"), ("--temperature", "0"), ("--image-size", "0"), ("--sample-size", "-3"), ("--lr", "nan"),
    ("--iterations", "0"), ("--layers", "5"), ("--checkpoint-every", "0"), ("--seed", "-1")])
def test_nonsense_learn_options_are_usage_errors(tmp_path, option, value):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), option, value])
    assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("option,value", [
    ("--chains", "0"), ("--steps", "-1"), ("--size", "0"), ("--step-size", "nan"), ("--step-size", "-0.1"),
    ("--memory-budget", "-1G"), ("--memory-budget", "lots"), ("--save-every", "0"), ("--gif", "-1")])
def test_nonsense_sample_options_are_usage_errors(model_path, tmp_path, option, value):
    out = tmp_path / "s"
    result = CliRunner().invoke(main, ["sample", str(model_path), "--out", str(out), option, value])
    assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output
    assert not out.exists()
