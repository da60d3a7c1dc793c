"""The files a learning run leaves in its folder: the model, its new samples, the grid, the learning curve,
the filters and the learning chains."""

from .common import sample_name


def save_preview(learner, chains, path) -> None:
    """The learning chains so far as one contact sheet, in [0, 255]."""
    from ..figures import contact_sheet
    from ..images import save_png

    save_png(contact_sheet((chains + learner.mean.view(1, -1, 1, 1)).clamp(0, 255)), path)


def write_outputs(out_dir, seed, state, images, samples, chains, records) -> None:
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
        save_png(sample, sample_dir / sample_name(i))
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
