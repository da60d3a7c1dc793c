"""`tritongcn complete` and `tritongcn expand` as runs: an image's unknown pixels sampled given the rest,
by a model given or learned first from the image's known pixels."""

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LearnConfig
from ..progress import Progress, format_seconds
from .common import Reporter, RunError, chain_start, claim_out_dir, load_model, sample_name, usable_device

# A given model whose training images were this many times larger or smaller than the image to fill
# likely learned the texture at another scale: said so, with the option that rescales the image.
SCALE_NOTE = 1.25
# Images whose shorter side is larger than this are slow to learn from at their own size: said so.
LARGE_SIDE = 512
LEARN_SIDE = LearnConfig.image_size  # `learn`'s image size, where learning around a hole held better


@dataclass
class FillSettings:
    """What completion and expansion share. None: as the model was learned (its samples' Langevin
    steps, step size and start)."""

    model_path: Path | None = None  # None: learn one from the image first, into out_dir / "model"
    chains: int = 1  # completions drawn, each its own sample
    steps: int | None = None
    seed: int = 0
    image_size: int | None = None  # the image's shorter side resized to this first; None: as it is
    quality: str = "default"  # the learning recipe, when a model is learned
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    resume: bool = False  # continue an interrupted learning in out_dir / "model"
    overwrite: bool = False
    learn_settings: dict = field(default_factory=dict)  # LearnConfig settings of the model learned, if any


@dataclass
class CompleteRun:
    """One `tritongcn complete`: the pixels of `image` that `mask` (white = unknown, the image's size) or
    `hole` (x, y, width, height) marks are sampled given the others."""

    image: Path
    out_dir: Path
    mask: Path | None = None
    hole: tuple | None = None
    settings: FillSettings = None

    def __post_init__(self):
        self.settings = self.settings or FillSettings()


@dataclass
class ExpandRun:
    """One `tritongcn expand`: `image` placed on a canvas of `size` (width, height) with its top-left
    corner at `at` (x, y; default centred), the rest sampled. `tile`: the canvas is a torus and the
    result tiles."""

    image: Path
    out_dir: Path
    size: tuple
    at: tuple | None = None
    tile: bool = False
    settings: FillSettings = None

    def __post_init__(self):
        self.settings = self.settings or FillSettings()


def complete(run: CompleteRun, report: Reporter | None = None) -> Path:
    """Write completed.png (and completions/ with several chains), mask.png, before_after.png and
    complete.json to the output folder, and return it."""
    from ..images import preprocess_mask
    from .learning import unknown_pixels

    report = report or Reporter()
    s = run.settings
    _claim(run.out_dir, "completed.png", s)
    raw, image = _load(run.image, s.image_size, report)
    unknown = preprocess_mask(unknown_pixels(run.mask, run.hole, [run.image], [raw]), min(image.shape[1:]),
                              crop=False)
    model_path = _model(run.image, image, s, run.out_dir, report, mask=run.mask, hole=run.hole)
    start = time.perf_counter()
    results, info = _fill(load_model(model_path), model_path, image, unknown, s, periodic=False, what="completing",
                          report=report)
    _write(run.out_dir, "completed.png", "completions", results)
    _save_mask(unknown, run.out_dir / "mask.png")
    _save_before_after(image, unknown, results[0], run.out_dir / "before_after.png")
    info.update(image=str(run.image), unknown_pixels=int(unknown.sum()), seconds=round(time.perf_counter() - start, 2))
    _save_info(info, run.out_dir / "complete.json")
    report.say(f"completed {info['unknown_pixels']} unknown pixels in {format_seconds(info['seconds'])}: "
               f"{run.out_dir}/completed.png{', completions/' if len(results) > 1 else ''}, before_after.png")
    return run.out_dir


def expand(run: ExpandRun, report: Reporter | None = None) -> Path:
    """Write expanded.png (and expansions/ with several chains), before_after.png, tiled.png with `tile`
    and expand.json to the output folder, and return it."""
    from ..completion import canvas

    report = report or Reporter()
    s = run.settings
    _claim(run.out_dir, "expanded.png", s)
    _, image = _load(run.image, s.image_size, report)
    loaded = load_model(s.model_path) if s.model_path else None  # read once, _fill uses it too
    width, height = _canvas_size(run, image, loaded, report)
    try:  # checked before any learning
        board, unknown = canvas(image, height, width, run.at)
    except ValueError as err:
        raise RunError(str(err), option="--at" if run.at else "--size") from None
    model_path = _model(run.image, image, s, run.out_dir, report)
    start = time.perf_counter()
    results, info = _fill(loaded or load_model(model_path), model_path, board, unknown, s, periodic=run.tile,
                          what="expanding", report=report, side=min(image.shape[1:]))
    _write(run.out_dir, "expanded.png", "expansions", results)
    _save_before_after(board, unknown, results[0], run.out_dir / "before_after.png")
    if run.tile:
        from ..images import save_png

        save_png(results[0].repeat(1, 2, 2), run.out_dir / "tiled.png")
    info.update(image=str(run.image), size=[width, height], tile=run.tile, seconds=round(time.perf_counter() - start, 2))
    _save_info(info, run.out_dir / "expand.json")
    extras = ((", expansions/" if len(results) > 1 else "") + ", before_after.png" + (", tiled.png" if run.tile else ""))
    report.say(f"expanded to {width}x{height} in {format_seconds(info['seconds'])}: {run.out_dir}/expanded.png{extras}")
    return run.out_dir


def _canvas_size(run: ExpandRun, image, loaded: tuple | None, report: Reporter) -> tuple:
    """(width, height) of the canvas: as asked, at least the image's, and for a tiling result rounded up to
    the stride of the model given, or of the texture net learned."""
    from ..config import stride_multiple
    from ..geometry import TEXTURE_LAYERS, total_stride

    width, height = run.size
    if width < image.shape[2] or height < image.shape[1]:
        raise RunError(f"{width}x{height} is smaller than the image ({image.shape[2]}x{image.shape[1]}"
                       f"{' after --image-size' if run.settings.image_size else ''}): nothing to grow",
                       option="--size")
    stride = loaded[1].total_stride() if loaded else total_stride(TEXTURE_LAYERS)
    if run.tile and (width % stride or height % stride):
        width, height = stride_multiple(width, stride), stride_multiple(height, stride)
        report.say(f"a tiling canvas needs sides that are multiples of {stride}: expanding to {width}x{height}")
    return width, height


def _claim(out_dir: Path, product: str, s: FillSettings) -> None:
    """The output folder, by the one rule (its --resume is the learning's, in out_dir / "model")."""
    claim_out_dir(out_dir, product, overwrite=s.overwrite, foreign={"model.pt": "a learned model"})


def _load(path: Path, image_size: int | None, report: Reporter):
    """(raw array, (C, H, W) tensor in [0, 255] at the working size) of the image to fill."""
    from ..images import load_image, preprocess
    from ..io import InputError

    try:
        raw = load_image(path, note=report.note)
    except InputError as err:
        raise RunError(str(err)) from None
    side = image_size or min(raw.shape[:2])
    return raw, preprocess(raw, side, crop=False)


def _model(image_path: Path, image, s: FillSettings, out_dir: Path, report: Reporter, mask=None, hole=None) -> Path:
    """The model file to fill with: the one given, or one learned from the image's known pixels into
    out_dir / "model" (kept, so that more completions can use it), or an earlier one there with --resume."""
    from ..completion import MODEL_SETTINGS
    from .learning import LearnRun, learn

    if s.model_path is not None:
        return s.model_path
    learned = out_dir / "model" / "model.pt"
    if learned.exists() and not s.overwrite:
        if not s.resume:
            raise RunError(f"{out_dir} holds a model an earlier run learned ({learned}): pass --resume to use it, "
                           "--overwrite to learn again, or choose another --out")
        report.say(f"using the model learned before: {learned}")
        return learned
    report.say(f"learning the texture from {'the known pixels of ' if mask or hole else ''}{image_path} first "
               f"(at {image.shape[2]}x{image.shape[1]} px; give a MODEL to skip this)")
    side = min(image.shape[1:])
    if side > LARGE_SIDE:
        report.note(f"learning at {side} px takes several times longer than at `learn`'s {LEARN_SIDE}: "
                    f"--image-size {LEARN_SIDE} works on the image resized")
    settings = {**MODEL_SETTINGS, **s.learn_settings, "image_size": side}  # the whole image at its size
    learn(LearnRun(image_path, out_dir / "model", settings=settings, quality=s.quality, device=s.device,
                   resume=s.resume, overwrite=s.overwrite, mask=mask, hole=hole, crop=False,
                   runaway_advice=fill_runaway_advice(side)), report)
    return learned


def fill_runaway_advice(side: int) -> str:
    """What a runaway while learning around a hole in an image of shorter side `side` tells the user: the
    options of `complete` and `expand`, not `learn`'s. The bundled wood (152 px) ran away around a 48 px
    hole in three runs of three, its shading flattened (two seeds, and hot chains); resized to 224 px,
    `learn`'s size, it did not (docs/troubleshooting.md)."""
    larger = f"--image-size {LEARN_SIDE} or " if side < LEARN_SIDE else ""
    return f"{larger}a MODEL learned by `tritongcn learn` from a whole image of the texture may fill better"


def _fill(loaded: tuple, model_path: Path, image, unknown, s: FillSettings, periodic: bool, what: str,
          report: Reporter, side: int | None = None):
    """(completions (K, C, H, W) in [0, 255], their settings for the json) of `image` with `unknown` pixels,
    by the model `loaded` (`load_model(model_path)`); `side`: the shorter side of the image itself, where
    `image` is a canvas around it."""
    from ..completion import FINISH_STEPS, chain_region, complete
    from ..precision import resolve_precision

    state, model = loaded
    learned = _check_fill_model(state, model, model_path, image, s, side or min(image.shape[1:]), report)
    init = chain_start(state, learned, None, model_path, report)
    steps = learned.sample_steps if s.steps is None else s.steps
    device = usable_device(s.device)
    precision = resolve_precision(s.precision, device, s.backend)
    model = model.to(device)
    try:
        region = chain_region(unknown, model, periodic, image.shape[1:])
        label = (f"{what} {s.chains} {'chain' if s.chains == 1 else 'chains'} of {region.width}x{region.height} px "
                 f"({precision})")
        with Progress((steps + FINISH_STEPS) * s.chains, label) as bar:
            results = complete(model, image, unknown, mean=state["mean"], steps=steps, step_size=learned.step_size,
                               chains=s.chains, seed=s.seed, init=init, start_kernel=state.get("start_kernel"),
                               periodic=periodic, region=region, progress=bar.update, device=device,
                               backend=s.backend, precision=precision, notify=report.note)
    except (ValueError, MemoryError) as err:
        raise RunError(str(err)) from None
    info = {"model": str(model_path), "chains": s.chains, "steps": steps, "finish_steps": FINISH_STEPS,
            "seed": s.seed, "start": init, "precision": precision,
            "pixels_sampled_per_chain": region.height * region.width}
    return results, info


def _check_fill_model(state: dict, model, model_path: Path, image, s: FillSettings, side: int, report: Reporter):
    """The model's learning settings, once it is known to fill this image: a texture model of its kind of
    colour; a note when the model given learned at another scale than the image's `side`."""
    from ..config import LearnConfig

    learned = LearnConfig.from_dict(state["config"])
    if model.top != "sum":
        raise RunError(f"{model_path} is an object model: completion needs a texture model")
    if image.shape[0] != model.in_channels:
        raise RunError(f"the image has {image.shape[0]} channel{'s' if image.shape[0] > 1 else ''} and "
                       f"{model_path} models {model.in_channels}: both must be grayscale or both colour")
    if s.model_path is not None and not 1 / SCALE_NOTE <= side / learned.image_size <= SCALE_NOTE:
        report.note(f"{model_path} learned its texture from {learned.image_size} px images and this image is "
                    f"{side} px: if its texture looks larger or smaller, --image-size {learned.image_size} "
                    "rescales the image first")
    return learned


def _write(out_dir: Path, name: str, folder: str, results) -> None:
    """The first result as `name`; with several, all of them in `folder` too."""
    from ..images import save_png

    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(results[0], out_dir / name)
    if len(results) > 1:
        (out_dir / folder).mkdir(exist_ok=True)
        for i, result in enumerate(results):
            save_png(result, out_dir / folder / sample_name(i))


def _save_mask(unknown, path: Path) -> None:
    from ..images import save_png

    save_png(unknown.float()[None] * 255, path)


def _save_before_after(image, unknown, result, path: Path, gap: int = 8) -> None:
    """The image with its unknown pixels shown as a grey checkerboard, beside the result."""
    import torch

    from ..images import save_png

    h, w = unknown.shape
    rows, cols = torch.arange(h).view(-1, 1), torch.arange(w).view(1, -1)
    checker = torch.where(((rows // 8 + cols // 8) % 2) == 0, 150.0, 200.0).expand_as(image)
    before = torch.where(unknown.expand_as(image), checker, image.float())
    space = torch.full((image.shape[0], h, gap), 255.0)
    save_png(torch.cat([before, space, result], dim=2), path)


def _save_info(info: dict, path: Path) -> None:
    from ..io import save_json

    save_json(info, path, indent=2)
