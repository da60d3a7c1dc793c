"""Texture completion against OpenCV's inpainting: holes of several sizes filled by a model learned from
the rest of the image, and by `cv2.inpaint` (Telea), scored on the filled region and on its seam.

    python bench/bench_complete.py TEXTURE... [--holes 32,64,96] [--chains 4] [--image-size 224]
                                   [--work DIR] [--picture PNG] [--set NAME=VALUE ...]

Each texture is preprocessed as `tritongcn learn` does (shorter side to --image-size, centred square).
Square holes of each size are centred in it. One model per texture is learned as `tritongcn complete`
learns one (the default recipe with `completion.MODEL_SETTINGS`, and --set's changes) from the image with
the largest hole unknown (`learn --hole`), so it never sees the content of any hole; it then completes
each hole (`tritongcn.completion.complete`, --chains samples, the model's 300 Langevin steps and 10
noise-free ones). A model in --work from an earlier run is used again if it was learned with the same
settings. OpenCV's Telea inpainting (radius 5) fills the same holes.

Figures, lower is better except where said:
- `patch_swd`, `ps_z`: `tritongcn.evaluate`'s figures of the filled square against real crops of the same
  size of the texture (`real` is the floor: another piece of the texture);
- `seam`: the mean squared difference of neighbouring pixels straddling the hole's border, over that of
  neighbours on the lines up to 3 px either side of it: 1 is a border like its surroundings, above 1 an
  edge that shows, below 1 a blur (`true`: the hole's true content);
- seconds: wall time of the fill alone (the learning is timed once per texture).

Prints a table, appends JSON lines to bench/results.jsonl, and draws one row per texture (the hole, Telea,
tritongcn, the true content) for the largest hole into --picture.
"""

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

import tritongcn
from tritongcn.completion import MODEL_SETTINGS, complete
from tritongcn.evaluate import evaluate, portilla_simoncelli_available
from tritongcn.figures import contact_sheet
from tritongcn.images import load_image, preprocess, save_png
from tritongcn.runs import LearnRun, Reporter, learn
from tritongcn.runs.common import load_model
from tritongcn.config import LearnConfig

from common import RESULTS, append_results, learn_settings, machine_name


# LearnConfig settings that a learn run fills in for the image and the machine: a model in --work may
# differ from the asked-for recipe in these and still be used again.
MACHINE_SETTINGS = {"image_size", "sample_size", "chain_size", "device", "backend", "precision"}


def _side_pairs(x: torch.Tensor, top: int, left: int, size: int, offset: int) -> torch.Tensor:
    """Differences of the neighbouring pixels perpendicular to the four sides of the square hole at (top,
    left) of side `size` in x (C, H, W), `offset` pixels from each side: offset 0 straddles the border
    (one pixel inside, one out), offset k > 0 lies k pixels inside it, k < 0 outside."""
    across, down = slice(left, left + size), slice(top, top + size)  # the sides' extents
    first_row, last_row = top + offset, top + size - offset
    first_col, last_col = left + offset, left + size - offset
    return torch.cat([(x[:, first_row - 1, across] - x[:, first_row, across]).flatten(),
                      (x[:, last_row - 1, across] - x[:, last_row, across]).flatten(),
                      (x[:, down, first_col - 1] - x[:, down, first_col]).flatten(),
                      (x[:, down, last_col - 1] - x[:, down, last_col]).flatten()])


def seam(image: torch.Tensor, top: int, left: int, size: int, band: int = 3) -> float:
    """How much the hole's border shows: the mean squared difference of neighbours straddling it over that
    of the neighbours on the parallel lines `band` pixels either side of it (each line's pairs in the
    same direction). 1: the border looks like its surroundings; above 1, an edge; below, a blur."""
    x = image.double()
    across = _side_pairs(x, top, left, size, 0).pow(2).mean()
    near = torch.cat([_side_pairs(x, top, left, size, k) for k in range(-band, band + 1) if k]).pow(2).mean()
    return (across / near).item()


def telea(image: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    import cv2

    arr = np.ascontiguousarray(image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    source = arr[:, :, 0] if arr.shape[2] == 1 else arr  # OpenCV takes grayscale as (H, W)
    filled = cv2.inpaint(source, unknown.numpy().astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    return torch.from_numpy(filled.reshape(arr.shape)).permute(2, 0, 1).float()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("textures", nargs="+", type=Path)
    parser.add_argument("--holes", default="32,64,96")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_complete"))
    parser.add_argument("--picture", type=Path, default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="LearnConfig settings of the models learned (`--set temperature=4`)")
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args()


def centred(image: torch.Tensor, size: int) -> tuple[int, int]:
    """(top, left) of the square of side `size` centred in image (C, H, W)."""
    c, h, w = image.shape
    return (h - size) // 2, (w - size) // 2


def texture_model(image: torch.Tensor, work: Path, settings: dict, side: int):
    """The model of image learned with its centred square of side `side` unknown, in work/model (one that
    an earlier run learned there with the same settings is used again): its saved state, the model, its
    LearnConfig and the seconds the learning took."""
    work.mkdir(parents=True, exist_ok=True)
    square = work / "image.png"
    save_png(image, square)
    top, left = centred(image, side)
    model_dir = work / "model"
    timing = work / "learn_seconds.txt"  # a model learned by an earlier run is used again, with its time
    if not (model_dir / "model.pt").exists():
        quiet = Reporter(say=lambda message: None, warn=lambda message: None)
        start = time.perf_counter()
        learn(LearnRun(square, model_dir, settings=settings, hole=(left, top, side, side)), quiet)
        timing.write_text(f"{time.perf_counter() - start:.1f}")
    learn_seconds = float(timing.read_text())
    state, model = load_model(model_dir / "model.pt")
    config = LearnConfig.from_dict(state["config"])
    expected = LearnConfig(**settings)  # the recipe the run asks for, but for what the machine resolves
    differ = {f.name: getattr(config, f.name) for f in fields(LearnConfig)
              if f.name not in MACHINE_SETTINGS and getattr(config, f.name) != getattr(expected, f.name)}
    if differ:
        raise SystemExit(f"{model_dir} was learned with {differ}, not with the settings asked for: remove it "
                         "or choose another --work")
    return state, model, config, learn_seconds


def fill_hole(state, model, config, image: torch.Tensor, unknown: torch.Tensor, chains: int):
    """image's `unknown` pixels filled by the model (`chains` samples) and by Telea: (ours, Telea's,
    seconds of ours, seconds of Telea's)."""
    t0 = time.perf_counter()
    ours = complete(model, image, unknown, mean=state["mean"], steps=config.sample_steps,
                    step_size=config.step_size, chains=chains, init=config.start,
                    start_kernel=state["start_kernel"])
    ours_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = telea(image, unknown)
    return ours, theirs, ours_seconds, time.perf_counter() - t0


def hole_figures(image: torch.Tensor, ours: torch.Tensor, theirs: torch.Tensor, size: int) -> dict:
    """The figures of the centred hole of side `size` as filled by ours and by Telea, of its true content
    (with each one's seam) and of real crops: a row's figures."""
    top, left = centred(image, size)
    region = (slice(None), slice(None), slice(top, top + size), slice(left, left + size))
    figures = evaluate(image, ours.round()[region], crop=size, others={
        "telea": theirs.unsqueeze(0)[region], "truth": image.unsqueeze(0)[region]}, references=True)
    return {"tritongcn": {**figures["samples"], "seam": float(np.mean([seam(o, top, left, size) for o in ours]))},
            "telea": {**figures["telea"], "seam": seam(theirs, top, left, size)},
            "truth": {**figures["truth"], "seam": seam(image, top, left, size)},
            "real_crops": figures["real_crops"]}


def bench_texture(texture: Path, args, holes: list, settings: dict):
    """One texture's rows, a hole size each (printed as they come), and its panels for the picture: the
    largest hole, Telea's fill, our first chain's and the true content."""
    image = preprocess(load_image(texture), args.image_size)
    state, model, config, learn_seconds = texture_model(image, args.work / texture.stem, settings, holes[-1])
    rows, panels = [], []
    for size in holes:
        top, left = centred(image, size)
        unknown = torch.zeros(image.shape[1:], dtype=torch.bool)
        unknown[top:top + size, left:left + size] = True
        ours, theirs, ours_seconds, telea_seconds = fill_hole(state, model, config, image, unknown, args.chains)
        figures = hole_figures(image, ours, theirs, size)
        figures["tritongcn"]["seconds"] = round(ours_seconds, 2)  # after the seam, as the records have it
        figures["telea"]["seconds"] = round(telea_seconds, 4)
        row = {"texture": texture.stem, "hole": size, "chains": args.chains, "settings": settings, **figures,
               "learn_seconds": round(learn_seconds, 1)}
        rows.append(row)
        print(json.dumps(row))
        if size == holes[-1]:
            shown = image.clone()
            shown[:, unknown] = 128.0
            panels += [shown, theirs, ours[0], image]
    return rows, panels


def print_table(rows: list) -> None:
    """The rows as a Markdown table: each figure ours / Telea's / the floor's, then the fills' seconds."""
    columns = ["patch_swd"] + (["ps_z"] if portilla_simoncelli_available() else []) + ["seam"]
    print(f"\n{machine_name()}, torch {torch.__version__}, tritongcn {tritongcn.__version__}; lower is better "
          "(seam: 1 is a border like its surroundings)")
    print("| texture | hole | " + " | ".join(f"{c} ours / Telea / {'true' if c == 'seam' else 'real'}"
                                           for c in columns) + " | seconds ours / Telea |")
    print("| --- | --- | " + " | ".join("---" for _ in columns) + " | --- |")
    for r in rows:
        floor = [(r["truth"] if k == "seam" else r["real_crops"])[k] for k in columns]
        cells = [f"{r['tritongcn'][k]:.3f} / {r['telea'][k]:.3f} / {f:.3f}" for k, f in zip(columns, floor)]
        print(f"| {r['texture']} | {r['hole']} px | " + " | ".join(cells) +
              f" | {r['tritongcn']['seconds']:.1f} / {r['telea']['seconds']:.3f} |")


def main():
    args = parse_args()
    holes = sorted(int(h) for h in args.holes.split(","))
    settings = {**MODEL_SETTINGS, **learn_settings(args.set)}  # as `tritongcn complete` learns
    rows, panels = [], []
    for texture in args.textures:
        texture_rows, texture_panels = bench_texture(texture, args, holes, settings)
        rows += texture_rows
        panels += texture_panels
    print_table(rows)
    append_results(args.out, "complete", rows)
    if args.picture and panels:
        save_png(contact_sheet(torch.stack([p.expand(3, -1, -1) if p.shape[0] == 1 else p for p in panels]),
                               columns=4), args.picture)


if __name__ == "__main__":
    main()
