"""The `tritongcn` command line. torch is imported inside commands so that `--help` is instant."""

import json
import math
import time
from pathlib import Path

import click

from . import __version__
from .config import LearnConfig

DEFAULTS = LearnConfig().to_dict()


def _positive_float(ctx, param, value):
    if value is None:
        return value
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive finite number, got {value}")
    return value


@click.group()
@click.version_option(__version__, prog_name="tritongcn")
def main():
    """Learn generative ConvNets from a few images and sample from them."""


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: runs/<image name>].")
@click.option("--image-size", type=click.IntRange(8, 4096), default=DEFAULTS["image_size"], show_default=True,
              help="Training image: shorter side resized to this, then a centred square crop.")
@click.option("--sample-size", type=click.IntRange(8, 4096), default=DEFAULTS["sample_size"],
              show_default=True, help="Side of the synthesized images.")
@click.option("--chains", type=click.IntRange(1, 1 << 20), default=DEFAULTS["chains"], show_default=True,
              help="Persistent Langevin chains (samples).")
@click.option("--langevin-steps", type=click.IntRange(1, 10000), default=DEFAULTS["langevin_steps"],
              show_default=True, help="Langevin steps between weight updates (L).")
@click.option("--step-size", type=float, default=DEFAULTS["step_size"], show_default=True,
              callback=_positive_float, help="Langevin step size eps, on the [0, 255] pixel scale.")
@click.option("--sigma", type=float, default=DEFAULTS["sigma"], show_default=True, callback=_positive_float,
              help="Standard deviation of the Gaussian reference distribution.")
@click.option("--iterations", type=click.IntRange(1, 10**7), default=DEFAULTS["iterations"],
              show_default=True, help="Weight updates per grown layer.")
@click.option("--layers", type=click.IntRange(1, 3), default=DEFAULTS["layers"], show_default=True,
              help="Layers of the texture net, grown one at a time.")
@click.option("--lr", type=float, default=DEFAULTS["lr"], show_default=True, callback=_positive_float,
              help="Learning rate.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=DEFAULTS["seed"], show_default=True,
              help="Seed of the initial weights and the Langevin noise.")
@click.option("--periodic/--zero-padding", default=DEFAULTS["periodic"], show_default=True,
              help="Synthesize on the torus (seamless tiles, no flat border; data scored by their interior) "
                   "or with the release's zero padding everywhere.")
@click.option("--device", default="auto", show_default=True,
              help="Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
def learn(image, out_dir, image_size, sample_size, chains, langevin_steps, step_size, sigma, iterations,
          layers, lr, seed, periodic, device, overwrite):
    """Learn a texture model from IMAGE and write samples, a grid, metrics and the model to --out."""
    import torch

    from .io import InputError, load_image, preprocess
    from .learn import Learner
    from .model import GenerativeConvNet

    out_dir = out_dir or Path("runs") / image.stem
    if (out_dir / "model.pt").exists() and not overwrite:
        raise click.ClickException(f"{out_dir} already holds a run (model.pt): pass --overwrite or "
                                   "choose another --out")
    try:
        raw = load_image(image)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    geometry = GenerativeConvNet.texture(raw.shape[2], depth=layers)
    field = geometry.receptive_field()
    if min(raw.shape[:2]) < field:
        raise click.ClickException(
            f"{image}: {raw.shape[1]}x{raw.shape[0]} pixels is smaller than the net's receptive field "
            f"({field}x{field} for {layers} layers); use a larger image or fewer --layers")
    for name, size in (("--image-size", image_size), ("--sample-size", sample_size)):
        if size < field:
            raise click.ClickException(f"{name} {size} is smaller than the receptive field ({field} px)")
    stride = geometry.total_stride()
    if periodic and sample_size % stride:
        raise click.BadParameter(f"{sample_size} is not a multiple of the net's total stride {stride}, "
                                 f"which periodic samples need (try {sample_size // stride * stride})",
                                 param_hint="--sample-size")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        if torch.device(device).type not in ("cpu", "cuda"):
            raise RuntimeError("tritongcn runs on cpu and cuda devices")
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise click.BadParameter(f"{device!r} is not a usable device ({err})", param_hint="--device")

    config = LearnConfig(image_size=image_size, sample_size=sample_size, chains=chains,
                         langevin_steps=langevin_steps, step_size=step_size, sigma=sigma,
                         iterations=iterations, layers=layers, lr=lr, seed=seed, periodic=periodic,
                         device=device)
    training = preprocess(raw, image_size)
    learner = Learner.from_images(training.unsqueeze(0), config)

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise click.ClickException(f"cannot create the output folder {out_dir}: {err.strerror or err}")
    records = []
    start = time.perf_counter()
    metrics_path = out_dir / "metrics.jsonl"
    with open(metrics_path, "w") as metrics_file, click.progressbar(
            length=learner.total_iterations, label="learning", show_eta=True,
            item_show_func=lambda r: r) as bar:
        for record in _checked(learner.run()):
            records.append(record)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            bar.update(1, f"layer {record['layer']}/{layers} it {record['iteration']}/{iterations} "
                          f"gap {record['gap']:+.3g} {record['seconds']:.0f}s")
    samples = learner.samples()
    _write_outputs(out_dir, learner, training, samples, records)
    _evaluate_run(out_dir, training, samples)
    elapsed = time.perf_counter() - start
    click.echo(f"done in {elapsed:.0f}s: {out_dir}/grid.png, {out_dir}/samples/, {out_dir}/model.pt")


def _evaluate_run(out_dir, training, samples) -> None:
    """Score the final samples against the training image into eval.json (see `tritongcn eval`)."""
    from .evaluate import SMALLEST_CROP, evaluate, largest_crop, portilla_simoncelli_available
    from .io import atomic_save

    if largest_crop(training.shape, samples.shape) < SMALLEST_CROP:
        click.echo(f"no eval.json: samples or training image too small for {SMALLEST_CROP} px crops")
        return
    result = evaluate(training, samples.round(), use_ps=portilla_simoncelli_available())
    text = json.dumps(result, indent=2) + "\n"
    atomic_save(lambda tmp: Path(tmp).write_text(text), out_dir / "eval.json")
    figures = ", ".join(f"{k} {result['samples'][k]:.3f} (real crops {result['real_crops'][k]:.3f}, "
                        f"random-phase noise {result['random_phase'][k]:.3f})" for k in result["samples"])
    click.echo(f"eval: {figures}")


def _checked(records):
    """Learning records, with a divergence turned into a one-line error (metrics.jsonl keeps the history)."""
    try:
        yield from records
    except FloatingPointError as err:
        raise click.ClickException(str(err)) from None


def _write_outputs(out_dir, learner, training, samples, records) -> None:
    import torch

    from .io import draw_learning_curve, make_grid, save_checkpoint, save_png

    sample_dir = out_dir / "samples"
    sample_dir.mkdir(exist_ok=True)
    for i, sample in enumerate(samples):
        save_png(sample, sample_dir / f"{i:04d}.png")
    real_crops = None
    if samples.shape[-1] <= min(training.shape[-2:]):
        from .evaluate import random_crops

        # Real crops at the samples' size, so the eye compares like with like.
        real_crops = random_crops(training.unsqueeze(0), samples.shape[-1], len(samples),
                                  torch.Generator().manual_seed(learner.config.seed))
    save_png(make_grid(training, samples, real_crops), out_dir / "grid.png")
    draw_learning_curve(records, out_dir / "learning_curve.png")
    save_checkpoint(learner.state_dict(), out_dir / "model.pt")


def _image_paths(paths):
    """Files as given, and the PNG/JPEG files inside given folders, sorted."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        else:
            found.append(path)
    return found


@main.command("eval")
@click.argument("texture", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("samples", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--image-size", type=click.IntRange(8, 4096), default=DEFAULTS["image_size"], show_default=True,
              help="TEXTURE is preprocessed as `learn` does: shorter side resized to this, centred crop.")
@click.option("--crop", type=click.IntRange(28, 4096), default=None,
              help="Side of the crops compared, rounded down to a multiple of 8 [default: the samples' "
                   "side or half the texture's, whichever is smaller].")
@click.option("--crops", type=click.IntRange(2, 100000), default=64, show_default=True,
              help="Crops drawn from each set.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the crops, noise baselines and projections.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate_command(texture, samples, image_size, crop, crops, seed, as_json):
    """Texture statistics of SAMPLES (images or folders of them) against TEXTURE. Lower is better.

    patch_swd: multi-scale sliced Wasserstein distance between 7x7 colour patch distributions.
    ps_z: mean |z| of the Portilla-Simoncelli statistics of the luminance (needs the `eval` extra,
    pip install 'tritongcn[eval]'). Real crops of the texture give the floor; random-phase noise with
    the texture's spectrum and white noise give the scale.
    """
    import torch

    from .evaluate import SMALLEST_CROP, evaluate, largest_crop, portilla_simoncelli_available
    from .io import InputError, load_image, preprocess

    try:
        raw = load_image(texture)
        paths = _image_paths(samples)
        if not paths:
            raise InputError("no PNG or JPEG images among the SAMPLES given")
        images = [load_image(p) for p in paths]
    except InputError as err:
        raise click.ClickException(str(err)) from None
    if any(im.shape[2] != raw.shape[2] for im in images):
        raise click.ClickException("the samples and the texture must both be grayscale or both colour")
    sizes = {im.shape[:2] for im in images}
    if len(sizes) != 1:
        raise click.ClickException(f"the samples must all have one size, got {sorted(sizes)}")
    limit = largest_crop((image_size, image_size), next(iter(sizes)))
    if limit < SMALLEST_CROP or (crop and crop > limit):
        raise click.ClickException(f"crops must be between {SMALLEST_CROP} px and {limit} px (the samples' "
                                   f"side or half of --image-size)")
    training = preprocess(raw, image_size)
    stack = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im in images])
    has_ps = portilla_simoncelli_available()
    result = evaluate(training, stack, crop=crop, crops=crops, seed=seed, use_ps=has_ps)
    result["samples_evaluated"] = len(images)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    columns = ["patch_swd"] + (["ps_z"] if has_ps else [])
    click.echo(f"{len(images)} samples, {result['crops']} crops of {result['crop']} px; lower is better")
    click.echo(f"{'':<14}" + "".join(f"{c:>11}" for c in columns))
    for name in ("samples", "real_crops", "random_phase", "white_noise"):
        click.echo(f"{name:<14}" + "".join(f"{result[name][c]:>11.3f}" for c in columns))
    if not has_ps:
        click.echo("(ps_z needs plenoptic: pip install 'tritongcn[eval]')")
