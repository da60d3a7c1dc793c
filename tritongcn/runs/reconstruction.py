"""`tritongcn reconstruct` as a run: images auto-encoded by a learned model, and their local modes."""

from dataclasses import dataclass
from pathlib import Path

from ..config import LearnConfig
from ..progress import Progress
from .common import Reporter, RunError, claim_out_dir, finite, load_images, load_model, sample_name, usable_device

# A descent whose residual ||I - sigma^2 B(I)|| / ||I|| falls below this has reached a mode.
MODE_REACHED = 1e-6


@dataclass
class ReconstructRun:
    model_path: Path
    images: tuple  # images or folders of them
    out_dir: Path
    with_mode: bool = False  # also descend to each image's local mode
    steps: int = 500  # most descent steps
    image_size: int | None = None  # default: the size the model learned with
    device: str = "auto"
    overwrite: bool = False


def reconstruct(run: ReconstructRun, report: Reporter | None = None) -> dict:
    """Write each image beside its reconstruction (and mode) and reconstruct.json; return its contents."""
    import torch

    from ..autoencoder import reconstruct as auto_encode
    from ..autoencoder import reconstruction_error
    from ..images import preprocess
    from ..io import save_json

    report = report or Reporter()
    state, model = load_model(run.model_path)
    learned = LearnConfig.from_dict(state["config"])
    size = run.image_size or learned.image_size
    paths, raw = _load(run, model.in_channels)
    claim_out_dir(run.out_dir, "reconstruct.json", overwrite=run.overwrite)
    device = torch.device(usable_device(run.device))
    boundary = learned.data_boundary()  # how learn scored the data
    mean = state["mean"].float().view(1, -1, 1, 1)
    x = torch.stack([preprocess(image, size) for image in raw]) - mean
    try:
        model.check_size(x.shape, boundary)
    except ValueError as err:
        raise RunError(f"{err}", option="--image-size") from None
    model, x = model.to(device), x.to(device)
    recon = auto_encode(model, x, model.sigma, boundary)
    errors = reconstruction_error(x, recon).cpu()
    panels = {"image": x.cpu(), "reconstruction": recon.cpu()}
    modes = _modes(run, model, x, boundary) if run.with_mode else None
    if modes is not None:
        panels["mode"] = modes[0].cpu()
    run.out_dir.mkdir(parents=True, exist_ok=True)
    result = {"model": str(run.model_path), "sigma": model.sigma, "image_size": size,
              "images": [_write_image(run, i, path, panels, mean, errors, modes, report) for i, path in enumerate(paths)]}
    mean_error = errors.nanmean()  # images equal to the mean colour (NaN) left out
    result["mean_reconstruction_error"] = finite(mean_error)
    if modes is not None:
        result["descent_steps"] = modes[2]
    save_json(result, run.out_dir / "reconstruct.json", indent=1)
    report.say(f"mean reconstruction error {mean_error.item():.4f} over {len(paths)} "
               f"image{'s' if len(paths) != 1 else ''} (0: the image is its own reconstruction, a mode); "
               f"{' | '.join(panels)} in {run.out_dir}")
    return result


def _load(run: ReconstructRun, channels: int) -> tuple:
    """(paths, raw arrays) of the images, refused if none or of another kind of colour than the model's."""
    paths, raw = load_images(run.images, "no PNG or JPEG images in " + ", ".join(str(p) for p in run.images))
    for path, image in zip(paths, raw):
        if image.shape[2] != channels:
            raise RunError(f"{path}: {'grayscale' if image.shape[2] == 1 else 'colour'} image, but the model "
                           f"was learned on {'grayscale' if channels == 1 else 'colour'}")
    return paths, raw


def _modes(run: ReconstructRun, model, x, boundary: str) -> tuple:
    """(modes, residuals, steps taken) of the deterministic descent from each image, with a progress line."""
    from ..autoencoder import descend_to_mode

    with Progress(run.steps, "descending to the modes") as bar:
        return descend_to_mode(model, x, model.sigma, boundary, max_steps=run.steps, tol=MODE_REACHED,
                               progress=lambda step, worst: bar.update(1, f"largest residual {worst:.1e}"))


def _write_image(run: ReconstructRun, i: int, path, panels: dict, mean, errors, modes, report: Reporter) -> dict:
    """Image i's labelled panels as a PNG, its line said, and its entry of reconstruct.json."""
    import torch

    from ..autoencoder import reconstruction_error
    from ..figures import labelled_row
    from ..images import save_png

    row = torch.stack([p[i] for p in panels.values()]) + mean
    save_png(labelled_row(row.clamp(0, 255), list(panels)), run.out_dir / sample_name(i))
    # An image equal to the mean colour has no norm to compare with: its error is null (NaN).
    entry = {"file": str(path), "output": sample_name(i), "reconstruction_error": finite(errors[i])}
    line = f"{path}: reconstruction error {errors[i].item():.4f}"
    if modes is not None:
        residual = modes[1][i].item()
        mode_error = reconstruction_error(panels["image"][i:i + 1], panels["mode"][i:i + 1])[0]
        entry.update(mode_residual=finite(residual), mode_error=finite(mode_error), mode_reached=residual < MODE_REACHED)
        line += (f"; a mode {mode_error.item():.4f} away from the image" if residual < MODE_REACHED else
                 f"; no mode reached in {run.steps} steps (residual {residual:.2g}, 0 at a mode): more --steps "
                 "may reach one")
    report.say(line)
    return entry
