"""Where one learning iteration's time goes, for a recipe and each of its depths.

    python bench/profile_learn.py TEXTURE [--iterations 10] [--recipe default|release] [--set name=value ...]

Builds a `Learner` for the recipe (the LearnConfig defaults, or the release's settings of
`tritongcn.config.RELEASE` at the training image's chain size), and for each depth it runs (the top one
only when the layers learn at once) times, per iteration, medians over `--iterations`:
- Langevin: the L steps of every chain (`ChainBank.advance`);
- weight gradient: the scores of the data and the chains and their backward pass, in the precision the
  learner runs it (`Learner.step` does the same), and in float32 (how it ran before bfloat16 autocast);
- update: `WeightUpdate.step`, the clip, the step scales, the optimiser step and the filter projection;
- the whole `Learner.step`, and what is left of it (restarts, metrics, Python).
Prints a table and appends JSON lines to bench/results.jsonl.
"""

import argparse
from pathlib import Path

import torch

from tritongcn.config import RELEASE, LearnConfig, image_sample_size
from tritongcn.images import load_image, preprocess
from tritongcn.learn import Learner, per_position_score
from tritongcn.profile import median_seconds

from common import RESULTS, append_results, learn_settings


def _median_ms(fn, repeats):
    """Median milliseconds of `fn` after a warm-up call (first-call allocations, oneDNN primitives)."""
    return 1e3 * median_seconds(fn, torch.device("cpu"), repeats)


def profile(learner, repeats):
    c = learner.config

    def weight_gradient(bfloat16=c.precision == "bfloat16"):
        learner.update.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            f_obs = learner.data.score()
            f_syn = per_position_score(learner.model, learner.life.x, c.chain_boundary())
        (f_syn - f_obs).backward()

    row = {"langevin_ms": _median_ms(lambda: learner.life.bank.advance(c.langevin_steps), repeats),
           "weight_gradient_ms": _median_ms(weight_gradient, repeats),
           "weight_gradient_float32_ms": _median_ms(lambda: weight_gradient(False), repeats),
           "update_ms": _median_ms(learner.update.step, repeats),
           "iteration_ms": _median_ms(learner.step, repeats)}
    row["rest_ms"] = row["iteration_ms"] - row["langevin_ms"] - row["weight_gradient_ms"] - row["update_ms"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texture")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--recipe", choices=["default", "release"], default="default")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    settings = {}
    if args.recipe == "release":  # as the release ran it here before: chains the training image's size
        settings = dict(RELEASE, chain_size=image_sample_size(224, 3))
    settings.update(learn_settings(args.set))
    config = LearnConfig(**settings)
    training = preprocess(load_image(args.texture), config.image_size).unsqueeze(0)
    depths = range(1, config.layers + 1) if config.grows() else [config.layers]
    print(f"{'recipe':<8}{'depth':>6}{'Langevin':>10}{'w. grad':>9}{'(fp32)':>8}{'update':>8}{'rest':>7}"
          f"{'iteration':>11}  ms")
    for depth in depths:
        learner = Learner.from_images(training, config)
        learner.schedule.layer = learner.model.depth = depth
        row = profile(learner, args.iterations)
        print(f"{args.recipe:<8}{depth:>6}{row['langevin_ms']:>10.0f}{row['weight_gradient_ms']:>9.0f}"
              f"{row['weight_gradient_float32_ms']:>8.0f}{row['update_ms']:>8.0f}{row['rest_ms']:>7.0f}"
              f"{row['iteration_ms']:>11.0f}")
        append_results(args.out, "profile_learn", [{
                  "texture": Path(args.texture).name, "recipe": args.recipe, "settings": settings, "depth": depth,
                  "precision": learner.config.precision, "chains": config.chains,
                  "chain_size": learner.config.chain_size, **{k: round(v, 1) for k, v in row.items()}}])


if __name__ == "__main__":
    main()
