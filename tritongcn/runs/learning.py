"""`tritongcn learn` as a run: images in, a learned model, its new samples and their figures out."""

import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LearnConfig, image_sample_size, learning_chain_size, recipe, stride_multiple
from ..progress import Progress, format_seconds
from .common import Reporter, RunError, Stopped, stop_everywhere, usable_device

SAMPLES_DRAWN = 4  # new samples a learn run draws from the learned model for samples/, grid.png and eval.json
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
    from ..interrupts import stop_requests
    from ..checkpoints import load_checkpoint, save_checkpoint
    from ..images import preprocess, preprocess_mask
    from ..io import InputError
    from ..learn import Learner

    report = report or Reporter()
    run_start = time.perf_counter()
    out_dir = run.out_dir or Path("runs") / run.image.stem
    checkpoint_path = out_dir / "checkpoint.pt"
    _check_out_dir(run, out_dir, checkpoint_path)
    saved, settings = None, {k: v for k, v in run.settings.items() if v is not None}
    if run.resume:
        try:
            saved = load_checkpoint(checkpoint_path)
        except InputError as err:
            raise RunError(str(err)) from None
        # The interrupted run's settings, so that it ends as it would have.
        settings.update({k: v for k, v in saved["config"].items() if k in RESUMED})
    paths, raws = _load_images(run.image, report)
    unknown = unknown_pixels(run.mask, run.hole, paths, raws)
    config = _config(paths, raws, settings, run.quality, usable_device(run.device))
    if saved is not None:  # every setting of the interrupted run, the ones without an option too
        config = dataclasses.replace(LearnConfig.from_dict(saved["config"]), device=config.device)
        report.say(f"resuming {checkpoint_path} with its own settings: {settings_line(config)}")
    images = torch.stack([preprocess(raw, config.image_size, crop=run.crop) for raw in raws])
    known = None if unknown is None else ~preprocess_mask(unknown, config.image_size, crop=run.crop)[None, None]
    world = init_world(torch.device(config.device))
    try:
        learner = Learner.from_images(images, config, world=world, known=known)
        records = []
        if saved is not None:
            if not torch.equal(saved["mean"], learner.mean):
                raise ValueError(f"{run.image} is not what the interrupted run learned from (its mean colour "
                                 "differs): resume with the same images")
            learner.load_state_dict(saved)
            records = list(saved.get("records", []))
    except ValueError as err:
        raise RunError(str(err)) from None
    learner.bank.notify = report.note

    if world.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot create the output folder {out_dir}: {err.strerror or err}") from None
        if run.overwrite:  # an interrupted run's checkpoint must not outlive the run that replaces it
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
        report.say(f"learning {learner.model.in_channels}-channel {config.image_size} px "
                   f"{'images' if len(images) > 1 else 'texture'}: {settings_line(learner.config)}")
        if config.shading == "auto" and learner.config.shading == "flatten":
            report.note(f"the light's slope across {'the images' if len(images) > 1 else 'the image'} holds "
                        f"{learner.shading_share:.0%} of its variance, more than its texture: it is flattened "
                        "out, and the samples have no shading across them (--shading keep learns it as it is)")
    advice = runaway_advice(learner.config) if run.runaway_advice is None else run.runaway_advice
    watch = LearningWatch(learner.config.iterations, advice)
    with metrics_file, stop_requests() as stop, \
            Progress(learner.total_iterations, f"learning ({learner.config.precision})", file=quiet,
                     costs=learner.iteration_costs()) as bar:
        bar.skip(len(records))
        for record in _checked(learner.run(), checkpoint_path):
            records.append(record)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            recon = f" recon {record['reconstruction_error']:.3f}" if "reconstruction_error" in record else ""
            bar.update(1, f"{_where(learner.config, record)} gap {record['gap']:+.3g}{recon}")
            bar.skip(record.get("skipped", 0))  # a runaway ended the layer early
            if world.is_main:
                for warning in watch(record):
                    report.warn(f"\nwarning: {warning}")
            if stop_everywhere(stop, world, learner.device):
                save(checkpoint_path)
                if world.is_main:
                    report.warn(f"\n{stop.signal_name}: stopped after {len(records)} of "
                                f"{learner.total_iterations} iterations; continue with --resume "
                                f"({checkpoint_path})")
                finish(world)
                raise Stopped(stop.signal_name)
            if len(records) % run.checkpoint_every == 0 and len(records) < learner.total_iterations:
                save(checkpoint_path)
    learned_in = time.perf_counter() - run_start
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
    _write_outputs(out_dir, config.seed, state, images, samples, chains, records)
    checkpoint_path.unlink(missing_ok=True)  # model.pt holds the same state, finished
    if known is not None:
        report.say("no eval.json: its texture figures would compare the samples with the unknown pixels too")
    elif len(images) == 1:
        evaluate_run(out_dir, images[0], samples, None if config.cd_steps else chains, report)
    else:
        report.say("no eval.json: its texture figures compare samples with a single training image")
    report.say(f"done in {format_seconds(time.perf_counter() - run_start)} (learning "
               f"{format_seconds(learned_in)}): {out_dir}/grid.png, {out_dir}/samples/, {out_dir}/model.pt")
    return out_dir


def _where(config: LearnConfig, record: dict) -> str:
    """Where a record's iteration is in the run, for the progress line."""
    from ..learn import Learner

    past = record["iteration"] - config.iterations
    if past > 0:
        return f"finish {past}/{Learner.finish_iterations(config)}"
    layer = f"layer {record['layer']}/{config.layers} " if Learner.grows(config) else ""
    return f"{layer}it {record['iteration']}/{config.iterations}"


def _check_out_dir(run: LearnRun, out_dir: Path, checkpoint_path: Path) -> None:
    """Refuse to mix a new run with an earlier one's files unless told what to do with them."""
    if run.resume and run.overwrite:
        raise RunError("--resume continues the run in --out and --overwrite replaces it: pass one")
    if (out_dir / "model.pt").exists() and not run.overwrite:
        raise RunError(f"{out_dir} already holds a finished run (model.pt): pass --overwrite or choose "
                       "another --out")
    if checkpoint_path.exists() and not (run.resume or run.overwrite):
        raise RunError(f"{out_dir} holds an interrupted run (checkpoint.pt): pass --resume to continue it, "
                       "--overwrite to start again, or choose another --out")
    if run.resume and not checkpoint_path.exists():
        raise RunError(f"nothing to resume: {checkpoint_path} does not exist")


def _load_images(image: Path, report: Reporter):
    """(paths, raw arrays) of the training images, each checked to hold something to learn."""
    from ..images import image_paths, load_image
    from ..io import InputError

    try:
        paths = image_paths([image]) if image.is_dir() else [image]
        if not paths:
            raise InputError(f"{image}: a folder without PNG or JPEG images")
        raws = [load_image(path, note=report.note) for path in paths]
    except InputError as err:
        raise RunError(str(err)) from None
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
    """The run's LearnConfig: the recipe, the settings asked for, and the sizes the images and the net
    allow, each size checked against the net's receptive field and stride."""
    from ..geometry import DEEPER_TEXTURE_LAYERS, OBJECT_LAYERS, receptive_field, size_problem, total_stride

    defaults = LearnConfig()
    model_kind = settings.get("model", defaults.model)
    cd_steps = settings.get("cd_steps", defaults.cd_steps)
    layers = settings.get("layers", defaults.layers)
    periodic = settings.get("periodic", defaults.periodic)
    is_object = model_kind == "object"
    image_size = settings.get("image_size") or (min(min(raw.shape[:2]) for raw in raws) if is_object
                                                else defaults.image_size)
    net = OBJECT_LAYERS if is_object else DEEPER_TEXTURE_LAYERS
    if layers > len(net):
        raise RunError(f"the {model_kind} net has at most {len(net)} layers", option="--layers")
    specs = net[:layers]
    field_, stride = receptive_field(specs), total_stride(specs)
    sample_size = settings.get("sample_size") or image_sample_size(image_size, stride)
    chain_size = settings.get("chain_size") or learning_chain_size(image_size, stride, field_)
    for path, raw in zip(paths, raws):
        problem = size_problem(raw.shape[0], raw.shape[1], specs, "valid")
        if problem:
            raise RunError(f"{path}: {problem}: it is smaller than the net's receptive field for {layers} "
                           "layers; use a larger image or fewer --layers")
    sizes = [("--image-size", image_size)]
    if not (is_object or cd_steps):
        sizes += [("--sample-size", sample_size), ("--chain-size", chain_size)]
    for name, size in sizes:  # every size holds a whole window; periodic chains a whole number of strides
        for boundary in ("valid", "periodic") if name != "--image-size" and periodic else ("valid",):
            problem = size_problem(size, size, specs, boundary)
            if problem:
                hint = f" (try {stride_multiple(size, stride)})" if boundary == "periodic" else ""
                raise RunError(f"{problem}{hint}", option=name)
    sizes = dict(image_size=image_size, sample_size=image_size if is_object else sample_size,
                 chain_size=image_size if is_object else chain_size)
    return LearnConfig(**{**recipe(model_kind, quality, cd_steps), **settings, **sizes,
                          "periodic": periodic and not is_object, "device": device})


def _fresh_samples(learner, report: Reporter):
    """SAMPLES_DRAWN new chains of the learned model, drawn as `tritongcn sample` does by default, as
    images in [0, 255]."""
    steps = learner.config.sample_steps
    bank = learner.fresh_bank(SAMPLES_DRAWN)
    bank.notify = report.note
    size = bank.shape[-1]
    with Progress(steps * len(bank), f"sampling {len(bank)} new chains of {size} px") as bar:
        bank.advance(steps, lambda done: bar.update(done * steps))
    return (bank.x.cpu() + learner.mean.view(1, -1, 1, 1)).clamp(0, 255)


def settings_line(config: LearnConfig) -> str:
    """The recipe of a run in one line."""
    from ..learn import Learner

    how = "layers grown one at a time" if Learner.grows(config) else "all layers at once"
    if config.cd_steps:
        chains = f"{config.cd_steps}-step contrastive divergence"
    else:
        chains = (f"{config.chains} chains of {config.chain_size} px from {config.start}, "
                  f"{config.langevin_steps} Langevin steps of {config.step_size:g} per update"
                  + (f" at temperature {config.temperature:g}" if config.temperature != 1 else ""))
    optimizer = config.optimizer + (" (steps halved on reversal)" if Learner.damps(config) else "")
    updates, own, averaged = (Learner.finish_iterations(config), Learner.finish_chains(config),
                              Learner.averaged_updates(config))
    finish = ""
    if updates:
        finish = (f"; then {updates} updates on new chains{f' ({own} of {config.sample_size} px)' if own else ''}, "
                  f"{config.finish_langevin_steps} steps each")
        if averaged > 1:
            finish += f", the learned weights the mean over {'them' if averaged == updates else f'the last {averaged}'}"
    shading = "; the images' shading flattened" if config.shading == "flatten" else ""
    return (f"{config.layers} layers ({how}), {config.iterations} iterations, {optimizer} lr "
            f"{config.lr:g}, {chains}{finish}{shading}")


# Learning chains this hot learned the bundled wood, its shading kept, without the runaway it had at 1
# (README, "When things go wrong"); flattened, it had none either.
HOTTER = 4


def runaway_advice(config: LearnConfig) -> str:
    """The `learn` options a run of `config` has not tried that kept the bundled wood from running away."""
    from ..learn import Learner

    flattenable = Learner.texture_chains(config) and config.shading != "flatten"
    levers = (["--shading flatten"] if flattenable else []) + (
        [f"--temperature {HOTTER}"] if config.temperature < HOTTER else [])
    return f"learning again with {' or '.join(levers)} may avoid it" if levers else ""


class LearningWatch:
    """What a user should hear of while learning runs: a layer regrown after going silent, a runaway rescued
    (`learn.RunawayGuard`), and a gap that swings from sign to sign at every iteration (the step is too large
    for the layer). Each once."""

    WINDOW = 12  # iterations looked at for a swing

    def __init__(self, iterations: int, runaway_advice: str = ""):
        self.iterations = iterations  # per layer: past them, the finish
        self.runaway_advice = runaway_advice  # what a runaway's warning ends with, if anything
        self.gaps, self.warned = [], set()

    def __call__(self, record) -> list:
        warnings = []
        if "runaway" in record:
            what = "the finish" if record["iteration"] > self.iterations else f"layer {record['runaway']}"
            warnings.append(f"the training image's score ran away from the chains' in {what} ({record['growth']:g} "
                            f"times its recent level): back to the weights of its iteration "
                            f"{record['from_iteration']}, which end it ({record['skipped']} iterations skipped)"
                            + (f"; {self.runaway_advice}" if self.runaway_advice else ""))
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
    from ..figures import contact_sheet
    from ..images import save_png

    save_png(contact_sheet((chains + learner.mean.view(1, -1, 1, 1)).clamp(0, 255)), path)


def _checked(records, checkpoint_path):
    """Learning records, with a divergence turned into a one-line error (metrics.jsonl keeps the history,
    and the last checkpoint, written before the bad iteration, stays as it was)."""
    from ..learn import LearningFailed

    try:
        yield from records
    except (FloatingPointError, MemoryError, LearningFailed) as err:
        kept = f"; the last good state is in {checkpoint_path}" if checkpoint_path.exists() else ""
        raise RunError(f"{err}{kept}") from None


def evaluate_run(out_dir, training, samples, chains, report: Reporter) -> None:
    """Score the samples (and the learning chains, when given) against the training image into eval.json
    (see `tritongcn eval`)."""
    from ..evaluate import SMALLEST_CROP, evaluate, largest_crop, portilla_simoncelli_available
    from ..io import save_json

    others = {} if chains is None else {"learning_chains": chains.round()}
    if min(largest_crop(training.shape, s.shape) for s in [samples, *others.values()]) < SMALLEST_CROP:
        report.say(f"no eval.json: samples or training image too small for {SMALLEST_CROP} px crops")
        return
    has_ps = portilla_simoncelli_available()
    result = evaluate(training, samples.round(), use_ps=has_ps, others=others)
    save_json(result, out_dir / "eval.json", indent=2)
    for name in ("samples", *others):
        figures = ", ".join(f"{k} {result[name][k]:.3f}" for k in result[name])
        report.say(f"eval, {name.replace('_', ' ')}: {figures}")
    references = ", ".join(f"{k} {result['real_crops'][k]:.3f} / {result['random_phase'][k]:.3f}"
                           for k in result["samples"])
    report.say(f"eval, real crops / random-phase noise: {references} (lower is better)")
    if not has_ps:
        report.say(f"(ps_z {result['ps_z']})")


def _write_outputs(out_dir, seed, state, images, samples, chains, records) -> None:
    """`images` (M, C, H, W): the training images as learned from; `samples` the model's new samples;
    `chains` the learning chains; all in [0, 255]."""
    import numpy as np
    import torch

    from ..checkpoints import save_checkpoint
    from ..figures import contact_sheet, draw_learning_curve, filter_sheet, make_grid
    from ..images import save_png

    sample_dir = out_dir / "samples"
    sample_dir.mkdir(exist_ok=True)
    for i, sample in enumerate(samples):
        save_png(sample, sample_dir / f"{i:04d}.png")
    real_crops = None
    if samples.shape[-1] <= min(images.shape[-2:]):
        from ..evaluate import random_crops

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
