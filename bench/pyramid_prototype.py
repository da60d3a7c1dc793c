"""A first prototype of a multi-scale generative ConvNet: a coarse-to-fine pyramid of small ReLU nets.

    python bench/pyramid_prototype.py TEXTURE [--size 96] [--scales 3] [--coarsest 48] [--iterations 60] ...

Not the package's model: a screen for the questions a pyramid raises, built from the package's parts. Each
scale is a generative ConvNet of the paper (3x3 stride-1 ReLU layers, the Gaussian reference, B(I) by the
bitmask kernels) learned on the training image resized to its size. Its chains are new at every update and
drawn as the pyramid samples: at the coarsest scale from the spectrum start, at every finer one from the
upsampled (periodic, bicubic) samples of the frozen coarser scales, a bank of which is drawn once when a
scale is done; then `--steps` Langevin steps. The weights move by `learn.update.WeightUpdate` (clipped SGD,
steps halved on reversal, zero-mean first-layer filters). Fresh samples run the same way from new seeds and
are scored with `tritongcn eval`'s figures; one JSON line per run goes to --out, a contact sheet to --sheets.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tritongcn import GenerativeConvNet, LayerSpec, LearnConfig
from tritongcn.evaluate import evaluate
from tritongcn.figures import contact_sheet
from tritongcn.images import load_image, preprocess, save_png
from tritongcn.learn.data import per_position_score
from tritongcn.learn.update import WeightUpdate
from tritongcn.sampler import langevin
from tritongcn.starts import spectrum_kernel, start_chains

from common import append_results

SAMPLES = 4  # fresh samples scored, as `tritongcn learn` draws


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texture")
    p.add_argument("--size", type=int, default=96, help="the finest scale's side: the training image's")
    p.add_argument("--scales", type=int, default=3)
    p.add_argument("--coarsest", type=int, default=48, help="the coarsest scale's side")
    p.add_argument("--widths", default="64,32,32,32", help="each scale's 3x3 layers")
    p.add_argument("--init", type=float, default=0.08, help="std of the initial weights")
    p.add_argument("--iterations", type=int, default=60, help="updates per scale")
    p.add_argument("--steps", type=int, default=30, help="Langevin steps per scale")
    p.add_argument("--chains", type=int, default=4, help="new chains per update")
    p.add_argument("--bank", type=int, default=16, help="samples of a done scale that start the next one's")
    p.add_argument("--step-size", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--sheets", type=Path, default=None, help="write the samples' contact sheet here")
    p.add_argument("--out", default=str(Path(__file__).with_name("tuning.jsonl")))
    return p.parse_args()


def upsample_periodic(x, size: int):
    """A periodic image (a torus) upsampled to `size`: padded circularly, resized bicubically, cropped back."""
    pad = 2
    scale = size / x.shape[-1]
    big = F.interpolate(F.pad(x, (pad,) * 4, mode="circular"), scale_factor=scale, mode="bicubic",
                        align_corners=False)
    offset = round(pad * scale)
    return big[..., offset:offset + size, offset:offset + size]


class Pyramid:
    """The scales' nets, coarse to fine, and how a chain goes through them."""

    def __init__(self, a, image):
        self.a, self.channels = a, image.shape[1]
        self.mean = image.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        self.low, self.high = -self.mean, 255 - self.mean
        ratio = (a.coarsest / a.size) ** (1 / max(a.scales - 1, 1))
        self.sizes = [round(a.size * ratio ** k) for k in reversed(range(a.scales))]
        self.data = [F.interpolate(image, size=(s, s), mode="bicubic", antialias=True) - self.mean
                     for s in self.sizes]
        self.kernel = spectrum_kernel(self.data[0])
        widths = [int(w) for w in a.widths.split(",")]
        self.nets = [GenerativeConvNet(self.channels, [LayerSpec(w, 3, 1, 1) for w in widths], init_std=a.init,
                                       generator=torch.Generator().manual_seed(a.seed * 100 + k))
                     for k in range(a.scales)]

    def run(self, k: int, x, seed: int, first_step: int = 0):
        """`steps` Langevin steps of scale k's net from `x`, on the torus, inside the image range."""
        return langevin(self.nets[k], x, self.a.steps, self.a.step_size, 1.0, seed=seed, first_step=first_step,
                        boundary="periodic", precision="bfloat16", bounds=(self.low.view(-1), self.high.view(-1)))

    def starts(self, k: int, n: int, seed: int, bank=None):
        """n chains of scale k before its steps: the spectrum start, or the coarser bank's samples upsampled."""
        if k == 0:
            return start_chains("spectrum", (n, self.channels, self.sizes[0], self.sizes[0]), sigma=1.0, seed=seed,
                                first_chain=0, total_chains=n, kernel=self.kernel)
        g = torch.Generator().manual_seed(seed)
        picked = bank[torch.randint(len(bank), (n,), generator=g)]  # shifted on the torus, for variety
        return self.upsampled(k, torch.roll(picked, torch.randint(bank.shape[-1], (2,), generator=g).tolist(),
                                            dims=(-2, -1)))

    def upsampled(self, k: int, x):
        """Samples of scale k - 1 at scale k's size, inside the image range."""
        return torch.maximum(torch.minimum(upsample_periodic(x, self.sizes[k]), self.high), self.low)

    def sample(self, n: int, seed: int):
        """n fresh samples, coarse to fine, in [0, 255]: each chain goes through every scale."""
        x = self.starts(0, n, seed)
        for k in range(len(self.nets)):
            x = self.run(k, x if k == 0 else self.upsampled(k, x), seed + 17 * k)
        return (x + self.mean).clamp(0, 255).round()


def learn_scale(pyramid: Pyramid, k: int, bank, seed: int) -> None:
    """Scale k's net learned on new chains at every update, its rate decaying by a cosine in its second half."""
    a, net = pyramid.a, pyramid.nets[k]
    update = WeightUpdate(net, LearnConfig(lr=a.lr))
    for it in range(a.iterations):
        decay = min(1.0, max(0.0, it / max(a.iterations - 1, 1) - 0.5) / 0.5)
        update.set_rate(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * decay)))
        x = pyramid.run(k, pyramid.starts(k, a.chains, seed * 7919 + it, bank), seed, first_step=it * a.steps)
        update.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f_obs = per_position_score(net, pyramid.data[k], "valid")
            f_syn = per_position_score(net, x, "periodic")
        (f_syn - f_obs).backward()
        update.step()


def main():
    a = parse_args()
    image = preprocess(load_image(a.texture), a.size).unsqueeze(0)
    pyramid, bank, start = Pyramid(a, image), None, time.perf_counter()
    for k in range(a.scales):
        learn_scale(pyramid, k, bank, a.seed * 31 + k)
        # the frozen scale's own samples start the next scale's chains
        bank = pyramid.run(k, pyramid.starts(k, a.bank, a.seed * 977 + k, bank), a.seed * 13 + k)
        print(f"scale {k} ({pyramid.sizes[k]} px) learned, {time.perf_counter() - start:.0f} s", flush=True)
    learned = time.perf_counter() - start
    samples = pyramid.sample(SAMPLES, a.seed + 1000)
    result = evaluate(image[0], samples)
    record = {"texture": Path(a.texture).name, "tag": a.tag, "seed": a.seed, "sizes": pyramid.sizes,
              "settings": {k: v for k, v in vars(a).items() if k not in ("texture", "out", "sheets", "tag")},
              "learn_seconds": round(learned, 1), "eval": {k: result[k] for k in ("samples", "real_crops",
                                                                                  "random_phase")}}
    print(json.dumps(record))
    append_results(a.out, "pyramid_prototype", [record])
    if a.sheets:
        save_png(contact_sheet(samples), a.sheets / f"pyramid_{Path(a.texture).stem}_{a.tag}_s{a.seed}.png")


if __name__ == "__main__":
    main()
