"""The `tritongcn` command line. torch is imported inside commands so that `--help` is instant."""

import contextlib
import json
import math
from pathlib import Path

import click

from . import __version__
from .config import HIGH, QUALITIES, RELEASE, SHADINGS, STARTS, LearnConfig, stride_multiple
from .precision import AUTO_PRECISION, PRECISION_CHOICES

DEFAULTS = LearnConfig().to_dict()

# Options that several commands share, declared once.
device_option = click.option("--device", default="auto", show_default=True,
                             help="Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")
backend_option = click.option("--backend", type=click.Choice(["auto", "torch", "triton"]), default="auto",
                              show_default=True, help="Kernel backend (auto: triton on CUDA, torch on the CPU).")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")


def precision_option(what: str = "Precision of the sampler's convolutions (the chains stay float32); "):
    return click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
                        help=what + AUTO_PRECISION)


def _split_integers(value: str, separator: str) -> tuple:
    """The integers of `value` joined by `separator` ('10,20' or '640x480'); () if any part is not one."""
    try:
        return tuple(int(p) for p in value.lower().split(separator))
    except ValueError:
        return ()


def _integers(count: int, separator: str, what: str):
    """An option callback that reads `count` non-negative integers joined by `separator`, like 10,20,64,48."""
    def parse(ctx, param, value):
        if value is None:
            return None
        numbers = _split_integers(value, separator)
        if len(numbers) != count or min(numbers) < 0:
            raise click.BadParameter(f"{value!r} is not {what}")
        return numbers
    return parse


def _canvas_size(ctx, param, value):
    """'448' (a square) or '640x480'."""
    numbers = _split_integers(value, "x")
    if len(numbers) not in (1, 2) or min(numbers) < 1 or max(numbers) > 16384:
        raise click.BadParameter(f"{value!r} is not W or WxH in pixels, like 448 or 640x480")
    return numbers * 2 if len(numbers) == 1 else numbers


mask_option = click.option("--mask", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="An image of IMAGE's size whose white pixels mark IMAGE's unknown ones.")
hole_option = click.option("--hole", default=None, metavar="X,Y,W,H",
                           callback=_integers(4, ",", "X,Y,W,H: the hole's corner, width and height in pixels"),
                           help="A rectangle of unknown pixels (instead of --mask): its top-left corner, width "
                                "and height, in IMAGE's pixels.")


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


def _preset_help(name: str, text: str) -> str:
    """An option's help with its default, and the other recipes' where they differ."""
    others = [f"{value} with --{label}" for label, value in
              (("quality high", HIGH.get(name)), ("model object or --cd", RELEASE.get(name))) if value is not None]
    return f"{text} [default: {DEFAULTS[name]}{'; ' + '; '.join(others) if others else ''}]"


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: runs/<image or folder name>].")
@click.option("--model", "model_kind", type=click.Choice(["texture", "object"]), default=DEFAULTS["model"],
              show_default=True, help="texture: f sums the top layer's responses, samples of any size; "
                                      "object: the paper's object net (100 x 7x7 stride 2, 64 x 5x5, "
                                      "20 x 3x3) with one top filter over the whole map, for a folder of "
                                      "aligned images; samples are the images' size, with zero padding; "
                                      "learned by the release's recipe.")
@click.option("--quality", type=click.Choice(QUALITIES), default="default", show_default=True,
              help="The texture recipe: default (about 4 minutes for a 224 px texture on a 2-core CPU) or "
                   "high (longer, more chains; bench/TUNING.md). The options below override it.")
@click.option("--image-size", type=click.IntRange(8, 4096), default=None,
              help="Training images: shorter side resized to this, then a centred square crop [default: "
                   f"{DEFAULTS['image_size']} for textures; the images' smallest side for objects].")
@click.option("--sample-size", type=click.IntRange(8, 4096), default=None,
              help="Side of the samples drawn at the end and by `sample` (textures) [default: --image-size, "
                   "rounded up to a multiple of the net's total stride (225 for 224)].")
@click.option("--chain-size", type=click.IntRange(8, 4096), default=None,
              help="Side of the learning chains (textures) [default: half --image-size, rounded up to the "
                   "stride (114 for 224)].")
@click.option("--chains", type=click.IntRange(1, 1 << 20), default=None,
              help=_preset_help("chains", "Learning chains."))
@click.option("--langevin-steps", type=click.IntRange(1, 10000), default=None,
              help=_preset_help("langevin_steps", "Langevin steps between weight updates (L)."))
@click.option("--step-size", type=float, default=None, callback=_positive_float,
              help=_preset_help("step_size", "Langevin step size eps, on the [0, 255] pixel scale."))
@click.option("--sigma", type=float, default=DEFAULTS["sigma"], show_default=True, callback=_positive_float,
              help="Standard deviation of the Gaussian reference distribution.")
@click.option("--temperature", type=float, default=DEFAULTS["temperature"], show_default=True,
              callback=_positive_float,
              help="The learning chains' noise variance as a multiple of the model's (the finish and new "
                   "samples keep 1). Above 1 they leave a mode more easily: 4 kept the bundled wood from "
                   "running away (README, When things go wrong).")
@click.option("--shading", type=click.Choice(SHADINGS), default=None,
              help=_preset_help("shading", "flatten: subtract each training image's plane of light (its "
                                           "least-squares slope per channel) before learning, so the samples "
                                           "have no shading across them; keep: learn the images as they are; "
                                           "auto: flatten photos whose plane holds over half their variance, "
                                           "such as the bundled wood, which ran away otherwise (README, When "
                                           "things go wrong). `complete` and `expand` flatten."))
@click.option("--iterations", type=click.IntRange(1, 10**7), default=None,
              help=_preset_help("iterations", "Weight updates per grown layer (in all with --cd)."))
@click.option("--start", type=click.Choice(STARTS), default=None,
              help=_preset_help("start", "Where chains start: the mean image (zero), white noise, or "
                                         "random-phase noise with the training image's spectrum."))
@click.option("--sample-steps", type=click.IntRange(1, 10**6), default=None,
              help=_preset_help("sample_steps", "Langevin steps of the samples drawn at the end (and "
                                                "`sample`'s default)."))
@click.option("--finish", "finish_iterations", type=click.IntRange(0, 10**6), default=None,
              help=_preset_help("finish_iterations", "Updates at the end in which every chain is a new sample, "
                                                     "drawn as `sample` draws them (0: none)."))
@click.option("--layers", type=click.IntRange(1, 4), default=DEFAULTS["layers"], show_default=True,
              help="Layers of the net: the paper's 3, or 4 for texture nets, whose fourth layer (30 filters of "
                   "5x5) widens what the net sees from 33 to 45 px.")
@click.option("--lr", type=float, default=None, callback=_positive_float,
              help=_preset_help("lr", "Learning rate (biases twice it)."))
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=DEFAULTS["seed"], show_default=True,
              help="Seed of the initial weights and the Langevin noise.")
@click.option("--periodic/--zero-padding", default=DEFAULTS["periodic"], show_default=True,
              help="Synthesize on the torus (seamless tiles, no flat border; data scored by their interior) "
                   "or with the release's zero padding everywhere.")
@device_option
@precision_option("Precision of the sampler's convolutions and the weight gradient (the chains stay float32); ")
@click.option("--cd", "cd_steps", type=click.IntRange(0, 10000), default=DEFAULTS["cd_steps"],
              show_default=True, help="k-step contrastive divergence: one chain per training image, restarted "
                                      "from it at every iteration for k Langevin steps (--chains, "
                                      "--langevin-steps and --chain-size do not apply), all layers learned "
                                      "at once, by the release's recipe (0: maximum likelihood).")
@click.option("--checkpoint-every", type=click.IntRange(1, 10**7), default=50, show_default=True,
              help="Save a resumable checkpoint (--out/checkpoint.pt) and a preview of the learning chains "
                   "(--out/preview.png) every this many iterations.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its checkpoint.pt, "
                                             "with that run's settings (the options given now are not used).")
@mask_option
@hole_option
@overwrite_option
def learn(image, out_dir, model_kind, quality, image_size, sample_size, chain_size, chains, langevin_steps,
          step_size, sigma, temperature, shading, iterations, start, sample_steps, finish_iterations, layers, lr, seed, periodic, device,
          precision, cd_steps, checkpoint_every, resume, mask, hole, overwrite):
    """Learn a model from IMAGE (or every PNG/JPEG in a folder IMAGE), then draw new samples from it as
    `tritongcn sample` does, and write them, a grid, metrics, the first layer's filters and the model
    to --out.

    With --mask or --hole, the texture is learned from IMAGE's known pixels only: a photo with an object,
    a logo or a scratch in it.

    Ctrl-C or SIGTERM saves a checkpoint at the end of the current iteration and exits with 130; run the
    same command with --resume to continue: on the CPU the result is the one an uninterrupted run gives.
    """
    from .runs import LearnRun, learn as run_learn

    settings = dict(model=model_kind, image_size=image_size, sample_size=sample_size, chain_size=chain_size,
                    chains=chains, langevin_steps=langevin_steps, step_size=step_size, sigma=sigma,
                    temperature=temperature, shading=shading,
                    iterations=iterations, start=start, sample_steps=sample_steps,
                    finish_iterations=finish_iterations, layers=layers, lr=lr,
                    seed=seed, periodic=periodic, precision=precision, cd_steps=cd_steps)
    with _run_errors():
        run_learn(LearnRun(image, out_dir, settings, quality=quality, device=device,
                           checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite,
                           mask=mask, hole=hole))


@contextlib.contextmanager
def _run_errors():
    """A run's errors as the command line's: one line and exit code 1 (a usage error when an option is at
    fault), or 130 after Ctrl-C or SIGTERM saved the state."""
    from .interrupts import INTERRUPTED_EXIT_CODE
    from .runs import RunError, Stopped

    try:
        yield
    except RunError as err:
        if err.option:
            raise click.BadParameter(str(err), param_hint=err.option) from None
        raise click.ClickException(str(err)) from None
    except Stopped as stopped:
        if stopped.is_main:
            click.echo(f"\n{stopped}", err=True)
        raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE) from None


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
    from .images import image_paths, load_image, preprocess
    from .io import InputError

    try:
        raw = load_image(texture)
        paths = image_paths(samples)
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
        click.echo(f"(ps_z {result['ps_z']})")


def _bytes(ctx, param, value):
    """'2G', '512M', '100k' or a plain number of bytes."""
    if value is None:
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = value.strip().lower().removesuffix("b").removesuffix("i")
    scale = units.get(text[-1:], 1)
    try:
        number = float(text[:-1] if text[-1:] in units else text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size like 2G, 512M or 1000000") from None
    if not (math.isfinite(number) and number > 0):
        raise click.BadParameter(f"must be positive, got {value!r}")
    return int(number * scale)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder.")
@click.option("--mode", "with_mode", is_flag=True,
              help="Also descend deterministically from each image to a local mode of the energy "
                   "(an image that reconstructs itself, Proposition 2) and show it.")
@click.option("--steps", type=click.IntRange(1, 10**6), default=500, show_default=True,
              help="Most descent steps for --mode.")
@click.option("--image-size", type=click.IntRange(8, 4096), default=None,
              help="Images are preprocessed as `learn` does: shorter side resized to this, centred crop "
                   "[default: the size the model was learned with].")
@device_option
@overwrite_option
def reconstruct(model_path, images, out_dir, with_mode, steps, image_size, device, overwrite):
    """Auto-encode IMAGES with a learned MODEL: each image's activation bits bottom-up, then the top-down
    pass gated by them, sigma^2 B(delta(I)). Writes each image beside its reconstruction (and its local
    mode with --mode) to --out, with the relative reconstruction error ||I - sigma^2 B|| / ||I|| of each
    (mean-subtracted) image in reconstruct.json.
    """
    from .runs import ReconstructRun, reconstruct as run_reconstruct

    with _run_errors():
        run_reconstruct(ReconstructRun(model_path, images, out_dir, with_mode=with_mode, steps=steps,
                                       image_size=image_size, device=device, overwrite=overwrite))


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chains", type=click.IntRange(1, 1 << 24), default=16, show_default=True,
              help="Number of chains (samples).")
@click.option("--steps", "--sample-steps", "steps", type=click.IntRange(0, 10**7), default=None,
              help="Langevin steps per chain in all, `learn`'s --sample-steps (with --resume, the steps already "
                   "taken count) [default: "
                   "the model's sample_steps, the steps its own samples took at the end of `learn`: 300 for "
                   "the default recipe].")
@click.option("--size", "--sample-size", "size", type=click.IntRange(8, 16384), default=None,
              help="Side of the samples, `learn`'s --sample-size [default: the size the model was learned with].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: the model's folder / samples-<size>].")
@click.option("--init", type=click.Choice(STARTS), default=None,
              help="Start the chains at the mean image (zero), from N(0, sigma^2) noise around it, or from "
                   "random-phase noise with the training image's spectrum [default: where the model's "
                   "learning chains started, spectrum for the default recipe].")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the starting noise and the Langevin noise.")
@click.option("--step-size", type=float, default=None, callback=_positive_float,
              help="Langevin step size [default: the one the model was learned with].")
@click.option("--memory-budget", callback=_bytes, default=None,
              help="Memory for work in flight, like 2G or 512M; chains are advanced in chunks that fit "
                   "[default: half the free memory].")
@click.option("--resume", is_flag=True, help="Continue the chains saved in --out (chains.pt).")
@click.option("--save-every", type=click.IntRange(1, 10**7), default=None,
              help="Save the chains to --out/chains.pt every this many steps, so --resume loses little.")
@click.option("--format", "fmt", type=click.Choice(["auto", "png", "npz"]), default="auto", show_default=True,
              help="One PNG per chain, or one samples.npz (auto: PNGs up to 256 chains).")
@click.option("--gif", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Animate this many chains evolving into evolution.gif (21 frames; about 1 MB per "
                   "225 px chain, as GIF compresses the chains' noise poorly).")
@click.option("--periodic/--zero-padding", default=None,
              help="Sample on the torus (seamless tiles) or with zero padding [default: as learned].")
@device_option
@backend_option
@precision_option()
@overwrite_option
def sample(model_path, chains, steps, size, out_dir, init, seed, step_size, memory_budget, resume, save_every,
           fmt, gif, periodic, device, backend, precision, overwrite):
    """Draw new samples from a learned MODEL (model.pt of `tritongcn learn`): chains that start where its
    learning chains started and run its Langevin dynamics, by default for as many steps as the samples
    `learn` drew at its end.

    Under `torchrun --nproc-per-node P` the chains are split between the P processes; each chain is the
    same as in a single-process run with the same seed.
    """
    from .runs import SampleRun, sample as run_sample

    with _run_errors():
        run_sample(SampleRun(model_path, chains, steps, size, out_dir, init, seed, step_size, memory_budget, resume,
                             save_every, fmt, gif, periodic, device, backend, precision, overwrite))


def fill_options(command):
    """The options `complete` and `expand` share: how the unknown pixels are sampled, and by what model."""
    options = [
        click.option("--chains", type=click.IntRange(1, 1 << 16), default=1, show_default=True,
                     help="Results drawn, each its own sample; all are written when more than one."),
        click.option("--steps", "--sample-steps", "steps", type=click.IntRange(0, 10**6), default=None,
                     help="Langevin steps, then 10 noise-free ones [default: the model's sample_steps, 300 for "
                          "the default recipe]."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
                     help="Seed of the starting noise and the Langevin noise."),
        click.option("--image-size", type=click.IntRange(8, 16384), default=None,
                     help="Resize IMAGE first so that its shorter side is this (the whole image, no crop) "
                          "[default: IMAGE as it is]."),
        click.option("--quality", type=click.Choice(QUALITIES), default="default", show_default=True,
                     help="The recipe of the model learned when no MODEL is given (see `learn`)."),
        device_option, backend_option, precision_option(),
        click.option("--resume", is_flag=True, help="Continue the learning interrupted in --out/model, or "
                                                    "use the model learned there before."),
        overwrite_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _fill_settings(model_path, chains, steps, seed, image_size, quality, device, backend, precision, resume,
                   overwrite):
    from .runs.completion import FillSettings

    return FillSettings(model_path, chains, steps, seed, image_size, quality, device, backend, precision, resume,
                        overwrite)


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@mask_option
@hole_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: runs/<image name>-complete].")
@fill_options
def complete(image, model_path, mask, hole, out_dir, **fill):
    """Fill the unknown pixels of IMAGE (white in --mask, or the --hole rectangle) with texture sampled
    given the known ones, which come out unchanged.

    With MODEL (a model.pt of `learn`) it only samples. Without, it first learns the texture from IMAGE's
    known pixels into --out/model (about as long as `learn`; as `learn --shading flatten`, since the fill
    takes its shading from the hole's surroundings), then samples: Langevin dynamics of the unknown pixels
    with the known ones held, ending with noise-free steps. Writes completed.png, mask.png,
    before_after.png and complete.json (and completions/ with --chains K).
    """
    from .runs.completion import CompleteRun, complete as run_complete

    if (mask is None) == (hole is None):
        raise click.UsageError("mark the unknown pixels with --mask MASK or --hole X,Y,W,H (one of them)")
    with _run_errors():
        run_complete(CompleteRun(image, out_dir or Path("runs") / f"{image.stem}-complete", mask, hole,
                                 _fill_settings(model_path, **fill)))


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size", required=True, metavar="W[xH]", callback=_canvas_size,
              help="The result's width and height in pixels (one number: a square).")
@click.option("--at", default=None, metavar="X,Y", callback=_integers(2, ",", "X,Y: a corner in pixels"),
              help="Where IMAGE's top-left corner goes on the canvas [default: centred].")
@click.option("--periodic", is_flag=True, help="Sample on the torus: the result tiles seamlessly (sides are "
                                               "rounded up to the net's stride).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: runs/<image name>-expand].")
@fill_options
def expand(image, model_path, size, at, periodic, out_dir, **fill):
    """Grow IMAGE onto a larger canvas of --size: IMAGE is kept as it is and the rest is texture sampled
    around it, with no seam.

    With MODEL (a model.pt of `learn`) it only samples; without, it first learns the texture from IMAGE
    into --out/model (as `learn --shading flatten`). Writes expanded.png, before_after.png and expand.json
    (tiled.png with --periodic, expansions/ with --chains K).
    """
    from .runs.completion import ExpandRun, expand as run_expand

    with _run_errors():
        run_expand(ExpandRun(image, out_dir or Path("runs") / f"{image.stem}-expand", size, at, periodic,
                             _fill_settings(model_path, **fill)))


@main.command()
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chains", type=click.IntRange(1, 1 << 20), default=16, show_default=True,
              help="Chains advanced together in each step.")
@click.option("--size", type=click.IntRange(8, 8192), default=112, show_default=True,
              help="Side of the chains in pixels (rounded up to the net's stride when periodic).")
@click.option("--steps", type=click.IntRange(1, 10**6), default=5, show_default=True,
              help="Timed Langevin steps (after one warm-up step); the comparison runs 3 rounds of as many.")
@click.option("--boundary", type=click.Choice(["zero", "periodic"]), default=None,
              help="What the layers see beyond the edge [default: MODEL's own; periodic without MODEL, as "
                   "`learn` makes them].")
@backend_option
@precision_option()
@device_option
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Chrome trace of one more step (open it in Perfetto or chrome://tracing).")
@click.option("--no-compare", is_flag=True, help="Skip timing the autograd loop.")
def profile(model_path, chains, size, steps, boundary, backend, precision, device, trace, no_compare):
    """Time each kernel call site of a Langevin step, with FLOPs and the share of the machine's peak.

    Without MODEL, the paper's texture net with random weights (biases of both signs). The summary
    compares chain-steps/s with the plain autograd Langevin loop on the same weights, timed in the same run.
    """
    import torch

    from .model import GenerativeConvNet
    from .precision import resolve_precision
    from .profile import peak_probes, profile_steps, report_lines
    from .runs.common import RunError, load_model, usable_device

    with _run_errors():
        device = usable_device(device)
        if model_path is None:
            model = GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                for conv in model.convs:
                    conv.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
            source = "texture net, random weights"
            periodic = LearnConfig().periodic
        else:
            state, model = load_model(model_path)
            source = str(model_path)
            periodic = LearnConfig.from_dict(state["config"]).periodic and model.top == "sum"
        boundary = boundary or ("periodic" if periodic else "zero")
        if boundary == "periodic" and size % model.total_stride():
            size = stride_multiple(size, model.total_stride())
            click.echo(f"periodic chains need sides that are multiples of {model.total_stride()}: "
                       f"profiling at {size} px")
        try:
            precision = resolve_precision(precision, device, backend)
            model = model.to(device)
            x = torch.randn(chains, model.in_channels, size, size, device=device,
                            generator=torch.Generator(device=device).manual_seed(0)) * 30
            gflops_peak, gbs_peak = peak_probes(torch.device(device), precision)
            report = profile_steps(model, x, steps, boundary=boundary, backend=backend, precision=precision,
                                   trace=trace, compare=not no_compare)
        except ValueError as err:
            raise RunError(str(err)) from None
    click.echo(f"{source}: {chains} chain{'s' if chains != 1 else ''} of {size} px, {steps} steps, {boundary} "
               f"boundary, {precision}, {device}; peaks measured here: {gflops_peak:.0f} GFLOP/s ({precision} matmul), "
               f"{gbs_peak:.0f} GB/s (copy)")
    for line in report_lines(report, gflops_peak, gbs_peak):
        click.echo(line)
    if trace:
        click.echo(f"trace: {trace}")
