"""`tritongcn eval` as a run: texture figures of samples against the texture they should be."""

from dataclasses import dataclass
from pathlib import Path

from ..copycheck import copy_line
from ..progress import Progress
from .common import RunError, load_images

TABLE_ROWS = ("samples", "real_crops", "random_phase", "white_noise")


@dataclass
class EvalRun:
    texture: Path  # the training image, preprocessed as `learn` does
    samples: tuple  # images or folders of them
    image_size: int = 224
    crop: int | None = None  # side of the crops; default: the samples' side or half the texture's
    crops: int = 64
    seed: int = 0


def evaluate_samples(run: EvalRun) -> dict:
    """The figures of `evaluate` for the samples and the references, with a progress line on standard error
    (standard output may be the figures' JSON)."""
    import sys

    import torch

    from ..evaluate import SMALLEST_CROP, evaluate, evaluation_steps, largest_crop, portilla_simoncelli_available
    from ..images import preprocess

    raw, images = _load(run)
    limit = largest_crop((run.image_size, run.image_size), images[0].shape[:2])
    if limit < SMALLEST_CROP or (run.crop and run.crop > limit):
        raise RunError(f"crops must be between {SMALLEST_CROP} px and {limit} px (the samples' side or half of "
                       "--image-size)")
    training = preprocess(raw, run.image_size)
    stack = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im in images])
    has_ps = portilla_simoncelli_available()
    with Progress(evaluation_steps(), f"scoring {len(images)} samples", file=sys.stderr) as bar:
        result = evaluate(training, stack, crop=run.crop, crops=run.crops, seed=run.seed, use_ps=has_ps,
                          progress=lambda name: bar.update(1, name.replace("_", " ")))
    result["samples_evaluated"] = len(images)
    return result


def _load(run: EvalRun) -> tuple:
    """(the texture's raw array, the samples' raw arrays), checked to be alike: one size, one kind."""
    _, [raw] = load_images([run.texture], f"{run.texture}: no such image")
    _, images = load_images(run.samples, "no PNG or JPEG images among the SAMPLES given")
    if any(im.shape[2] != raw.shape[2] for im in images):
        raise RunError("the samples and the texture must both be grayscale or both colour")
    sizes = {im.shape[:2] for im in images}
    if len(sizes) != 1:
        raise RunError(f"the samples must all have one size, got {sorted(sizes)}")
    return raw, images


def table_lines(result: dict) -> list:
    """The figures as `tritongcn eval` prints them: a row per set, lower is better."""
    columns = [c for c in ("patch_swd", "ps_z") if c in result["samples"]]
    lines = [f"{result['samples_evaluated']} samples, {result['crops']} crops of {result['crop']} px; lower is better",
             f"{'':<14}" + "".join(f"{c:>11}" for c in columns)]
    lines += [f"{name:<14}" + "".join(f"{result[name][c]:>11.3f}" for c in columns) for name in TABLE_ROWS]
    if "ps_z" not in columns:
        lines.append(f"(ps_z {result['ps_z']})")
    lines.append(copy_line(result["copy"]) if isinstance(result["copy"], dict) else f"(copy check {result['copy']})")
    return lines
