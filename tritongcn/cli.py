"""The `tritongcn` command line. torch is imported inside commands so that `--help` is instant."""

import dataclasses
import io
import json
import math
import time
from pathlib import Path

import click

from . import __version__
from .config import (AUTO_PRECISION, HIGH, PRECISION_CHOICES, QUALITIES, RELEASE, STARTS, LearnConfig,
                     image_sample_size, learning_chain_size, recipe)
from .progress import Progress, format_seconds

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
              help="The texture recipe: default (about 3 minutes for a 224 px texture on a 2-core CPU) or "
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
@click.option("--iterations", type=click.IntRange(1, 10**7), default=None,
              help=_preset_help("iterations", "Weight updates per grown layer (in all with --cd)."))
@click.option("--start", type=click.Choice(STARTS), default=None,
              help=_preset_help("start", "Where chains start: the mean image (zero), white noise, or "
                                         "random-phase noise with the training image's spectrum."))
@click.option("--sample-steps", type=click.IntRange(1, 10**6), default=None,
              help=_preset_help("sample_steps", "Langevin steps of the samples drawn at the end (and "
                                                "`sample`'s default)."))
@click.option("--layers", type=click.IntRange(1, 3), default=DEFAULTS["layers"], show_default=True,
              help="Layers of the net.")
@click.option("--lr", type=float, default=None, callback=_positive_float,
              help=_preset_help("lr", "Learning rate (biases twice it)."))
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=DEFAULTS["seed"], show_default=True,
              help="Seed of the initial weights and the Langevin noise.")
@click.option("--periodic/--zero-padding", default=DEFAULTS["periodic"], show_default=True,
              help="Synthesize on the torus (seamless tiles, no flat border; data scored by their interior) "
                   "or with the release's zero padding everywhere.")
@click.option("--device", default="auto", show_default=True,
              help="Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=DEFAULTS["precision"],
              show_default=True, help="Precision of the sampler's convolutions and the weight gradient (the "
                                      "chains stay float32); " + AUTO_PRECISION)
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
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
def learn(image, out_dir, model_kind, quality, image_size, sample_size, chain_size, chains, langevin_steps,
          step_size, sigma, iterations, start, sample_steps, layers, lr, seed, periodic, device, precision,
          cd_steps, checkpoint_every, resume, overwrite):
    """Learn a model from IMAGE (or every PNG/JPEG in a folder IMAGE), then draw new samples from it as
    `tritongcn sample` does, and write them, a grid, metrics, the first layer's filters and the model
    to --out.

    Ctrl-C or SIGTERM saves a checkpoint at the end of the current iteration and exits with 130; run the
    same command with --resume to continue: on the CPU the result is the one an uninterrupted run gives.
    """
    import torch

    from .distributed import finish, gather_objects, init_world
    from .interrupts import INTERRUPTED_EXIT_CODE, stop_requests
    from .io import InputError, image_paths, load_checkpoint, load_image, preprocess, save_checkpoint
    from .learn import Learner
    from .model import OBJECT_LAYERS, TEXTURE_LAYERS, GenerativeConvNet

    run_start = time.perf_counter()
    out_dir = out_dir or Path("runs") / image.stem
    checkpoint_path = out_dir / "checkpoint.pt"
    if resume and overwrite:
        raise click.UsageError("--resume continues the run in --out and --overwrite replaces it: pass one")
    if (out_dir / "model.pt").exists() and not overwrite:
        raise click.ClickException(f"{out_dir} already holds a finished run (model.pt): pass --overwrite or "
                                   "choose another --out")
    if checkpoint_path.exists() and not (resume or overwrite):
        raise click.ClickException(f"{out_dir} holds an interrupted run (checkpoint.pt): pass --resume to "
                                   "continue it, --overwrite to start again, or choose another --out")
    saved = None
    if resume:
        if not checkpoint_path.exists():
            raise click.ClickException(f"nothing to resume: {checkpoint_path} does not exist")
        try:
            saved = load_checkpoint(checkpoint_path)
        except InputError as err:
            raise click.ClickException(str(err)) from None
        # The interrupted run's settings, so that it ends as it would have.
        c = LearnConfig.from_dict(saved["config"])
        model_kind, image_size, cd_steps, layers, periodic = c.model, c.image_size, c.cd_steps, c.layers, c.periodic
    try:
        paths = image_paths([image]) if image.is_dir() else [image]
        if not paths:
            raise InputError(f"{image}: a folder without PNG or JPEG images")
        raws = [load_image(path, note=_note) for path in paths]
    except InputError as err:
        raise click.ClickException(str(err)) from None
    if len({raw.shape[2] for raw in raws}) > 1:
        raise click.ClickException(f"{image}: mixes grayscale and colour images; convert them to one kind")
    for path, raw in zip(paths, raws):
        if raw.max() == raw.min():
            raise click.ClickException(f"{path}: every pixel is {raw.flat[0]:g}: a constant image has no "
                                       "texture to learn")
    is_object = model_kind == "object"
    if image_size is None:
        image_size = min(min(raw.shape[:2]) for raw in raws) if is_object else DEFAULTS["image_size"]
    geometry = GenerativeConvNet(raws[0].shape[2], OBJECT_LAYERS if is_object else TEXTURE_LAYERS, depth=layers)
    field = geometry.receptive_field()
    stride = geometry.total_stride()
    sample_size = sample_size or image_sample_size(image_size, stride)
    chain_size = chain_size or learning_chain_size(image_size, stride, field)
    for path, raw in zip(paths, raws):
        if min(raw.shape[:2]) < field:
            raise click.ClickException(
                f"{path}: {raw.shape[1]}x{raw.shape[0]} pixels is smaller than the net's receptive field "
                f"({field}x{field} for {layers} layers); use a larger image or fewer --layers")
    sizes = [("--image-size", image_size)]
    if not (is_object or cd_steps):
        sizes += [("--sample-size", sample_size), ("--chain-size", chain_size)]
    for name, size in sizes:
        if size < field:
            raise click.ClickException(f"{name} {size} is smaller than the receptive field ({field} px)")
        if name != "--image-size" and periodic and size % stride:
            raise click.BadParameter(f"{size} is not a multiple of the net's total stride {stride}, "
                                     f"which periodic chains need (try {size // stride * stride})",
                                     param_hint=name)
    device = _usable_device(device)

    given = dict(chains=chains, langevin_steps=langevin_steps, step_size=step_size, iterations=iterations,
                 start=start, sample_steps=sample_steps, lr=lr)
    config = LearnConfig(**{**recipe(model_kind, quality, cd_steps),
                            **{name: value for name, value in given.items() if value is not None}},
                         image_size=image_size, sample_size=image_size if is_object else sample_size,
                         chain_size=image_size if is_object else chain_size, sigma=sigma, layers=layers,
                         seed=seed, periodic=periodic and not is_object, device=device, precision=precision,
                         cd_steps=cd_steps, model=model_kind)
    if saved is not None:  # every setting of the interrupted run, the ones without an option too
        config = dataclasses.replace(LearnConfig.from_dict(saved["config"]), device=device)
        click.echo(f"resuming {checkpoint_path} with its own settings: {_settings_line(config)}")
    images = torch.stack([preprocess(raw, image_size) for raw in raws])
    world = init_world(torch.device(device))
    try:
        learner = Learner.from_images(images, config, world=world)
        records = []
        if saved is not None:
            if not torch.equal(saved["mean"], learner.mean):
                raise ValueError(f"{image} is not what the interrupted run learned from (its mean colour "
                                 "differs): resume with the same images")
            learner.load_state_dict(saved)
            records = list(saved.get("records", []))
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    learner.bank.notify = _note

    if world.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise click.ClickException(f"cannot create the output folder {out_dir}: {err.strerror or err}")
        if overwrite:  # an interrupted run's checkpoint must not outlive the run that replaces it
            checkpoint_path.unlink(missing_ok=True)
    metrics_file = open(out_dir / "metrics.jsonl", "w") if world.is_main else io.StringIO()
    for record in records:  # a resumed run's history up to its checkpoint
        metrics_file.write(json.dumps(record) + "\n")

    def save(path):
        # Every process takes part (the chains are gathered); the first one writes.
        state = {**learner.state_dict(), "records": records}
        state["chains"] = torch.cat(gather_objects(state["chains"], world))
        if world.is_main:
            save_checkpoint(state, path)
            _save_preview(learner, state["chains"], out_dir / "preview.png")

    quiet = None if world.is_main else io.StringIO()  # one progress display, the first process's
    if world.is_main and saved is None:
        click.echo(f"learning {learner.model.in_channels}-channel {image_size} px "
                   f"{'images' if len(images) > 1 else 'texture'}: {_settings_line(learner.config)}")
    watch = _LearningWatch()
    with metrics_file, stop_requests() as stop, \
            Progress(learner.total_iterations, f"learning ({learner.config.precision})", file=quiet,
                     costs=learner.iteration_costs()) as bar:
        bar.skip(len(records))
        for record in _checked(learner.run(), checkpoint_path):
            records.append(record)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            recon = f" recon {record['reconstruction_error']:.3f}" if "reconstruction_error" in record else ""
            layer_text = f"layer {record['layer']}/{layers} " if Learner.grows(learner.config) else ""
            bar.update(1, f"{layer_text}it {record['iteration']}/{learner.config.iterations} "
                          f"gap {record['gap']:+.3g}{recon}")
            if world.is_main:
                for warning in watch(record):
                    click.echo(f"\nwarning: {warning}", err=True)
            if _stop_everywhere(stop, world, learner.device):
                save(checkpoint_path)
                if world.is_main:
                    click.echo(f"\n{stop.signal_name}: stopped after {len(records)} of "
                               f"{learner.total_iterations} iterations; continue with --resume "
                               f"({checkpoint_path})", err=True)
                finish(world)
                raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE)
            if len(records) % checkpoint_every == 0 and len(records) < learner.total_iterations:
                save(checkpoint_path)
    learned_in = time.perf_counter() - run_start
    # The learning chains of every process, in bank order.
    chains = torch.cat(gather_objects(learner.samples(), world))
    state = learner.state_dict()
    state["chains"] = torch.cat(gather_objects(state["chains"], world))
    finish(world)
    if not world.is_main:
        return
    # The product is the model: its samples are new chains drawn as `tritongcn sample` draws them. A
    # contrastive divergence model has no sampler from scratch; its samples are its chains.
    samples = chains if config.cd_steps else _fresh_samples(learner)
    _write_outputs(out_dir, learner.config.seed, state, images, samples, chains, records)
    checkpoint_path.unlink(missing_ok=True)  # model.pt holds the same state, finished
    if len(images) == 1:
        _evaluate_run(out_dir, images[0], samples, None if config.cd_steps else chains)
    else:
        click.echo("no eval.json: its texture figures compare samples with a single training image")
    click.echo(f"done in {format_seconds(time.perf_counter() - run_start)} (learning "
               f"{format_seconds(learned_in)}): {out_dir}/grid.png, {out_dir}/samples/, {out_dir}/model.pt")


SAMPLES_DRAWN = 4  # new samples `learn` draws from the learned model for samples/, grid.png and eval.json


def _fresh_samples(learner) -> "torch.Tensor":
    """SAMPLES_DRAWN new chains of the learned model, drawn as `tritongcn sample` does by default, as
    images in [0, 255]."""
    steps = learner.config.sample_steps
    bank = learner.fresh_bank(SAMPLES_DRAWN)
    bank.notify = _note
    size = bank.shape[-1]
    with Progress(steps * len(bank), f"sampling {len(bank)} new chains of {size} px") as bar:
        bank.advance(steps, lambda done: bar.update(done * steps))
    return (bank.x.cpu() + learner.mean.view(1, -1, 1, 1)).clamp(0, 255)


def _settings_line(config) -> str:
    """The recipe of a run in one line."""
    from .learn import Learner

    how = "layers grown one at a time" if Learner.grows(config) else "all layers at once"
    if config.cd_steps:
        chains = f"{config.cd_steps}-step contrastive divergence"
    else:
        chains = (f"{config.chains} chains of {config.chain_size} px from {config.start}, "
                  f"{config.langevin_steps} Langevin steps of {config.step_size:g} per update")
    optimizer = config.optimizer + (" (steps halved on reversal)" if Learner.damps(config) else "")
    return (f"{config.layers} layers ({how}), {config.iterations} iterations, {optimizer} lr "
            f"{config.lr:g}, {chains}")


class _LearningWatch:
    """What a user should hear of while learning runs: a layer regrown after going silent, and a gap that
    swings from sign to sign at every iteration (the step is too large for the layer). Each once."""

    WINDOW = 12  # iterations looked at for a swing

    def __init__(self):
        self.gaps, self.warned = [], set()

    def __call__(self, record) -> list:
        warnings = []
        if "regrown" in record:
            warnings.append(f"layer {record['regrown']} went silent on the training image (no unit active) and "
                            f"is learned again from its first weights at {record['step_scale']:g} of the step")
        self.gaps = (self.gaps + [(record["gap"], record["f_obs"])])[-self.WINDOW:]
        gaps = [g for g, _ in self.gaps]
        flips = sum(a * b < 0 for a, b in zip(gaps, gaps[1:]))
        scale = sum(abs(f) for _, f in self.gaps) / len(self.gaps)
        swing = sum(abs(g) for g in gaps) / len(gaps)
        layer = record["layer"]
        if len(gaps) == self.WINDOW and flips == self.WINDOW - 1 and swing > 0.05 * scale and layer not in self.warned:
            self.warned.add(layer)
            warnings.append(f"the gap swings between {min(gaps):+.3g} and {max(gaps):+.3g} from one iteration to "
                            f"the next (layer {layer}): the step is too large for it; a smaller --lr may learn "
                            "better")
        return warnings


def _save_preview(learner, chains, path) -> None:
    """The learning chains so far as one contact sheet, in [0, 255]."""
    from .io import contact_sheet, save_png

    save_png(contact_sheet((chains + learner.mean.view(1, -1, 1, 1)).clamp(0, 255)), path)


def _note(message: str) -> None:
    """A remark about the input that changes nothing the user must act on, on stderr."""
    click.echo(f"note: {message}", err=True)


def _stop_everywhere(stop, world, device) -> bool:
    """Whether any process was asked to stop: all of them must save and stop at the same iteration."""
    if world.size == 1:
        return bool(stop)
    import torch

    from .distributed import all_reduce_sum

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    all_reduce_sum([flag], world)
    return flag.item() > 0


def _usable_device(device: str) -> str:
    """`device` checked (auto: cuda when available, else cpu); under torchrun, this process's GPU."""
    import torch

    from .distributed import local_device

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = local_device(device)
    try:
        if torch.device(device).type not in ("cpu", "cuda"):
            raise RuntimeError("tritongcn runs on cpu and cuda devices")
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise click.BadParameter(f"{device!r} is not a usable device ({err})", param_hint="--device")
    return device


def _evaluate_run(out_dir, training, samples, chains=None) -> None:
    """Score the samples (and the learning chains, when given) against the training image into eval.json
    (see `tritongcn eval`)."""
    from .evaluate import SMALLEST_CROP, evaluate, largest_crop, portilla_simoncelli_available
    from .io import save_json

    others = {} if chains is None else {"learning_chains": chains.round()}
    if min(largest_crop(training.shape, s.shape) for s in [samples, *others.values()]) < SMALLEST_CROP:
        click.echo(f"no eval.json: samples or training image too small for {SMALLEST_CROP} px crops")
        return
    has_ps = portilla_simoncelli_available()
    result = evaluate(training, samples.round(), use_ps=has_ps, others=others)
    save_json(result, out_dir / "eval.json", indent=2)
    for name in ("samples", *others):
        figures = ", ".join(f"{k} {result[name][k]:.3f}" for k in result[name])
        click.echo(f"eval, {name.replace('_', ' ')}: {figures}")
    references = ", ".join(f"{k} {result['real_crops'][k]:.3f} / {result['random_phase'][k]:.3f}"
                           for k in result["samples"])
    click.echo(f"eval, real crops / random-phase noise: {references} (lower is better)")
    if not has_ps:
        click.echo("(no ps_z: it needs plenoptic, pip install 'tritongcn[eval]')")


def _checked(records, checkpoint_path):
    """Learning records, with a divergence turned into a one-line error (metrics.jsonl keeps the history,
    and the last checkpoint, written before the bad iteration, stays as it was)."""
    from .learn import LearningFailed

    try:
        yield from records
    except (FloatingPointError, MemoryError, LearningFailed) as err:
        kept = f"; the last good state is in {checkpoint_path}" if checkpoint_path.exists() else ""
        raise click.ClickException(f"{err}{kept}") from None


def _write_outputs(out_dir, seed, state, images, samples, chains, records) -> None:
    """`images` (M, C, H, W): the training images as learned from; `samples` the model's new samples;
    `chains` the learning chains; all in [0, 255]."""
    import numpy as np
    import torch

    from .io import contact_sheet, draw_learning_curve, filter_sheet, make_grid, save_checkpoint, save_png

    sample_dir = out_dir / "samples"
    sample_dir.mkdir(exist_ok=True)
    for i, sample in enumerate(samples):
        save_png(sample, sample_dir / f"{i:04d}.png")
    real_crops = None
    if samples.shape[-1] <= min(images.shape[-2:]):
        from .evaluate import random_crops

        # Real crops at the samples' size, so the eye compares like with like.
        real_crops = random_crops(images, samples.shape[-1], len(samples), torch.Generator().manual_seed(seed))
    zoom = max(1, 96 // samples.shape[-1])  # small images (aligned faces) enlarged, pixels kept sharp
    if zoom > 1:
        def enlarge(t):
            return None if t is None else t.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
        images, samples, real_crops = enlarge(images), enlarge(samples), enlarge(real_crops)
    training = images[0]
    if len(images) > 1:  # all the training images in one panel
        sheet = np.asarray(contact_sheet(images, gap=2), dtype=np.float32)
        training = torch.from_numpy(sheet.reshape(sheet.shape[0], sheet.shape[1], -1)).permute(2, 0, 1)
    title = "training image" if len(images) == 1 else f"{len(images)} training images"
    save_png(make_grid(training, samples, real_crops, training_title=title), out_dir / "grid.png")
    draw_learning_curve(records, out_dir / "learning_curve.png")
    save_png(filter_sheet(state["model"]["convs.0.weight"]), out_dir / "filters.png")
    save_png(contact_sheet(chains), out_dir / "chains.png")
    (out_dir / "preview.png").unlink(missing_ok=True)  # chains.png is the last preview
    save_checkpoint(state, out_dir / "model.pt")


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
    from .io import InputError, image_paths, load_image, preprocess

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
        click.echo("(ps_z needs plenoptic: pip install 'tritongcn[eval]')")


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


def _load_model(model_path: Path):
    """(checkpoint dict, GenerativeConvNet with its weights) of a model file, or a one-line error."""
    from .io import InputError, load_checkpoint
    from .model import GenerativeConvNet

    try:
        state = load_checkpoint(model_path)
        model = GenerativeConvNet.from_config(state["model_config"])
        model.load_state_dict(state["model"])
    except InputError as err:
        raise click.ClickException(str(err)) from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a net description or weights that do not fit
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise click.ClickException(f"{model_path}: damaged model file ({detail})") from None
    return state, model


def _finite(value):
    """A float for JSON: rounded, and None where it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None


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
@click.option("--device", default="auto", show_default=True, help="Torch device: auto, cpu, cuda, ...")
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier run in --out.")
def reconstruct(model_path, images, out_dir, with_mode, steps, image_size, device, overwrite):
    """Auto-encode IMAGES with a learned MODEL: each image's activation bits bottom-up, then the top-down
    pass gated by them, sigma^2 B(delta(I)). Writes each image beside its reconstruction (and its local
    mode with --mode) to --out, with the relative reconstruction error ||I - sigma^2 B|| / ||I|| of each
    (mean-subtracted) image in reconstruct.json.
    """
    import torch

    from .autoencoder import descend_to_mode, reconstruction_error
    from .autoencoder import reconstruct as auto_encode
    from .config import LearnConfig
    from .learn import data_boundary
    from .io import InputError, contact_sheet, image_paths, load_image, preprocess, save_json, save_png

    state, model = _load_model(model_path)
    learned = LearnConfig.from_dict(state["config"])
    try:
        paths = image_paths(images)
        if not paths:
            raise InputError("no PNG or JPEG images in " + ", ".join(str(p) for p in images))
        size = image_size or learned.image_size
        raw = [load_image(p) for p in paths]
    except InputError as err:
        raise click.ClickException(str(err)) from None
    channels = model.in_channels
    for path, image in zip(paths, raw):
        if image.shape[2] != channels:
            raise click.ClickException(f"{path}: {'grayscale' if image.shape[2] == 1 else 'colour'} image, "
                                       f"but the model was learned on {'grayscale' if channels == 1 else 'colour'}")
    if (out_dir / "reconstruct.json").exists() and not overwrite:
        raise click.ClickException(f"{out_dir} already holds a reconstruction: pass --overwrite or choose "
                                   "another --out")
    device = torch.device(_usable_device(device))
    boundary = data_boundary(learned, model)  # how learn scored the data
    mean = state["mean"].float().view(1, -1, 1, 1)
    x = torch.stack([preprocess(image, size) for image in raw]) - mean
    try:
        model.check_size(x.shape, boundary)
    except ValueError as err:
        raise click.ClickException(f"--image-size {size}: {err}") from None
    model, x = model.to(device), x.to(device)
    sigma = learned.sigma
    recon = auto_encode(model, x, sigma, boundary)
    errors = reconstruction_error(x, recon).cpu()
    panels = [x.cpu(), recon.cpu()]
    if with_mode:
        with click.progressbar(length=steps, label="descending to the modes", show_eta=True,
                               item_show_func=lambda r: r) as bar:
            modes, residuals, taken = descend_to_mode(
                model, x, sigma, boundary, max_steps=steps,
                progress=lambda step, worst: bar.update(1, f"largest residual {worst:.1e}"))
        panels.append(modes.cpu())
        mode_errors = reconstruction_error(x, modes).cpu()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": str(model_path), "sigma": sigma, "image_size": size, "images": []}
    for i, path in enumerate(paths):
        row = torch.stack([p[i] for p in panels]) + mean
        save_png(contact_sheet(row.clamp(0, 255), columns=len(panels)), out_dir / f"{i:04d}.png")
        # An image equal to the mean colour has no norm to compare with: its error is null (NaN).
        entry = {"file": str(path), "output": f"{i:04d}.png", "reconstruction_error": _finite(errors[i])}
        line = f"{path}: reconstruction error {errors[i].item():.4f}"
        if with_mode:
            entry.update(mode_residual=_finite(residuals[i]), mode_error=_finite(mode_errors[i]))
            line += (f", mode {mode_errors[i].item():.4f} from the image, residual "
                     f"||I - sigma^2 B|| / ||I|| {residuals[i].item():.1e}")
        report["images"].append(entry)
        click.echo(line)
    mean_error = errors.nanmean()  # images equal to the mean colour (NaN) left out
    report["mean_reconstruction_error"] = _finite(mean_error)
    if with_mode:
        report["descent_steps"] = taken
    save_json(report, out_dir / "reconstruct.json", indent=1)
    click.echo(f"mean reconstruction error {mean_error.item():.4f} over {len(paths)} images; "
               f"image | reconstruction{' | mode' if with_mode else ''} in {out_dir}")


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chains", type=click.IntRange(1, 1 << 24), default=16, show_default=True,
              help="Number of chains (samples).")
@click.option("--steps", type=click.IntRange(0, 10**7), default=None,
              help="Langevin steps per chain in all (with --resume, the steps already taken count) [default: "
                   "the model's sample_steps, the steps its own samples took at the end of `learn`: 300 for "
                   "the default recipe].")
@click.option("--size", type=click.IntRange(8, 16384), default=None,
              help="Side of the samples [default: the size the model was learned with].")
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
              help="Animate this many chains evolving into evolution.gif.")
@click.option("--periodic/--zero-padding", default=None,
              help="Sample on the torus (seamless tiles) or with zero padding [default: as learned].")
@click.option("--device", default="auto", show_default=True, help="Torch device: auto, cpu, cuda, cuda:1, ...")
@click.option("--backend", type=click.Choice(["auto", "torch", "triton"]), default="auto", show_default=True,
              help="Kernel backend (auto: triton on CUDA, torch on the CPU).")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="Precision of the sampler's convolutions (the chains stay float32); " + AUTO_PRECISION)
@click.option("--overwrite", is_flag=True, help="Replace the samples of an earlier run in --out.")
def sample(model_path, chains, steps, size, out_dir, init, seed, step_size, memory_budget, resume, save_every,
           fmt, gif, periodic, device, backend, precision, overwrite):
    """Draw new samples from a learned MODEL (model.pt of `tritongcn learn`): chains that start where its
    learning chains started and run its Langevin dynamics, by default for as many steps as the samples
    `learn` drew at its end.

    Under `torchrun --nproc-per-node P` the chains are split between the P processes; each chain is the
    same as in a single-process run with the same seed.
    """
    import torch

    from .chains import sampler_bank
    from .distributed import finish, init_world
    from .interrupts import INTERRUPTED_EXIT_CODE, stop_requests

    state, model = _load_model(model_path)
    learned = LearnConfig.from_dict(state["config"])
    if model.top == "fc":  # the object model: aligned images of the size its top filter covers
        if (size and size != model.image_size) or periodic:
            raise click.ClickException(f"the object model samples {model.image_size} px images with zero "
                                       "padding only (drop --size and --periodic)")
        size, periodic = model.image_size, False
    periodic = learned.periodic if periodic is None else periodic
    steps = learned.sample_steps if steps is None else steps
    init = init or learned.start
    if init == "spectrum" and "start_kernel" not in state:
        raise click.ClickException(f"{model_path} holds no spectrum of its training image (a model of "
                                   "tritongcn before 0.2.0): use --init zero or --init noise")
    size = size or learned.sample_size
    stride = model.total_stride()
    if periodic and size % stride:
        rounded = max(stride, round(size / stride) * stride)
        click.echo(f"periodic samples need sides that are multiples of {stride}: sampling at {rounded} px")
        size = rounded
    out_dir = out_dir or model_path.parent / f"samples-{size}"
    device = _usable_device(device)
    world = init_world(torch.device(device))
    state_path = _rank_path(out_dir / "chains.pt", world)  # each process saves and resumes its own shard
    if state_path.exists() and not (resume or overwrite):
        raise click.ClickException(f"{out_dir} already holds chains ({state_path.name}): pass --resume to "
                                   "continue them, --overwrite to start again, or choose another --out")
    if resume and not state_path.exists():
        raise click.ClickException(f"nothing to resume: {state_path} does not exist")
    first, count = world.shard(chains)
    if count == 0:
        raise click.ClickException(f"{chains} chains cannot be split between {world.size} processes")
    model = model.to(device)
    mean = state["mean"].float().view(1, -1, 1, 1)
    shape = (model.in_channels, size, size)
    try:
        if resume:
            bank = _load_bank(state_path, model, chains, shape, memory_budget, backend, device)
            if precision != "auto" and precision != bank.precision:
                click.echo(f"resuming in {bank.precision}, the precision the chains ran in (not {precision}), "
                           "so they continue exactly")
        else:
            bank = sampler_bank(model, learned, state.get("start_kernel"), count, size=size, seed=seed, init=init,
                                step_size=step_size, periodic=periodic, memory_budget=memory_budget,
                                backend=backend, device=device, first_chain=first, total_chains=chains,
                                precision=precision, mean=state["mean"])
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    out_dir.mkdir(parents=True, exist_ok=True)

    bank.notify = _note
    remaining = max(0, steps - int(bank.steps.min()))
    frames, frame_every = [], max(1, remaining // 40) if gif else 0
    animated = min(gif, len(bank)) if world.is_main else 0
    if animated:
        frames.append(_frame(bank, mean, animated))
    start = time.perf_counter()
    done = 0
    quiet = None if world.is_main else io.StringIO()  # one progress display, the first process's
    label = f"sampling {chains} {'chain' if chains == 1 else 'chains'} of {size} px from {init} ({bank.precision})"
    with stop_requests() as stop, Progress(remaining * len(bank), label, file=quiet) as bar:
        while done < remaining:
            # Segments of about a second, so that Ctrl-C is answered soon (the chains do not depend on
            # how their steps are split), cut at the saving and animation points.
            per_step = (time.perf_counter() - start) / done if done else None
            segment = min(remaining - done, max(1, int(1.0 / per_step)) if per_step else 1)
            for every in (save_every, frame_every):
                if every:
                    segment = min(segment, every - done % every)

            def progress(advanced, segment=segment):
                bar.update(advanced * segment,
                           f"{bar.done * world.size / max(time.perf_counter() - start, 1e-9):.0f} chain-steps/s")

            try:
                bank.advance(segment, progress)
            except MemoryError as err:
                _save_bank(bank, state_path)
                raise click.ClickException(f"{err}; the chains so far are in {state_path}") from None
            done += segment
            if animated and done % frame_every == 0:
                frames.append(_frame(bank, mean, animated))
            if save_every and done % save_every == 0 and done < remaining:
                _save_bank(bank, state_path)
            if done < remaining and _stop_everywhere(stop, world, bank.device):
                _save_bank(bank, state_path)
                if world.is_main:
                    click.echo(f"\n{stop.signal_name}: stopped at step {int(bank.steps.max())} of {steps}; continue "
                               f"with the same command and --resume ({state_path})", err=True)
                finish(world)
                raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE)
    elapsed = time.perf_counter() - start
    _save_bank(bank, state_path)
    _write_samples(bank, mean, out_dir, world, fmt, chains, frames, elapsed, remaining)
    finish(world)


def _rank_path(path: Path, world) -> Path:
    return path if world.size == 1 else path.with_name(f"{path.stem}.rank{world.rank}{path.suffix}")


def _save_bank(bank, path) -> None:
    from .io import CHAINS_FORMAT, save_checkpoint

    save_checkpoint(bank.state_dict(), path, fmt=CHAINS_FORMAT)


def _load_bank(path, model, chains, shape, memory_budget, backend, device):
    from .chains import ChainBank
    from .io import CHAINS_FORMAT, InputError, load_checkpoint

    try:
        state = load_checkpoint(path, fmt=CHAINS_FORMAT)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    if state["total_chains"] != chains or tuple(state["x"].shape[1:]) != shape:
        raise click.ClickException(f"{path} holds {state['total_chains']} chains of "
                                   f"{tuple(state['x'].shape[1:])}: resume with the same --chains and --size")
    return ChainBank.from_state(model, state, memory_budget=memory_budget, backend=backend, device=device)


def _frame(bank, mean, count):
    from .io import contact_sheet

    return contact_sheet((bank.x[:count].cpu() + mean).clamp(0, 255))


def _write_samples(bank, mean, out_dir, world, fmt, chains, frames, elapsed, steps) -> None:
    import numpy as np
    import torch

    from .distributed import barrier, gather_objects
    from .io import atomic_save, contact_sheet, save_gif, save_json, save_png

    images = (bank.x.cpu() + mean).clamp(0, 255).round().to(torch.uint8)
    if fmt == "auto":
        fmt = "png" if chains <= 256 else "npz"
    if fmt == "png":
        (out_dir / "samples").mkdir(exist_ok=True)
        for i, image in enumerate(images):
            save_png(image.float(), out_dir / "samples" / f"{bank.first_chain + i:05d}.png")
    else:
        array = images.permute(0, 2, 3, 1).numpy()
        def write(tmp):
            with open(tmp, "wb") as f:  # a file object: given a name, numpy would append ".npz" to it
                np.savez_compressed(f, samples=array, first_chain=bank.first_chain)

        atomic_save(write, _rank_path(out_dir / "samples.npz", world))
    stats = bank.stats()
    per_chain = {key: value.tolist() for key, value in stats.items()}
    shown = gather_objects(images[:64], world)
    all_stats = gather_objects(per_chain, world)
    barrier(world)
    if not world.is_main:
        return
    sheet = torch.cat(shown)[:64].float()
    save_png(contact_sheet(sheet), out_dir / "grid.png")
    if frames:
        save_gif(frames, out_dir / "evolution.gif")
    merged = {key: sum((s[key] for s in all_stats), []) for key in per_chain}
    summary = {key: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
               for key, v in merged.items()}
    report = {"chains": chains, "steps": int(bank.steps.max()), "seconds": round(elapsed, 3),
              "chain_steps_per_s": chains * steps / elapsed if elapsed > 0 and steps else None,
              "processes": world.size, "summary": summary, "per_chain": merged}
    save_json(report, out_dir / "stats.json")
    rate = f", {report['chain_steps_per_s']:.0f} chain-steps/s" if report["chain_steps_per_s"] else ""
    click.echo(f"{chains} samples in {out_dir} ({'samples/' if fmt == 'png' else 'samples.npz'}, grid.png"
               f"{', evolution.gif' if frames else ''}, stats.json){rate}; energy mean "
               f"{summary['energy']['mean']:.4g}, active units {summary['active']['mean']:.1%}")


@main.command()
@click.argument("model_path", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chains", type=click.IntRange(1, 1 << 20), default=16, show_default=True)
@click.option("--size", type=click.IntRange(8, 8192), default=112, show_default=True, help="Side of the chains.")
@click.option("--steps", type=click.IntRange(1, 10**6), default=5, show_default=True,
              help="Timed Langevin steps (after one warm-up step).")
@click.option("--boundary", type=click.Choice(["zero", "periodic"]), default="zero", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "torch", "triton"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help=AUTO_PRECISION)
@click.option("--device", default="auto", show_default=True, help="Torch device: auto, cpu, cuda, ...")
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Chrome trace of one more step (open it in Perfetto or chrome://tracing).")
@click.option("--no-compare", is_flag=True, help="Skip timing the autograd loop.")
def profile(model_path, chains, size, steps, boundary, backend, precision, device, trace, no_compare):
    """Time each kernel call site of a Langevin step, with FLOPs and the share of the machine's peak.

    Without MODEL, the paper's texture net with random weights (biases of both signs). The summary
    compares chain-steps/s with the plain autograd Langevin loop on the same weights, timed in the same run.
    """
    import torch

    from .profile import peak_probes, profile_steps
    from .model import GenerativeConvNet, resolve_precision

    device = _usable_device(device)
    if model_path is None:
        model = GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for conv in model.convs:
                conv.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
        source = "texture net, random weights"
    else:
        _, model = _load_model(model_path)
        source = str(model_path)
    model = model.to(device)
    if boundary == "periodic" and size % model.total_stride():
        raise click.BadParameter(f"periodic chains need a multiple of {model.total_stride()}", param_hint="--size")
    x = torch.randn(chains, model.in_channels, size, size, device=device,
                    generator=torch.Generator(device=device).manual_seed(0)) * 30
    try:
        precision = resolve_precision(precision, device, backend)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    gflops_peak, gbs_peak = peak_probes(torch.device(device), precision)
    try:
        report = profile_steps(model, x, steps, boundary=boundary, backend=backend, precision=precision,
                               trace=trace, compare=not no_compare)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    step_seconds = report["seconds"] / steps
    click.echo(f"{source}: {chains} chains of {size} px, {steps} steps, {boundary} boundary, {precision}, "
               f"{device}; peaks measured here: {gflops_peak:.0f} GFLOP/s ({precision} matmul), "
               f"{gbs_peak:.0f} GB/s (copy)")
    click.echo(f"{'call site':<26}{'ms/step':>10}{'share':>8}{'GFLOP':>9}{'GFLOP/s':>10}{'of peak':>9}{'GB/s':>8}")
    for site, row in report["sites"].items():
        ms = row["seconds_per_step"] * 1e3
        share = row["seconds_per_step"] / step_seconds
        if row["flops"]:
            rate = row["flops_per_step"] / row["seconds_per_step"] / 1e9
            figures = f"{row['flops_per_step'] / 1e9:>9.2f}{rate:>10.1f}{rate / gflops_peak:>9.1%}{'':>8}"
        else:
            gbs = row["bytes_per_step"] / row["seconds_per_step"] / 1e9
            figures = f"{'':>9}{'':>10}{gbs / gbs_peak:>9.1%}{gbs:>8.1f}"
        click.echo(f"{site:<26}{ms:>10.2f}{share:>8.1%}{figures}")
    other = step_seconds - sum(r["seconds_per_step"] for r in report["sites"].values())
    click.echo(f"{'(between the kernels)':<26}{other * 1e3:>10.2f}{other / step_seconds:>8.1%}")
    summary = f"tritongcn {report['chain_steps_per_s']:.1f} chain-steps/s"
    if "autograd_chain_steps_per_s" in report:
        ratio = report["chain_steps_per_s"] / report["autograd_chain_steps_per_s"]
        summary += f", autograd loop {report['autograd_chain_steps_per_s']:.1f} ({ratio:.2f}x)"
    click.echo(summary)
    held = f"held per chain between the passes: bits {report['bits_bytes_per_chain'] / 1e3:.1f} kB"
    if "autograd_saved_bytes_per_chain" in report:
        saved = report["autograd_saved_bytes_per_chain"]
        held += f", autograd's saved tensors {saved / 1e3:.1f} kB ({saved / report['bits_bytes_per_chain']:.1f}x)"
    click.echo(held)
    if trace:
        click.echo(f"trace: {trace}")
