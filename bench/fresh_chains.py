"""Does a learned model's own sampler make the texture, and does it stay there? Texture figures of new
chains against the number of Langevin steps, from each start.

    python bench/fresh_chains.py MODEL TEXTURE [--steps 0,25,50,100,200,300,600,1200] [--chains 4]
                                 [--starts zero,noise,spectrum,learned,image] [--plot PNG] [--label NAME]

For each start (the mean image, N(0, sigma^2) noise, random-phase noise with the training image's
spectrum, the model's own learning chains continued, and the training image itself), `--chains` chains at
the model's sample size (the learning chains at theirs) are advanced with the model's Langevin step and
scored by
`tritongcn.evaluate` (patch_swd, ps_z; lower is better) at each step count. Rows are printed, appended as
JSON to bench/fresh_chains.jsonl, and drawn as two panels (ps_z and patch_swd against steps) with the
real crops' and random-phase noise's figures as horizontal lines.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from tritongcn.chains import ChainBank, sampler_bank
from tritongcn.config import LearnConfig, image_sample_size
from tritongcn.evaluate import evaluate, portilla_simoncelli_available
from tritongcn.checkpoints import load_checkpoint
from tritongcn.images import load_image, preprocess
from tritongcn.learn import shading_plane
from tritongcn.model import GenerativeConvNet

from common import append_results


def image_starts(config, mean, training, chains, size, seed):
    """The training image as `chains` starts of `size` px, in the chains' coordinates (its `mean` colour, and
    its light's slope where the model learned without it, taken out), wrapped or cut to the size and each
    shifted by its own circular offset: where the model's own dynamics take the data (bench/TUNING.md,
    "Where new samples' figures stop"). The photo is not periodic, so each start holds its seam, one row
    and one column."""
    image = training.float().unsqueeze(0) - mean
    if config.shading == "flatten":
        image = image - shading_plane(image)
    h, w = image.shape[-2:]
    image = F.pad(image, (0, max(size - w, 0), 0, max(size - h, 0)), mode="circular")[..., :size, :size]
    generator = torch.Generator().manual_seed(seed)
    shifts = torch.randint(0, size, (chains, 2), generator=generator).tolist()
    starts = torch.cat([torch.roll(image, (dy, dx), (2, 3)) for dy, dx in shifts])
    return (starts + mean).clamp(0, 255) - mean  # inside the image range, as every bounded chain


def curves(state, model, training, starts, steps, chains, seed=1):
    """{start: [(steps, figures)]} for the model file's state."""
    config = LearnConfig.from_dict(state["config"])
    mean = state["mean"].float().view(1, -1, 1, 1)
    out = {}
    for start in starts:
        if start in ("learned", "image"):
            if start == "learned":
                images = state["chains"]
            else:  # at the samples' size, by learn's rule where the file predates its recording
                size = config.sample_size or image_sample_size(training.shape[-1], model.total_stride())
                images = image_starts(config, mean, training, chains, size, seed)
            bank = ChainBank(model, len(images), images.shape[1:], step_size=config.step_size,
                             sigma=config.sigma, seed=seed, images=images,
                             boundary=config.chain_boundary(),
                             mean=state["mean"] if config.bounded else None)
        else:
            if start == "spectrum" and "start_kernel" not in state:
                continue
            bank = sampler_bank(model, config, state.get("start_kernel"), chains, seed=seed, init=start,
                                mean=state["mean"])
        rows, done = [], 0
        for target in steps:
            bank.advance(target - done)
            done = target
            images = (bank.x + mean).clamp(0, 255).round()
            first = not out and not rows  # the references once: they do not depend on the chains
            figures = evaluate(training, images, use_ps=portilla_simoncelli_available(), references=first)
            rows.append((target, figures))
            print(f"{start:>9} {target:>6} steps: " + ", ".join(f"{k} {v:.3f}" for k, v in figures["samples"].items()),
                  flush=True)
        out[start] = rows
    return out


def plot(results, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    any_rows = next(iter(results.values()))
    metrics = list(any_rows[0][1]["samples"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for start, rows in results.items():
            ax.plot([max(s, 1) for s, _ in rows], [f["samples"][metric] for _, f in rows], marker="o", label=start)
        reference = any_rows[0][1]  # the first row holds the references
        for name, style in (("real_crops", ":"), ("random_phase", "--")):
            ax.axhline(reference[name][metric], color="grey", linestyle=style, label=name.replace("_", " "))
        ax.set_xscale("log")
        ax.set_xlabel("Langevin steps (0 drawn at 1)")
        ax.set_ylabel(f"{metric} (lower is better)")
        ax.set_title(f"{title}: {metric}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("texture")
    parser.add_argument("--steps", default="0,25,50,100,200,300,600,1200")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--starts", default="zero,noise,spectrum,learned")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--label", default=None, help="name of the model in the table and the plot")
    parser.add_argument("--out", default=str(Path(__file__).with_name("fresh_chains.jsonl")))
    args = parser.parse_args()
    state = load_checkpoint(args.model)
    model = GenerativeConvNet.from_config(state["model_config"])
    model.load_state_dict(state["model"])
    config = LearnConfig.from_dict(state["config"])
    training = preprocess(load_image(args.texture), config.image_size)
    steps = sorted(int(s) for s in args.steps.split(","))
    results = curves(state, model, training, args.starts.split(","), steps, args.chains)
    label = args.label or args.model
    append_results(args.out, "fresh_chains", [{
              "model": label, "texture": Path(args.texture).name, "chains": args.chains,
              "curves": {start: [{"steps": s, **f["samples"]} for s, f in rows] for start, rows in results.items()},
              "real_crops": next(iter(results.values()))[0][1]["real_crops"],
              "random_phase": next(iter(results.values()))[0][1]["random_phase"]}])
    if args.plot:
        plot(results, args.plot, f"{label}, {Path(args.texture).stem}")


if __name__ == "__main__":
    main()
