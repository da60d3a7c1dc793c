"""The copy check: normalised cross-correlation against a brute-force reference, and its verdict on
photos shifted (copies) against new pieces of the same texture."""

import torch
from click.testing import CliRunner
from PIL import Image

from test_evaluate import texture_file
from tritongcn.cli import main
from tritongcn.copycheck import best_matches, copy_check, copy_line
from tritongcn.evaluate import evaluate, random_phase_noise


def brute_force_best(patch: torch.Tensor, image: torch.Tensor) -> float:
    """The largest NCC of one (C, P, P) patch with every window of a (C, H, W) image, window by window."""
    p = patch.shape[-1]
    a = patch - patch.mean(dim=(1, 2), keepdim=True)
    best = -1.0
    for top in range(image.shape[1] - p + 1):
        for left in range(image.shape[2] - p + 1):
            b = image[:, top:top + p, left:left + p]
            b = b - b.mean(dim=(1, 2), keepdim=True)
            best = max(best, ((a * b).sum() / (a.norm() * b.norm())).item())
    return best


def test_best_matches_agree_with_the_brute_force_ncc():
    g = torch.Generator().manual_seed(0)
    for channels, p, (h, w) in [(3, 5, (13, 11)), (1, 4, (9, 16)), (3, 7, (7, 7))]:
        image = torch.rand(channels, h, w, generator=g, dtype=torch.float64) * 255
        patches = torch.rand(4, channels, p, p, generator=g, dtype=torch.float64) * 255
        found = best_matches(patches, image)
        expected = torch.tensor([brute_force_best(q, image) for q in patches], dtype=torch.float64)
        torch.testing.assert_close(found, expected, rtol=1e-6, atol=1e-6)


def test_a_piece_of_the_image_matches_it_exactly_whatever_its_contrast_and_offsets():
    image = texture_file(64, 0)
    piece = image[:, 10:26, 30:46]
    offsets = torch.tensor([5.0, -20.0, 0.0], dtype=torch.float64).view(3, 1, 1)  # one per channel
    found = best_matches(torch.stack([piece, 0.4 * piece + offsets]), image)
    torch.testing.assert_close(found, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-9)


def test_a_flat_patch_matches_nothing():
    image = texture_file(48, 0)
    flat = torch.full((1, 3, 12, 12), 77.0, dtype=torch.float64)
    assert best_matches(flat, image).item() == 0.0


def test_the_photo_shifted_is_copied_and_a_new_piece_or_noise_is_not():
    photo = texture_file(128, 0)
    shifted = torch.roll(photo, (17, 40), dims=(1, 2)).unsqueeze(0)
    copied = copy_check(photo, shifted)
    assert copied["patch"] == 32 and copied["copied"] and copied["samples"]["largest"] > 0.999
    new_piece = copy_check(photo, texture_file(128, 1).unsqueeze(0))  # the same texture, drawn afresh
    noise = copy_check(photo, random_phase_noise(photo, 2, torch.Generator().manual_seed(3)))
    for figures in (new_piece, noise):
        assert not figures["copied"] and figures["samples"]["mean"] < copied["samples"]["mean"] - 0.2
        assert figures["samples"]["copies"] == 0.0
    assert copied["samples"]["copies"] > 0.3
    assert "COPIED" in copy_line(copied) and "new pieces" in copy_line(new_piece)


def test_the_same_seed_gives_the_same_figures_and_too_small_samples_are_not_checked():
    photo = texture_file(96, 0)
    samples = texture_file(96, 2).unsqueeze(0)
    assert copy_check(photo, samples, seed=4) == copy_check(photo, samples, seed=4)
    large = texture_file(160, 0)  # patches of 40 px, larger than these samples
    result = evaluate(large, samples[..., :32, :32], crop=32, crops=4, use_ps=False)
    assert result["copy"].startswith("not computed") and "40 px" in result["copy"]


def test_eval_prints_the_copy_check(tmp_path):
    photo = texture_file(128, 0)
    Image.fromarray(photo.permute(1, 2, 0).round().byte().numpy(), "RGB").save(tmp_path / "tex.png")
    piece = photo[:, 20:84, 30:94]  # a sample that is a piece of the photo
    Image.fromarray(piece.permute(1, 2, 0).round().byte().numpy(), "RGB").save(tmp_path / "copy.png")
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "tex.png"), str(tmp_path / "copy.png"),
                                       "--image-size", "128", "--crops", "8"])
    assert result.exit_code == 0, result.output
    assert "copy check, 32 px patches" in result.output and "COPIED" in result.output
