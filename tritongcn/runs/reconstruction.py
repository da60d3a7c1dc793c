"""`tritongcn reconstruct` as a run: images auto-encoded by a learned model, and their local modes."""

from dataclasses import dataclass
from pathlib import Path

from ..config import LearnConfig
from ..progress import Progress
from .common import Reporter, RunError, finite, load_model, usable_device


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

    from ..autoencoder import descend_to_mode, reconstruction_error
    from ..autoencoder import reconstruct as auto_encode
    from ..figures import contact_sheet
    from ..images import image_paths, load_image, preprocess, save_png
    from ..io import InputError, save_json

    report = report or Reporter()
    state, model = load_model(run.model_path)
    learned = LearnConfig.from_dict(state["config"])
    try:
        paths = image_paths(run.images)
        if not paths:
            raise InputError("no PNG or JPEG images in " + ", ".join(str(p) for p in run.images))
        size = run.image_size or learned.image_size
        raw = [load_image(p) for p in paths]
    except InputError as err:
        raise RunError(str(err)) from None
    channels = model.in_channels
    for path, image in zip(paths, raw):
        if image.shape[2] != channels:
            raise RunError(f"{path}: {'grayscale' if image.shape[2] == 1 else 'colour'} image, but the model "
                           f"was learned on {'grayscale' if channels == 1 else 'colour'}")
    if (run.out_dir / "reconstruct.json").exists() and not run.overwrite:
        raise RunError(f"{run.out_dir} already holds a reconstruction: pass --overwrite or choose another --out")
    device = torch.device(usable_device(run.device))
    boundary = learned.data_boundary()  # how learn scored the data
    mean = state["mean"].float().view(1, -1, 1, 1)
    x = torch.stack([preprocess(image, size) for image in raw]) - mean
    try:
        model.check_size(x.shape, boundary)
    except ValueError as err:
        raise RunError(f"--image-size {size}: {err}") from None
    model, x = model.to(device), x.to(device)
    sigma = model.sigma
    recon = auto_encode(model, x, sigma, boundary)
    errors = reconstruction_error(x, recon).cpu()
    panels = [x.cpu(), recon.cpu()]
    if run.with_mode:
        with Progress(run.steps, "descending to the modes") as bar:
            modes, residuals, taken = descend_to_mode(
                model, x, sigma, boundary, max_steps=run.steps,
                progress=lambda step, worst: bar.update(1, f"largest residual {worst:.1e}"))
        panels.append(modes.cpu())
        mode_errors = reconstruction_error(x, modes).cpu()
    run.out_dir.mkdir(parents=True, exist_ok=True)
    result = {"model": str(run.model_path), "sigma": sigma, "image_size": size, "images": []}
    for i, path in enumerate(paths):
        row = torch.stack([p[i] for p in panels]) + mean
        save_png(contact_sheet(row.clamp(0, 255), columns=len(panels)), run.out_dir / f"{i:04d}.png")
        # An image equal to the mean colour has no norm to compare with: its error is null (NaN).
        entry = {"file": str(path), "output": f"{i:04d}.png", "reconstruction_error": finite(errors[i])}
        line = f"{path}: reconstruction error {errors[i].item():.4f}"
        if run.with_mode:
            entry.update(mode_residual=finite(residuals[i]), mode_error=finite(mode_errors[i]))
            line += (f", mode {mode_errors[i].item():.4f} from the image, residual "
                     f"||I - sigma^2 B|| / ||I|| {residuals[i].item():.1e}")
        result["images"].append(entry)
        report.say(line)
    mean_error = errors.nanmean()  # images equal to the mean colour (NaN) left out
    result["mean_reconstruction_error"] = finite(mean_error)
    if run.with_mode:
        result["descent_steps"] = taken
    save_json(result, run.out_dir / "reconstruct.json", indent=1)
    report.say(f"mean reconstruction error {mean_error.item():.4f} over {len(paths)} images; "
               f"image | reconstruction{' | mode' if run.with_mode else ''} in {run.out_dir}")
    return result
