"""The `tritongcn` command line: each command maps its options onto a run of `tritongcn.runs` and the run's
errors onto messages and exit codes. torch is imported inside commands so that `--help` is instant."""

import contextlib
import json
from pathlib import Path

import click

from . import __version__
from .cli_options import (apply, backend_option, byte_size, canvas_size, chains_option, device_option, hole_option,
                          image_size_option, integers, mask_option, out_option, overwrite_option, periodic_option,
                          positive_float, precision_option, recipe_options, resume_option, seed_option, steps_option)
from .config import QUALITIES, STARTS, LearnConfig


@click.group()
@click.version_option(__version__, prog_name="tritongcn")
def main():
    """Learn generative ConvNets from a few images and sample from them."""


@contextlib.contextmanager
def _run_errors():
    """A run's errors as the command line's: one line and exit code 1 (a usage error when an option is at
    fault), or 130 after Ctrl-C or SIGTERM saved the state, with the line that says how to go on."""
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


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@out_option("Output folder [default: runs/<image or folder name>].")
@click.option("--quality", type=click.Choice(QUALITIES), default="default", show_default=True,
              help="The texture recipe: default (about 4 minutes for a 224 px texture on a 2-core CPU) or high "
                   "(longer, with more chains). The options below override it.")
@recipe_options
@device_option
@precision_option("Precision of the sampler's convolutions and the weight gradient (the chains stay float32); ")
@click.option("--checkpoint-every", type=click.IntRange(1, 10**7), default=50, show_default=True,
              help="Save a resumable checkpoint (--out/checkpoint.pt) and a preview of the learning chains "
                   "(--out/preview.png) every this many iterations.")
@resume_option("Continue the interrupted run in --out from its checkpoint.pt, with that run's settings (the "
               "options given now are not used).")
@mask_option
@hole_option
@overwrite_option
def learn(image, out_dir, quality, device, checkpoint_every, resume, mask, hole, overwrite, **settings):
    """Learn a model from IMAGE (or every PNG/JPEG in a folder IMAGE), then draw new samples from it as
    `tritongcn sample` does, and write them, a grid, metrics, the first layer's filters and the model
    to --out.

    With --mask or --hole, the texture is learned from IMAGE's known pixels only: a photo with an object,
    a logo or a scratch in it.

    Ctrl-C or SIGTERM saves a checkpoint at the end of the current iteration and exits with 130; run the
    same command with --resume to continue: on the CPU the result is the one an uninterrupted run gives.
    """
    from .runs import LearnRun, learn as run_learn

    with _run_errors():
        run_learn(LearnRun(image, out_dir, settings, quality=quality, device=device, checkpoint_every=checkpoint_every,
                           resume=resume, overwrite=overwrite, mask=mask, hole=hole))


@main.command("eval")
@click.argument("texture", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("samples", nargs=-1, required=True, type=click.Path(path_type=Path))
@image_size_option("TEXTURE is preprocessed as `learn` does: shorter side resized to this, centred crop.",
                   default=LearnConfig.image_size)
@click.option("--crop", type=click.IntRange(28, 4096), default=None,
              help="Side of the crops compared, rounded down to a multiple of 8 [default: the samples' side or "
                   "half the texture's, whichever is smaller].")
@click.option("--crops", type=click.IntRange(2, 100000), default=64, show_default=True,
              help="Crops drawn from each set.")
@seed_option("Seed of the crops, noise baselines and projections.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate_command(texture, samples, as_json, **options):
    """Texture statistics of SAMPLES (images or folders of them) against TEXTURE. Lower is better.

    patch_swd: multi-scale sliced Wasserstein distance between 7x7 colour patch distributions.
    ps_z: mean |z| of the Portilla-Simoncelli statistics of the luminance (needs the `eval` extra,
    pip install 'tritongcn[eval]'). Real crops of the texture give the floor; random-phase noise with
    the texture's spectrum and white noise give the scale.
    """
    from .runs.evaluation import EvalRun, evaluate_samples, table_lines

    with _run_errors():
        result = evaluate_samples(EvalRun(texture, samples, **options))
    click.echo(json.dumps(result, indent=2) if as_json else "\n".join(table_lines(result)))


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option("Output folder.", required=True)
@click.option("--mode", "with_mode", is_flag=True,
              help="Also descend deterministically from each image to a local mode of the energy "
                   "(an image that reconstructs itself, Proposition 2) and show it.")
@steps_option("Most descent steps for --mode.", default=500, low=1)
@image_size_option("Images are preprocessed as `learn` does: shorter side resized to this, centred crop "
                   "[default: the size the model was learned with].")
@device_option
@overwrite_option
def reconstruct(model_path, images, **options):
    """Auto-encode IMAGES with a learned MODEL: each image's activation bits bottom-up, then the top-down
    pass gated by them, sigma^2 B(delta(I)). Writes each image beside its reconstruction (and its local
    mode with --mode) to --out, with the relative reconstruction error ||I - sigma^2 B|| / ||I|| of each
    (mean-subtracted) image in reconstruct.json.
    """
    from .runs import ReconstructRun, reconstruct as run_reconstruct

    with _run_errors():
        run_reconstruct(ReconstructRun(model_path, images, **options))


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@chains_option("Number of chains (samples).", default=16, high=1 << 24)
@steps_option("Langevin steps per chain in all, `learn`'s --sample-steps (with --resume, the steps already taken "
              "count) [default: the model's sample_steps, the steps its own samples took at the end of `learn`: "
              "300 for the default recipe].", sample_steps=True)
@click.option("--size", "--sample-size", "size", type=click.IntRange(8, 16384), default=None,
              help="Side of the samples, `learn`'s --sample-size [default: the size the model was learned with].")
@out_option("Output folder [default: the model's folder / samples-<size>].")
@click.option("--init", type=click.Choice(STARTS), default=None,
              help="Start the chains at the mean image (zero), from N(0, sigma^2) noise around it, or from "
                   "random-phase noise with the training image's spectrum [default: where the model's "
                   "learning chains started, spectrum for the default recipe].")
@seed_option()
@click.option("--step-size", type=float, default=None, callback=positive_float,
              help="Langevin step size [default: the one the model was learned with].")
@click.option("--memory-budget", callback=byte_size, default=None,
              help="Memory for work in flight, like 2G or 512M; chains are advanced in chunks that fit "
                   "[default: half the free memory].")
@resume_option("Continue the chains saved in --out (chains.pt).")
@click.option("--save-every", type=click.IntRange(1, 10**7), default=None,
              help="Save the chains to --out/chains.pt every this many steps, so --resume loses little.")
@click.option("--format", "fmt", type=click.Choice(["auto", "png", "npz"]), default="auto", show_default=True,
              help="One PNG per chain, or one samples.npz (auto: PNGs up to 256 chains).")
@click.option("--gif", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Animate this many chains evolving into evolution.gif (21 frames, at most 512 px across).")
@periodic_option("Sample on the torus (seamless tiles) or with zero padding [default: as learned].", default=None)
@device_option
@backend_option
@precision_option()
@overwrite_option
def sample(model_path, **options):
    """Draw new samples from a learned MODEL (model.pt of `tritongcn learn`): chains that start where its
    learning chains started and run its Langevin dynamics, by default for as many steps as the samples
    `learn` drew at its end.

    Under `torchrun --nproc-per-node P` the chains are split between the P processes; each chain is the
    same as in a single-process run with the same seed.
    """
    from .runs import SampleRun, sample as run_sample

    with _run_errors():
        run_sample(SampleRun(model_path, **options))


def fill_options(command):
    """The options `complete` and `expand` share: how the unknown pixels are sampled, and by what model."""
    return apply(command, [
        chains_option("Results drawn, each its own sample; all are written when more than one.", default=1,
                      high=1 << 16),
        steps_option("Langevin steps, then 10 noise-free ones [default: the model's sample_steps, 300 for the "
                     "default recipe].", sample_steps=True),
        seed_option(),
        image_size_option("Resize IMAGE first so that its shorter side is this (the whole image, no crop) "
                          "[default: IMAGE as it is].", high=16384),
        click.option("--quality", type=click.Choice(QUALITIES), default="default", show_default=True,
                     help="The recipe of the model learned when no MODEL is given (see `learn`)."),
        device_option, backend_option, precision_option(),
        resume_option("Continue the learning interrupted in --out/model, or use the model learned there before."),
        overwrite_option,
    ])


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@mask_option
@hole_option
@out_option("Output folder [default: runs/<image name>-complete].")
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
    from .runs.completion import CompleteRun, FillSettings, complete as run_complete

    if (mask is None) == (hole is None):
        raise click.UsageError("mark the unknown pixels with --mask MASK or --hole X,Y,W,H (one of them)")
    with _run_errors():
        run_complete(CompleteRun(image, out_dir or Path("runs") / f"{image.stem}-complete", mask, hole,
                                 FillSettings(model_path, **fill)))


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size", required=True, metavar="W[xH]", callback=canvas_size,
              help="The result's width and height in pixels (one number: a square).")
@click.option("--at", default=None, metavar="X,Y", callback=integers(2, ",", "X,Y: a corner in pixels"),
              help="Where IMAGE's top-left corner goes on the canvas [default: centred].")
@click.option("--tile", is_flag=True, help="Make the result tile seamlessly: the canvas is sampled on the torus "
                                           "(its sides rounded up to the net's stride).")
@out_option("Output folder [default: runs/<image name>-expand].")
@fill_options
def expand(image, model_path, size, at, tile, out_dir, **fill):
    """Grow IMAGE onto a larger canvas of --size: IMAGE is kept as it is and the rest is texture sampled
    around it, with no seam.

    With MODEL (a model.pt of `learn`) it only samples; without, it first learns the texture from IMAGE
    into --out/model (as `learn --shading flatten`). Writes expanded.png, before_after.png and expand.json
    (tiled.png with --tile, expansions/ with --chains K).
    """
    from .runs.completion import ExpandRun, FillSettings, expand as run_expand

    with _run_errors():
        run_expand(ExpandRun(image, out_dir or Path("runs") / f"{image.stem}-expand", size, at, tile,
                             FillSettings(model_path, **fill)))


@main.command()
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@chains_option("Chains advanced together in each step.", default=16)
@click.option("--size", type=click.IntRange(8, 8192), default=112, show_default=True,
              help="Side of the chains in pixels (rounded up to the net's stride when periodic).")
@steps_option("Timed Langevin steps (after one warm-up step); the comparison runs 3 rounds of as many.",
              default=5, low=1)
@periodic_option("What the layers see beyond the edge: the torus, or zero padding [default: MODEL's own; the "
                 "torus without MODEL, as `learn` makes them].", default=None)
@backend_option
@precision_option()
@device_option
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Chrome trace of one more step (open it in Perfetto or chrome://tracing).")
@click.option("--no-compare", is_flag=True, help="Skip timing the autograd loop.")
def profile(model_path, no_compare, **options):
    """Time each kernel call site of a Langevin step, with FLOPs and the share of the machine's peak.

    Without MODEL, the paper's texture net with random weights (biases of both signs). The summary
    compares chain-steps/s with the plain autograd Langevin loop on the same weights, timed in the same run.
    """
    from .runs.profiling import ProfileRun, profile as run_profile

    with _run_errors():
        run_profile(ProfileRun(model_path, compare=not no_compare, **options))
