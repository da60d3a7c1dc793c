"""A screen for a multi-scale generative ConvNet: the package's pyramid (`tritongcn.pyramid`) learned with
a recipe given on the command line, scored at every scale.

    python bench/pyramid_prototype.py TEXTURE [--size 224] [--scales 5] [--coarsest 48] [--iterations 400] ...

The model and its learning are the package's (`PyramidNet`, `learn.pyramid.PyramidLearning`); this script
sets their knobs, learns, draws 4 fresh samples coarse to fine from a new seed and scores them with
`tritongcn eval`'s figures at every scale of 64 px or more against the image resized to it. One JSON line
per run goes to --out, a contact sheet of the finest samples to --sheets.
"""

import argparse
import json
import time
from pathlib import Path

from tritongcn.evaluate import evaluate
from tritongcn.figures import contact_sheet
from tritongcn.images import load_image, preprocess, save_png
from tritongcn.learn.pyramid import PyramidLearning, PyramidRecipe
from tritongcn.pyramid import PYRAMID_INIT_STD, PYRAMID_STEPS, PyramidNet, scale_sides

from common import append_results

SAMPLES = 4  # fresh samples scored, as `tritongcn learn` draws
SMALLEST_SCORED = 64  # smaller scales leave too few 7x7 patches at patch_swd's coarsest scale


def parse_args():
    recipe = PyramidRecipe()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texture")
    p.add_argument("--size", type=int, default=224, help="the finest scale's side: the training image's")
    p.add_argument("--scales", type=int, default=5)
    p.add_argument("--coarsest", type=int, default=48, help="the coarsest scale's side")
    p.add_argument("--widths", default="64,32,32,32", help="each scale's 3x3 layers")
    p.add_argument("--init", type=float, default=PYRAMID_INIT_STD, help="std of the initial weights")
    p.add_argument("--steps", type=int, default=PYRAMID_STEPS, help="Langevin steps per scale")
    p.add_argument("--step-size", type=float, default=1.0)
    p.add_argument("--iterations", type=int, default=recipe.iterations, help="updates per scale")
    p.add_argument("--chains", type=int, default=recipe.chains, help="new chains per update")
    p.add_argument("--crop", type=int, default=recipe.crop, help="scales larger than this learn on crops of it")
    p.add_argument("--bank", type=int, default=recipe.bank, help="samples of a scale that start the next one's")
    p.add_argument("--lr", type=float, default=recipe.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--sheets", type=Path, default=None, help="write the samples' contact sheet here")
    p.add_argument("--out", default=str(Path(__file__).with_name("tuning.jsonl")))
    return p.parse_args()


def learned(a):
    """The pyramid learned as the arguments say, its learning, the training image and the seconds taken."""
    image = preprocess(load_image(a.texture), a.size).unsqueeze(0)
    pyramid = PyramidNet(image.shape[1], scale_sides(a.size, a.scales, a.coarsest),
                         [int(w) for w in a.widths.split(",")], a.steps, a.step_size, init_std=a.init, seed=a.seed)
    recipe = PyramidRecipe(a.iterations, a.chains, a.crop, a.bank, a.lr)
    learning, start = PyramidLearning(pyramid, image, recipe, a.seed), time.perf_counter()

    def progress(k, it, gap):
        if it % 50 == 0 or it == a.iterations - 1:
            print(f"  scale {k} ({pyramid.sides[k]} px) update {it}: gap {gap:+.3f}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)

    learning.learn(progress)
    return pyramid, learning, image, time.perf_counter() - start


def main():
    a = parse_args()
    pyramid, learning, image, seconds = learned(a)
    samples = learning.sample(SAMPLES, a.seed + 1000, every_scale=True)
    scales = {side: evaluate(data[0] + learning.mean.view(-1, 1, 1), s)
              for side, data, s in zip(pyramid.sides, learning.data, samples) if side >= SMALLEST_SCORED}
    print("per scale (patch_swd / ps_z):", ", ".join(
        f"{side} px {r['samples']['patch_swd']:.3f} / {r['samples']['ps_z']:.2f} "
        f"(rp {r['random_phase']['ps_z']:.2f})" for side, r in scales.items()))
    result = scales[pyramid.sides[-1]]
    record = {"texture": Path(a.texture).name, "tag": a.tag, "seed": a.seed, "sizes": list(pyramid.sides),
              "settings": {k: v for k, v in vars(a).items() if k not in ("texture", "out", "sheets", "tag")},
              "learn_seconds": round(seconds, 1), "rescues": learning.rescues,
              "eval": {k: result[k] for k in ("samples", "real_crops", "random_phase", "copy")},
              "per_scale": {side: {k: r[k] for k in ("samples", "random_phase")} for side, r in scales.items()}}
    print(json.dumps(record))
    append_results(a.out, "pyramid_prototype", [record])
    if a.sheets:
        save_png(contact_sheet(samples[-1]), a.sheets / f"pyramid_{Path(a.texture).stem}_{a.tag}_s{a.seed}.png")


if __name__ == "__main__":
    main()
