"""Images in and out: reading photos and masks, the paper's resize and crop, tensors to PNG."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .io import InputError, atomic_save


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


def save_png(image, path) -> None:
    img = to_pil(image) if isinstance(image, torch.Tensor) else image
    atomic_save(lambda tmp: img.save(tmp, format="PNG"), path)
