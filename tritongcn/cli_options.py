"""The command line's options, each declared once: the ones several commands share (a factory each, given
the command's own help and default), and `learn`'s recipe settings, generated from LearnConfig's fields
with their help. Free of torch, so that `--help` is instant."""

import math
from dataclasses import fields
from pathlib import Path

import click

from .config import HIGH, RELEASE, LearnConfig
from .precision import AUTO_PRECISION, PRECISION_CHOICES

DEFAULTS = LearnConfig().to_dict()
SEED_RANGE = click.IntRange(0, 2**63 - 1)


def positive_float(ctx, param, value):
    if value is None:
        return value
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive finite number, got {value}")
    return value


def _split_integers(value: str, separator: str) -> tuple:
    """The integers of `value` joined by `separator` ('10,20' or '640x480'); () if any part is not one."""
    try:
        return tuple(int(p) for p in value.lower().split(separator))
    except ValueError:
        return ()


def integers(count: int, separator: str, what: str):
    """An option callback that reads `count` non-negative integers joined by `separator`, like 10,20,64,48."""
    def parse(ctx, param, value):
        if value is None:
            return None
        numbers = _split_integers(value, separator)
        if len(numbers) != count or min(numbers) < 0:
            raise click.BadParameter(f"{value!r} is not {what}")
        return numbers
    return parse


def canvas_size(ctx, param, value):
    """'448' (a square) or '640x480'."""
    numbers = _split_integers(value, "x")
    if len(numbers) not in (1, 2) or min(numbers) < 1 or max(numbers) > 16384:
        raise click.BadParameter(f"{value!r} is not W or WxH in pixels, like 448 or 640x480")
    return numbers * 2 if len(numbers) == 1 else numbers


def byte_size(ctx, param, value):
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


# Shared options.

def seed_option(help: str = "Seed of the starting noise and the Langevin noise.", default: int = 0):
    return click.option("--seed", type=SEED_RANGE, default=default, show_default=True, help=help)


def out_option(help: str, required: bool = False):
    return click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        required=required, help=help)


def chains_option(help: str, default: int | None, high: int = 1 << 20):
    return click.option("--chains", type=click.IntRange(1, high), default=default, show_default=default is not None,
                        help=help)


def image_size_option(help: str, default: int | None = None, high: int = 4096):
    return click.option("--image-size", type=click.IntRange(8, high), default=default,
                        show_default=default is not None, help=help)


def steps_option(help: str, default: int | None = None, sample_steps: bool = False, low: int = 0):
    """`--steps`: Langevin steps; with `sample_steps`, also spelt as `learn`'s --sample-steps."""
    names = ("--steps", "--sample-steps", "steps") if sample_steps else ("--steps", "steps")
    return click.option(*names, type=click.IntRange(low, 10**7), default=default,
                        show_default=default is not None, help=help)


def periodic_option(help: str, default: bool | None):
    """The chains' boundary: the torus, or zero padding (one meaning wherever it appears)."""
    return click.option("--periodic/--zero-padding", default=default, show_default=default is not None, help=help)


def resume_option(help: str):
    return click.option("--resume", is_flag=True, help=help)


device_option = click.option("--device", default="auto", show_default=True,
                             help="Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")
backend_option = click.option("--backend", type=click.Choice(["auto", "torch", "triton"]), default="auto",
                              show_default=True, help="Kernel backend (auto: triton on CUDA, torch on the CPU).")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
mask_option = click.option("--mask", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="An image of IMAGE's size whose white pixels mark IMAGE's unknown ones.")
hole_option = click.option("--hole", default=None, metavar="X,Y,W,H",
                           callback=integers(4, ",", "X,Y,W,H: the hole's corner, width and height in pixels"),
                           help="A rectangle of unknown pixels (instead of --mask): its top-left corner, width "
                                "and height, in IMAGE's pixels.")


def precision_option(what: str = "Precision of the sampler's convolutions (the chains stay float32); "):
    return click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
                        help=what + AUTO_PRECISION)


def apply(command, options):
    """`command` with `options` (decorators) in the order given, as if stacked above it."""
    for option in reversed(options):
        command = option(command)
    return command


# `learn`'s recipe settings, from LearnConfig's fields.

SHARED = {"chains": chains_option, "image_size": image_size_option, "seed": seed_option,
          "periodic": periodic_option}  # fields whose option a shared factory declares


def _preset_help(name: str, text: str) -> str:
    """A setting's help with its default, and the other recipes' where they differ (a help that says its
    own default in brackets keeps it)."""
    if text.endswith("]"):
        return text
    others = [f"{value} with --{label}" for label, value in
              (("quality high", HIGH.get(name)), ("model object or --cd", RELEASE.get(name))) if value is not None]
    return f"{text} [default: {DEFAULTS[name]}{'; ' + '; '.join(others) if others else ''}]"


def _setting_option(f):
    """The option of one LearnConfig field: None by default, so that the recipe decides what is not given."""
    meta, help_ = f.metadata, _preset_help(f.name, f.metadata["help"])
    if f.name in SHARED:
        return SHARED[f.name](help=help_, default=None)
    option = meta["option"] or f"--{f.name.replace('_', '-')}"
    if meta["choices"]:
        kind = click.Choice(meta["choices"])
    elif isinstance(f.default, float):
        return click.option(option, f.name, type=float, default=None, callback=positive_float, help=help_)
    else:
        kind = click.IntRange(meta["low"], meta["high"])
    return click.option(option, f.name, type=kind, default=None, help=help_)


def recipe_options(command):
    """`learn`'s options for every LearnConfig field that has a help, in the config's order."""
    return apply(command, [_setting_option(f) for f in fields(LearnConfig) if f.metadata.get("help")])
