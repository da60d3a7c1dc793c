"""Images in and out, grids, learning curves and checkpoints."""

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

CHECKPOINT_FORMAT = "tritongcn.model"


class InputError(ValueError):
    """A problem with what the user gave us, worded for a one-line message."""


def image_paths(paths) -> list:
    """Files as given, and the PNG/JPEG files inside given folders, sorted."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        else:
            found.append(path)
    return found


def load_image(path, note=None) -> np.ndarray:
    """Read an image as float32 (H, W, C) in [0, 255], C = 1 for grayscale input and 3 for colour.

    Transparency is dropped: the colour values of transparent pixels are used as they are, since a
    texture has no background to blend onto. `note(message)`, if given, is told so when it happens.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            im.load()
            grayscale = im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
            has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            if has_alpha and note is not None:
                alpha = np.asarray(im.convert("RGBA"))[..., 3]
                if alpha.min() < 255:
                    note(f"{path}: the alpha channel is ignored ({(alpha < 255).mean():.0%} of the pixels are "
                         "not opaque; their colour values are used as they are)")
            if im.mode.startswith("I") or im.mode == "F":
                # 16-bit, 32-bit and float grayscale: scale the format's range to [0, 255].
                arr = np.asarray(im, dtype=np.float32)
                peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                arr = arr * (255.0 / peak)
            else:
                arr = np.asarray(im.convert("L" if grayscale else "RGB"), dtype=np.float32)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file") from None
    except Image.DecompressionBombError:
        raise InputError(f"{path}: declares more pixels than Pillow's safety limit "
                         f"({Image.MAX_IMAGE_PIXELS}); refusing to decode it") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path}: unreadable image ({err})") from None
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: holds NaN or infinite pixel values")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def preprocess(image: np.ndarray, size: int, crop: bool = True,
               resample=Image.Resampling.LANCZOS) -> torch.Tensor:
    """(C, size, size) float tensor: shorter side resized to `size`, then a centred square crop (the paper).
    `crop=False` keeps the whole image, (C, H', W') with min(H', W') = size; an image already that size is
    returned exactly, unresampled."""
    h, w, c = image.shape
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_h, new_w) == (h, w):
        arr = np.transpose(image.astype(np.float32), (2, 0, 1))
    else:
        # Resample each channel as a float image so no precision is lost before the crop.
        arr = np.stack([np.asarray(Image.fromarray(image[:, :, k].astype(np.float32), mode="F")
                                   .resize((new_w, new_h), resample)) for k in range(c)], axis=0)
    if crop:
        top, left = (new_h - size) // 2, (new_w - size) // 2
        arr = arr[:, top:top + size, left:left + size]
    return torch.from_numpy(np.ascontiguousarray(np.clip(arr, 0.0, 255.0)))


def load_mask(path, shape) -> np.ndarray:
    """(H, W) bool, set where the mask image at `path` is light (white = unknown), for an image of
    `shape` (H, W, ...): the mask must have the image's size."""
    arr = load_image(path)
    if arr.shape[:2] != tuple(shape[:2]):
        raise InputError(f"{path}: the mask is {arr.shape[1]}x{arr.shape[0]} pixels and the image "
                         f"{shape[1]}x{shape[0]}: they must be the same size")
    return arr.max(axis=2) > 127.5


def rectangle_mask(shape, rectangle) -> np.ndarray:
    """(H, W) bool, set inside `rectangle` = (x, y, width, height) in pixels of an image of `shape` (H, W, ...)."""
    x, y, width, height = (int(v) for v in rectangle)
    h, w = shape[:2]
    if width < 1 or height < 1 or x < 0 or y < 0 or x + width > w or y + height > h:
        raise InputError(f"the rectangle {x},{y},{width},{height} (x,y,width,height) does not lie inside the "
                         f"{w}x{h} image")
    mask = np.zeros((h, w), dtype=bool)
    mask[y:y + height, x:x + width] = True
    return mask


def preprocess_mask(mask: np.ndarray, size: int, crop: bool = True) -> torch.Tensor:
    """(H', W') bool: an (H, W) mask taken through `preprocess` with its image. A pixel is set where any
    part of it was (area resampling, no ringing): a resized hole never shrinks."""
    area = preprocess(mask[:, :, None].astype(np.float32) * 255.0, size, crop, Image.Resampling.BOX)
    return area[0] > 0


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (C, H, W) tensor in [0, 255] (C = 1 or 3) as an 8-bit PIL image."""
    arr = image.detach().cpu().float().clamp(0, 255).round().to(torch.uint8).numpy()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], mode="L")
    return Image.fromarray(np.transpose(arr, (1, 2, 0)), mode="RGB")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(write, path) -> None:
    """Write `path` through a temporary file in the same folder and rename it: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_png(image, path) -> None:
    img = to_pil(image) if isinstance(image, torch.Tensor) else image
    atomic_save(lambda tmp: img.save(tmp, format="PNG"), path)


def save_json(data, path, indent: int | None = None) -> None:
    """Write `data` as JSON, one trailing newline, through `atomic_save`."""
    text = json.dumps(data, indent=indent) + "\n"
    atomic_save(lambda tmp: Path(tmp).write_text(text), path)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType scaling
        return ImageFont.load_default()


def make_grid(training: torch.Tensor, samples: torch.Tensor, real_crops: torch.Tensor | None = None,
              gap: int = 8, training_title: str = "training image") -> Image.Image:
    """The training image, then the samples in a near-square grid and, if given, as many real crops of
    the training image at the samples' size in a grid beside them, each with a caption."""
    n, c, h, w = samples.shape
    panels = [(f"{n} samples, {w}x{h}", samples)]
    if real_crops is not None:
        panels.append((f"real crops, {w}x{h}", real_crops))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    panel_w, panel_h = cols * w + (cols - 1) * (gap // 2), rows * h + (rows - 1) * (gap // 2)
    train = to_pil(training)
    caption = 22
    width = gap + train.width + len(panels) * (2 * gap + panel_w) + gap
    height = caption + max(train.height, panel_h) + gap
    grid = Image.new("L" if c == 1 else "RGB", (width, height), 255 if c == 1 else (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font, ink = _font(14), 0 if c == 1 else (0, 0, 0)
    draw.text((gap, 4), training_title, fill=ink, font=font)
    grid.paste(train, (gap, caption))
    x0 = gap + train.width + 2 * gap
    for title, images in panels:
        draw.text((x0, 4), title, fill=ink, font=font)
        for i, image in enumerate(images[:n]):
            r, q = divmod(i, cols)
            grid.paste(to_pil(image), (x0 + q * (w + gap // 2), caption + r * (h + gap // 2)))
        x0 += panel_w + 2 * gap
    return grid


def contact_sheet(images: torch.Tensor, columns: int | None = None, gap: int = 4) -> Image.Image:
    """Images (N, C, H, W) in [0, 255] side by side in a near-square grid on white."""
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    sheet = Image.new("L" if c == 1 else "RGB", (columns * (w + gap) + gap, rows * (h + gap) + gap),
                      255 if c == 1 else (255, 255, 255))
    for i, image in enumerate(images):
        r, q = divmod(i, columns)
        sheet.paste(to_pil(image), (gap + q * (w + gap), gap + r * (h + gap)))
    return sheet


def filter_sheet(weight: torch.Tensor, scale: int = 4) -> Image.Image:
    """First-layer filters (K, C, kh, kw) as a contact sheet: each filter stretched on its own so its
    largest |weight| reaches black or white, zero at mid-grey, and enlarged `scale` times (nearest)."""
    w = weight.detach().float().cpu()
    peak = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    images = (127.5 + 127.5 * w / peak).repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return contact_sheet(images, gap=2)


def save_gif(frames: list, path, seconds_per_frame: float = 0.1) -> None:
    """An animated GIF of PIL frames, looping, the last frame held a little longer."""
    durations = [int(1000 * seconds_per_frame)] * (len(frames) - 1) + [1500]
    atomic_save(lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                           duration=durations, loop=0), path)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _plot_panel(draw, box, xs, ys, title, color, boundaries, font, log=False) -> None:
    left, top, right, bottom = box
    black, grey = (0, 0, 0), (200, 200, 200)
    draw.text((left, top - 22), title, fill=black, font=font)
    values = [math.log10(v) if log else v for v in ys if math.isfinite(v) and (v > 0 or not log)]
    if not values:
        draw.rectangle(box, outline=black)
        return
    # A robust range (2nd to 98th percentile): one spike when a layer is added must not flatten the rest.
    ordered = sorted(values)
    lo, hi = ordered[int(0.02 * (len(ordered) - 1))], ordered[int(0.98 * (len(ordered) - 1))]
    if log:
        lo, hi = math.floor(lo), math.ceil(hi)
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = (lo, hi) if log and hi > lo else (lo - pad, hi + pad)
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1)

    def px(x, y):
        y = min(max(y, lo), hi)  # outliers are drawn on the frame
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (y - lo) / (hi - lo) * (bottom - top))

    ticks = list(range(int(lo), int(hi) + 1)) if log else _nice_ticks(lo, hi)
    for t in ticks:
        _, y = px(x_lo, t)
        draw.line([(left, y), (right, y)], fill=grey)
        label = f"1e{t}" if log else f"{t:.4g}"
        draw.text((left - 8, y), label, fill=black, font=font, anchor="rm")
    for b in boundaries:
        x, _ = px(b, lo)
        draw.line([(x, top), (x, bottom)], fill=(150, 150, 220), width=1)
    for t in _nice_ticks(x_lo, x_hi):
        x, _ = px(t, lo)
        draw.text((x, bottom + 6), f"{t:.0f}", fill=black, font=font, anchor="mt")
    if not log and lo < 0 < hi:
        _, y0 = px(x_lo, 0.0)
        draw.line([(left, y0), (right, y0)], fill=(120, 120, 120), width=1)
    points = [px(x, math.log10(y) if log else y) for x, y in zip(xs, ys)
              if math.isfinite(y) and (y > 0 or not log)]
    if len(points) > 1:
        draw.line(points, fill=color, width=2)
    draw.rectangle(box, outline=black)


def draw_learning_curve(records: list, path) -> None:
    """Score gap and gradient norm against iterations, one panel each, layer changes marked."""
    width, height = 900, 620
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(14)
    xs = list(range(1, len(records) + 1))
    boundaries = [i + 0.5 for i in range(1, len(records)) if records[i]["layer"] != records[i - 1]["layer"]]
    gaps = [r["gap"] for r in records]
    norms = [r["grad_norm"] for r in records]
    _plot_panel(draw, (90, 50, width - 30, 270), xs, gaps,
                "score gap: mean f(observed) - mean f(synthesized), per position (2-98% range)", (200, 60, 30),
                boundaries, font)
    _plot_panel(draw, (90, 350, width - 30, 570), xs, norms,
                "weight gradient norm (before clipping), log scale", (30, 90, 200), boundaries, font,
                log=True)
    draw.text((width // 2, height - 18), "iteration (blue lines: a new layer starts)", fill=(0, 0, 0),
              font=font, anchor="mm")
    atomic_save(lambda tmp: img.save(tmp, format="PNG"), path)


def save_checkpoint(state: dict, path, fmt: str = CHECKPOINT_FORMAT) -> None:
    """Save a checkpoint dict (plain types and tensors only, so weights_only loading works) atomically,
    with its format and the package version (see `load_checkpoint`)."""
    from . import __version__

    payload = {"format": fmt, "version": __version__, **state}
    atomic_save(lambda tmp: torch.save(payload, tmp), path)


# What a model file and a saved chain bank must hold, and of which type: anything else is foreign,
# damaged or tampered with.
CHECKPOINT_SCHEMA = {"format": str, "version": str, "config": dict, "model_config": dict, "model": dict,
                     "optimizer": dict, "chains": torch.Tensor, "layer": int, "iteration": int,
                     "langevin_steps_done": int, "seconds": float, "mean": torch.Tensor}
# Optional in a model file: what model files of earlier versions do not have.
CHECKPOINT_OPTIONAL = {"start_kernel": torch.Tensor}
CHAINS_FORMAT = "tritongcn.chains"
CHAINS_SCHEMA = {"format": str, "x": torch.Tensor, "steps": torch.Tensor, "boundary": str, "step_size": float,
                 "sigma": float, "seed": int, "first_chain": int, "total_chains": int, "precision": str}
# Bounded chains: the colour subtracted from them.
CHAINS_OPTIONAL = {"mean": torch.Tensor}


def _version_tuple(version: str) -> tuple:
    return tuple(int(part) for part in version.split("."))


def load_checkpoint(path, fmt: str = CHECKPOINT_FORMAT) -> dict:
    """Load a model file (or, with fmt=CHAINS_FORMAT, saved chains) without running any code from it
    (torch's weights_only loader refuses any pickled object but plain containers, numbers, strings and
    tensors), then check it against its schema and the package version. Raises InputError with a
    one-line reason."""
    from . import __version__

    path = Path(path)
    what, schema = ("tritongcn model", CHECKPOINT_SCHEMA) if fmt == CHECKPOINT_FORMAT else \
        ("saved tritongcn chains", CHAINS_SCHEMA)
    if not path.is_file():
        raise InputError(f"{path}: no such {'model' if fmt == CHECKPOINT_FORMAT else 'chains'} file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign, damaged or unsafe files
        reason = "it holds objects other than tensors and plain data" if "weights_only" in str(err) else \
            "damaged, or not a file that torch saved"
        raise InputError(f"{path}: not a readable {what} file ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise InputError(f"{path}: not a {what} file")
    for key, kind in schema.items():
        if not isinstance(state.get(key), kind) or (kind is int and isinstance(state[key], bool)):
            got = "missing" if key not in state else type(state[key]).__name__
            raise InputError(f"{path}: damaged {what} file ({key!r} should be {kind.__name__}, is {got})")
    if "version" in state:  # chains saved before they carried it are read as they are
        try:
            newer = _version_tuple(str(state["version"])) > _version_tuple(__version__)
        except ValueError:
            raise InputError(f"{path}: damaged {what} file (version {state['version']!r})") from None
        if newer:
            raise InputError(f"{path}: written by tritongcn {state['version']}, newer than this {__version__}; "
                             "upgrade tritongcn to read it")
    optional = CHECKPOINT_OPTIONAL if fmt == CHECKPOINT_FORMAT else CHAINS_OPTIONAL
    for key, kind in optional.items():
        if key in state and not isinstance(state[key], kind):
            raise InputError(f"{path}: damaged {what} file ({key!r} should be {kind.__name__}, is "
                             f"{type(state[key]).__name__})")
    tensors = list(state["model"].values()) if fmt == CHECKPOINT_FORMAT else [state["x"]]
    tensors += [state[key] for key, kind in optional.items() if key in state and kind is torch.Tensor]
    if not all(isinstance(t, torch.Tensor) and torch.isfinite(t).all() for t in tensors):
        raise InputError(f"{path}: damaged {what} file (values that are not finite tensors)")
    return state
