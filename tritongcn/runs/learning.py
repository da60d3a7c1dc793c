"""`tritongcn learn` as a run: images in, a learned model, its new samples and their figures out."""

import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, LearnConfig, net_layers, recipe
from ..progress import Progress, format_seconds
from .common import Reporter, RunError, claim_out_dir, load_images, stop_if_asked, usable_device
from .learning_outputs import save_preview, write_outputs
from .learning_report import GAP_MEANING, LearningWatch, evaluate_run, runaway_advice, settings_line

SAMPLES_DRAWN = 4  # new samples a learn run draws from the learned model for samples/, grid.png and eval.json
SAMPLE_SEGMENT = 15  # their Langevin steps between two moves of the progress line
# Settings a resumed run takes from its checkpoint whatever is asked now: they decide its images and net.
RESUMED = ("model", "image_size", "cd_steps", "layers", "periodic")


@dataclass
class LearnRun:
    """One `tritongcn learn`. `settings` holds the LearnConfig settings asked for (the others come from
    the recipe of `quality` and the model kind); image_size, sample_size and chain_size left out take
    the rules of `config.py`, computed from the images and the net."""

    image: Path  # an image, or a folder of them
    out_dir: Path | None = None  # default: runs/<image or folder name>
    settings: dict = field(default_factory=dict)
    quality: str = "default"
    device: str = "auto"
    checkpoint_every: int = 50
    resume: bool = False
    overwrite: bool = False
    # Pixels of the (single) image that are unknown, to learn from the rest only: a mask image (white =
    # unknown, the image's size) or a rectangle (x, y, width, height) in its pixels.
    mask: Path | None = None
    hole: tuple | None = None
    # False: the whole image, its shorter side resized to image_size, not a centred square of it (for
    # completion and expansion, which give the image back whole).
    crop: bool = True
    # What a runaway's warning tells the user to try; None: `runaway_advice`, learn's own options.
    runaway_advice: str | None = None


def learn(run: LearnRun, report: Reporter | None = None) -> Path:
    """Learn, draw the new samples, write everything to the output folder and return it. Ctrl-C or
    SIGTERM saves a checkpoint at the end of the current iteration and raises `Stopped`."""
    import torch

    from ..distributed import finish, gather_objects, init_world

    report = report or Reporter()
    run_start = time.perf_counter()
    out_dir = run.out_dir or Path("runs") / run.image.stem
    claim_out_dir(out_dir, "model.pt", "checkpoint.pt", resume=run.resume, overwrite=run.overwrite)
    saved = _saved_run(out_dir / "checkpoint.pt") if run.resume else None
    images, known, config = _inputs(run, saved, report)
    world = init_world(torch.device(config.device))
    learner, records = _learner(run, images, known, config, saved, world)
    learner.life.bank.notify = report.note
    if world.is_main:
        _open_out_dir(out_dir, run.overwrite)
        if saved is None:
            _announce(learner, config, len(images), report)
        else:
            report.say(f"resuming {out_dir / 'checkpoint.pt'} with its own settings: {settings_line(learner.config)}")
    _iterate(run, learner, records, out_dir, world, report)
    # The learning chains of every process, in bank order.
    chains = torch.cat(gather_objects(learner.samples(), world))
    state = learner.state_dict()
    state["chains"] = torch.cat(gather_objects(state["chains"], world))
    finish(world)
    if not world.is_main:
        return out_dir
    # The product is the model: its samples are new chains drawn as `tritongcn sample` draws them. A
    # contrastive divergence model has no sampler from scratch; its samples are its chains.
    samples = chains if config.cd_steps else _fresh_samples(learner, report)
    write_outputs(out_dir, config.seed, state, images, samples, chains, records)
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)  # model.pt holds the same state, finished
    _evaluate(out_dir, images, known, samples, None if config.cd_steps else chains, report)
    part = " after the resume" if saved is not None else ""
    report.say(f"done in {format_seconds(time.perf_counter() - run_start)}{part} (learning "
               f"{format_seconds(learner.seconds)}{' in all' if part else ''}): {out_dir}/grid.png, "
               f"{out_dir}/samples/, {out_dir}/model.pt")
    return out_dir


def _saved_run(path: Path) -> dict:
    from ..checkpoints import load_checkpoint
    from ..io import InputError

    try:
        return load_checkpoint(path)
    except InputError as err:
        raise RunError(str(err)) from None


def _inputs(run: LearnRun, saved: dict | None, report: Reporter) -> tuple:
    """(images (M, C, H, W) in [0, 255], known pixels or None, config): the training images as learned,
    preprocessed at the config's size; a resumed run's own settings, all of them."""
    import torch

    from ..images import preprocess, preprocess_mask

    settings = {k: v for k, v in run.settings.items() if v is not None}
    if saved is not None:  # the interrupted run's settings, so that it ends as it would have
        settings.update({k: v for k, v in saved["config"].items() if k in RESUMED})
    paths, raws = _load_images(run.image, report)
    unknown = unknown_pixels(run.mask, run.hole, paths, raws)
    config = _config(paths, raws, settings, run.quality, usable_device(run.device))
    if saved is not None:  # every setting of the interrupted run, the ones without an option too
        config = dataclasses.replace(LearnConfig.from_dict(saved["config"]), device=config.device)
    images = torch.stack([preprocess(raw, config.image_size, crop=run.crop) for raw in raws])
    known = None if unknown is None else ~preprocess_mask(unknown, config.image_size, crop=run.crop)[None, None]
    return images, known, config


def _learner(run: LearnRun, images, known, config: LearnConfig, saved: dict | None, world) -> tuple:
    """(the Learner, the metrics records so far): a new one, or the interrupted run's, continued."""
    import torch

    from ..learn import Learner

    try:
        learner = Learner.from_images(images, config, world=world, known=known)
        if saved is None:
            return learner, []
        if not torch.equal(saved["mean"], learner.mean):
            raise ValueError(f"{run.image} is not what the interrupted run learned from (its mean colour "
                             "differs): resume with the same images")
        learner.load_state_dict(saved)
    except ConfigError as err:
        raise RunError(str(err), option=err.option) from None
    except ValueError as err:
        raise RunError(str(err)) from None
    return learner, list(saved.get("records", []))


def _open_out_dir(out_dir: Path, overwrite: bool) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create the output folder {out_dir}: {err.strerror or err}") from None
    if overwrite:  # an interrupted run's checkpoint must not outlive the run that replaces it
        (out_dir / "checkpoint.pt").unlink(missing_ok=True)


def _announce(learner, config: LearnConfig, count: int, report: Reporter) -> None:
    """What is learned, by which recipe, and what the progress line's gap means."""
    report.say(f"learning {learner.model.in_channels}-channel {config.image_size} px "
               f"{'images' if count > 1 else 'texture'}: {settings_line(learner.config)}")
    report.say(GAP_MEANING)
    if config.shading == "auto" and learner.config.shading == "flatten":
        report.note(f"the light's slope across {'the images' if count > 1 else 'the image'} holds "
                    f"{learner.data.shading_share:.0%} of its variance, more than its texture: it is flattened "
                    "out, and the samples have no shading across them (--shading keep learns it as it is)")


def _iterate(run: LearnRun, learner, records: list, out_dir: Path, world, report: Reporter) -> None:
    """Learn to the end: each iteration's record into metrics.jsonl and the progress line, warnings as they
    arise, a checkpoint every `checkpoint_every` iterations and when Ctrl-C asks to stop."""
    from ..interrupts import stop_requests
    from ..learn import where

    config, checkpoint = learner.config, out_dir / "checkpoint.pt"
    total = config.total_iterations()
    metrics = open(out_dir / "metrics.jsonl", "w") if world.is_main else io.StringIO()
    for record in records:  # a resumed run's history up to its checkpoint
        metrics.write(json.dumps(record) + "\n")
    watch = LearningWatch(config.iterations, runaway_advice(config) if run.runaway_advice is None
                          else run.runaway_advice)
    quiet = None if world.is_main else io.StringIO()  # one progress display, the first process's
    costs = learner.schedule.costs(learner.life.step_seconds(config.layers))
    with metrics, stop_requests() as stop, \
            Progress(total, f"learning ({config.precision})", file=quiet, costs=costs) as bar:
        bar.skip(len(records))
        for record in _checked(learner.run(), checkpoint):
            records.append(record)
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            recon = f" recon {record['reconstruction_error']:.3f}" if "reconstruction_error" in record else ""
            bar.update(1, f"{where(config, record)} gap {record['gap']:+.3g}{recon}")
            bar.skip(record.get("skipped", 0))  # a runaway ended the layer early
            for warning in watch(record) if world.is_main else ():
                report.warn(f"\nwarning: {warning}")
            stop_if_asked(stop, world, learner.device, lambda: _save(learner, records, checkpoint, world),
                          f"stopped after {len(records)} of {total} iterations; continue with --resume ({checkpoint})")
            if len(records) % run.checkpoint_every == 0 and len(records) < total:
                _save(learner, records, checkpoint, world)


def _save(learner, records: list, path: Path, world) -> None:
    """The run so far into `path`, and a preview of its chains beside it. Every process takes part (the
    chains are gathered); the first one writes."""
    import torch

    from ..checkpoints import save_checkpoint
    from ..distributed import gather_objects

    state = {**learner.state_dict(), "records": records}
    state["chains"] = torch.cat(gather_objects(state["chains"], world))
    if world.is_main:
        save_checkpoint(state, path)
        save_preview(learner, state["chains"], path.parent / "preview.png")


def _checked(records, checkpoint_path):
    """Learning records, with a divergence turned into a one-line error (metrics.jsonl keeps the history,
    and the last checkpoint, written before the bad iteration, stays as it was)."""
    from ..learn import LearningFailed

    try:
        yield from records
    except (FloatingPointError, MemoryError, LearningFailed) as err:
        kept = f"; the last good state is in {checkpoint_path}" if checkpoint_path.exists() else ""
        raise RunError(f"{err}{kept}") from None


def _load_images(image: Path, report: Reporter):
    """(paths, raw arrays) of the training images, each checked to hold something to learn."""
    paths, raws = load_images([image], f"{image}: a folder without PNG or JPEG images", note=report.note)
    if len({raw.shape[2] for raw in raws}) > 1:
        raise RunError(f"{image}: mixes grayscale and colour images; convert them to one kind")
    for path, raw in zip(paths, raws):
        if (raw == raw[:1, :1]).all():  # every pixel the first one's colour, channel by channel
            colour = ", ".join(f"{v:g}" for v in raw[0, 0])
            raise RunError(f"{path}: every pixel is ({colour}): a constant image has no texture to learn")
    return paths, raws


def unknown_pixels(mask: Path | None, hole: tuple | None, paths, raws):
    """(H, W) bool numpy array of the unknown pixels of the one image in `raws`, from a mask image or a
    hole rectangle (x, y, width, height); None when neither is given."""
    from ..images import load_mask, rectangle_mask
    from ..io import InputError

    if mask is None and hole is None:
        return None
    option = "--mask" if mask is not None else "--hole"
    if mask is not None and hole is not None:
        raise RunError("--mask and --hole both mark unknown pixels: pass one")
    if len(raws) != 1:
        raise RunError(f"{option} marks pixels of one image, and {len(raws)} images were given")
    try:
        unknown = load_mask(mask, raws[0].shape) if mask is not None else rectangle_mask(raws[0].shape, hole)
    except InputError as err:
        raise RunError(str(err), option=option) from None
    if not unknown.any():
        raise RunError(f"{mask or 'the hole'} marks no pixel of {paths[0]} unknown (white = unknown)",
                       option=option)
    if unknown.all():
        raise RunError(f"{mask or 'the hole'} marks every pixel of {paths[0]} unknown: nothing is left known",
                       option=option)
    return unknown


def _config(paths, raws, settings: dict, quality: str, device: str) -> LearnConfig:
    """The run's LearnConfig: the recipe of its model kind and quality, the settings asked for, and for
    objects the images' own size. Its chain sizes follow from the images and the net in the learner, which
    checks them; each image is checked here to hold a window of the net."""
    from ..geometry import size_problem

    defaults = LearnConfig()
    model, layers = settings.get("model", defaults.model), settings.get("layers", defaults.layers)
    try:
        specs = net_layers(model, layers)
    except ConfigError as err:
        raise RunError(str(err), option=err.option) from None
    for path, raw in zip(paths, raws):
        problem = size_problem(raw.shape[0], raw.shape[1], specs, "valid")
        if problem:
            raise RunError(f"{path}: {problem}: it is smaller than the net's receptive field for {layers} "
                           "layers; use a larger image or fewer --layers")
    image_size = settings.get("image_size") or (min(min(raw.shape[:2]) for raw in raws) if model == "object"
                                                else defaults.image_size)
    return LearnConfig(**{**recipe(model, quality, settings.get("cd_steps", 0)), **settings,
                          "image_size": image_size, "device": device})


def _fresh_samples(learner, report: Reporter):
    """SAMPLES_DRAWN new chains of the learned model, drawn as `tritongcn sample` does by default, as
    images in [0, 255]; advanced in segments so the progress line moves (the chains are the same)."""
    steps = learner.config.sample_steps
    bank = learner.fresh_bank(SAMPLES_DRAWN)
    bank.notify = report.note
    with Progress(steps * len(bank), f"sampling {len(bank)} new chains of {bank.shape[-1]} px") as bar:
        for done in range(0, steps, SAMPLE_SEGMENT):
            segment = min(SAMPLE_SEGMENT, steps - done)
            bank.advance(segment, lambda chains, segment=segment: bar.update(chains * segment))
    return (bank.x.cpu() + learner.mean.view(1, -1, 1, 1)).clamp(0, 255)


def _evaluate(out_dir: Path, images, known, samples, chains, report: Reporter) -> None:
    """eval.json, when its texture figures mean something: one whole training image."""
    if known is not None:
        report.say("no eval.json: its texture figures would compare the samples with the unknown pixels too")
    elif len(images) > 1:
        report.say("no eval.json: its texture figures compare samples with a single training image")
    else:
        evaluate_run(out_dir, images[0], samples, chains, report)
