"""One learning run with given settings, timed and scored: a row of the recipe-tuning table.

    python bench/tune_recipe.py TEXTURE [--threads N] [--set name=value ...]

Runs `Learner` with LearnConfig defaults overridden by --set, scores the final samples with
`tritongcn.evaluate.evaluate` against the preprocessed texture, prints one line and appends it as JSON to
bench/tuning.jsonl with the machine, versions and date.
"""

import argparse
import datetime
import json
import time
from dataclasses import fields
from pathlib import Path

import torch

import tritongcn
from tritongcn.config import LearnConfig
from tritongcn.evaluate import evaluate, portilla_simoncelli_available
from tritongcn.io import load_image, preprocess


def _parse(assignments):
    types = {f.name: f.type for f in fields(LearnConfig)}
    out = {}
    for item in assignments:
        name, _, value = item.partition("=")
        if name not in types:
            raise SystemExit(f"unknown setting {name!r}: choose from {', '.join(types)}")
        kind = types[name]
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texture")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", default=str(Path(__file__).with_name("tuning.jsonl")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = _parse(args.set)
    config = LearnConfig(**overrides)
    training = preprocess(load_image(args.texture), config.image_size)
    learner = tritongcn.Learner.from_images(training.unsqueeze(0), config)
    start = time.perf_counter()
    for _ in learner.run():
        pass
    seconds = time.perf_counter() - start
    figures = evaluate(training, learner.samples().round(), use_ps=portilla_simoncelli_available())
    record = {"bench": "tune_recipe", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "texture": Path(args.texture).name, "settings": overrides, "threads": args.threads,
              "torch": torch.__version__, "tritongcn": tritongcn.__version__, "seconds": round(seconds, 1),
              "eval": {k: figures[k] for k in ("samples", "real_crops", "random_phase")}}
    print(json.dumps(record))
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
