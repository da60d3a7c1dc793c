"""One learning run with given settings, timed and scored: a row of the recipe-tuning table.

    python bench/tune_recipe.py TEXTURE [--threads N] [--set name=value ...] [--images DIR]
    python bench/tune_recipe.py TEXTURE --set device=cuda ...      # on a GPU (the record names it)
    python bench/tune_recipe.py TEXTURE --layer 2=100,3,1,2        # another net: layer 3 with 100 filters

Runs `Learner` with LearnConfig defaults overridden by --set, then scores against the preprocessed
texture (`tritongcn.evaluate`): the learning chains, four new chains drawn as `tritongcn sample` draws them
(the model's start, its `sample_steps`), and the same new chains run four times as long. Prints one line
and appends it as JSON to bench/tuning.jsonl with the machine, versions and date; with --images, writes
the three sets there as contact sheets and as one tensor file, the learner's metrics and its model file.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import tritongcn
from tritongcn.config import LearnConfig
from tritongcn.geometry import DEEPER_TEXTURE_LAYERS, TEXTURE_LAYERS, LayerSpec
from tritongcn.model import GenerativeConvNet
from tritongcn.evaluate import evaluate, portilla_simoncelli_available
from tritongcn.figures import contact_sheet
from tritongcn.images import load_image, preprocess, save_png

from common import append_results, learn_settings

FRESH_CHAINS = 4  # as many as `tritongcn learn` draws
LONGER = 4  # the new chains are scored again after this many times their default steps


def screened_net(replacements, channels: int, config: LearnConfig) -> GenerativeConvNet:
    """The texture net with layers replaced (`--layer I=OUT,KERNEL,STRIDE,PAD`, I from 0), seeded as
    `Learner` seeds the paper's (and grown as it grows it): for screening other nets without changing the
    package's."""
    if config.model != "texture":
        raise SystemExit("--layer replaces layers of the texture net; the object net has none to replace")
    specs = list(DEEPER_TEXTURE_LAYERS[:max(config.layers, len(TEXTURE_LAYERS))])
    for item in replacements:
        index, _, values = item.partition("=")
        specs[int(index)] = LayerSpec(*(int(v) for v in values.split(",")))
    return GenerativeConvNet(channels, specs, generator=torch.Generator().manual_seed(config.seed),
                             sigma=config.sigma)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texture")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="NAME=VALUE")
    parser.add_argument("--layer", action="append", default=[], metavar="I=OUT,KERNEL,STRIDE,PAD",
                        help="replace layer I (from 0) of the texture net: 2=100,3,1,2 gives layer 3 100 filters")
    parser.add_argument("--images", type=Path, default=None, help="write contact sheets of the chains here")
    parser.add_argument("--out", default=str(Path(__file__).with_name("tuning.jsonl")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = learn_settings(args.set)
    config = LearnConfig(**overrides)
    training = preprocess(load_image(args.texture), config.image_size)
    net = screened_net(args.layer, training.shape[0], config) if args.layer else None
    learner = tritongcn.Learner.from_images(training.unsqueeze(0), config, model=net)
    start = time.perf_counter()
    records = list(learner.run())
    seconds = time.perf_counter() - start
    mean = learner.mean.view(1, -1, 1, 1)
    bank = learner.fresh_bank(FRESH_CHAINS)
    start = time.perf_counter()
    bank.advance(learner.config.sample_steps)
    sample_seconds = time.perf_counter() - start
    fresh = (bank.x.cpu() + mean).clamp(0, 255)
    bank.advance((LONGER - 1) * learner.config.sample_steps)
    longer = (bank.x.cpu() + mean).clamp(0, 255)
    sets = {"learning_chains": learner.samples(), "samples": fresh, f"samples_x{LONGER}": longer}
    figures = evaluate(training, fresh.round(), use_ps=portilla_simoncelli_available(),
                       others={name: images.round() for name, images in sets.items() if name != "samples"})
    name = Path(args.texture).stem
    if args.images:
        args.images.mkdir(parents=True, exist_ok=True)
        tag = "_".join([name] + [f"{k}={v}" for k, v in overrides.items()] + [f"layer{v}" for v in args.layer])
        for what, images in sets.items():
            save_png(contact_sheet(images), args.images / f"{tag}_{what}.png")
        torch.save({k: v.round().to(torch.uint8) for k, v in sets.items()}, args.images / f"{tag}.pt")
        (args.images / f"{tag}.metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        from tritongcn.checkpoints import save_checkpoint
        save_checkpoint(learner.state_dict(), args.images / f"{tag}.model.pt")
    record = {"texture": Path(args.texture).name, "settings": overrides, "threads": args.threads,
              **({"layers": [dataclasses.asdict(spec) for spec in net.layers]} if net else {}),
              "seconds": round(seconds, 1), "sample_seconds": round(sample_seconds, 1),
              "eval": {k: figures[k] for k in (*sets, "real_crops", "random_phase")}}
    print(json.dumps(record))
    append_results(args.out, "tune_recipe", [record], device=learner.device)  # on a GPU, its name


if __name__ == "__main__":
    main()
