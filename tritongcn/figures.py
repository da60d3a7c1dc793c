"""Pictures of a run: the training image beside samples, contact sheets, filters, animations and learning
curves, drawn with Pillow alone (no plotting library to install, and `--help` stays instant)."""

import math

import torch
from PIL import Image, ImageDraw, ImageFont

from .images import to_pil
from .io import atomic_save


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


def labelled_row(images: torch.Tensor, titles, gap: int = 8) -> Image.Image:
    """Images (N, C, H, W) in [0, 255] side by side on white, each with its title above it."""
    n, c, h, w = images.shape
    caption, white = 22, 255 if c == 1 else (255, 255, 255)
    row = Image.new("L" if c == 1 else "RGB", (gap + n * (w + gap), caption + h + gap), white)
    draw, font, ink = ImageDraw.Draw(row), _font(14), 0 if c == 1 else (0, 0, 0)
    for i, (image, title) in enumerate(zip(images, titles)):
        x = gap + i * (w + gap)
        draw.text((x, 4), title, fill=ink, font=font)
        row.paste(to_pil(image), (x, caption))
    return row


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
