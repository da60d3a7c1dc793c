"""Learning a pyramid of generative ConvNets (`pyramid.PyramidNet`), coarse to fine.

Scale k learns by maximum likelihood on the training image resized to its side, with the coarser scales
frozen. Its chains are new at every update and drawn as the pyramid samples (a model learned on short
chains from a given start is that start plus those steps: Nijkamp et al., 2019): at the coarsest scale from
random-phase noise with the image's spectrum, at every finer one from a bank of samples of the frozen
coarser scale, upsampled and shifted on the torus. A finer scale larger than the recipe's `crop` learns on crops:
its chains are crops of that side and its data a random crop of twice that side at every update (its net
sees 9 px, so a crop holds every kind of window it sees; only the windows inside a crop count). A chain's
crop keeps a frame as wide as the net's reach (8 px) at its upsampled start, and only the pixels inside it
move: they then sample given their surroundings, every window over them complete, where free pixels at
the crop's edge would be seen by few windows and fall to the reference's mean. The chains' score counts the
windows centred on the pixels that moved. When a scale is learned, its own samples from the bank below
become the next scale's bank.

The update is the package's (`learn.update.WeightUpdate`: clipped SGD, steps halved on reversal, zero-mean
first-layer filters), its rate at the full value for half the updates, then falling by a cosine to a tenth.
The paper's learner's runaway guard (`learn.guards.RunawayGuard`) watches each scale: when the data's score
climbs away from the chains (a net's f grows as a power of its weights' scale, so it can run away late in a
long run: bench/TUNING.md), the scale goes back to weights kept before the climb and ends there.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import LearnConfig
from ..evaluate import random_crops
from ..starts import spectrum_kernel, start_chains
from .data import per_position_score
from .guards import RunawayGuard
from .schedule import cosine_rate
from .update import WeightUpdate


@dataclass(frozen=True)
class PyramidRecipe:
    # Many short updates learn more than fewer long ones for the same time (bench/TUNING.md): 400 updates
    # per scale, of one chain (as good as four, in a third of the time), with the net's 15 Langevin steps.
    iterations: int = 400  # updates per scale
    chains: int = 1  # new chains per update
    crop: int = 64  # scales larger than this learn on crops of this side
    bank: int = 16  # samples of a learned scale that start the next scale's chains
    lr: float = 0.01
    precision: str = "bfloat16"  # of B(I) and of the scores' convolutions


def rate_factor(update: int, updates: int) -> float:
    """The rate's factor at `update` of `updates`: 1 for the first half, then a cosine down to 0.1."""
    return cosine_rate(update, updates, decay_start=0.5, final=0.1)


class PyramidLearning:
    """The training image at every scale of `pyramid`, and the chains each scale learns from."""

    def __init__(self, pyramid, image: torch.Tensor, recipe: PyramidRecipe, seed: int = 0):
        """`image`: the (1, C, H, W) training image in [0, 255], H = W = the pyramid's finest side."""
        self.pyramid, self.recipe, self.seed = pyramid, recipe, seed
        self.mean = image.mean(dim=(0, 2, 3))
        centred = image - self.mean.view(1, -1, 1, 1)
        self.data = [F.interpolate(centred, size=(s, s), mode="bicubic", antialias=True) for s in pyramid.sides]
        self.bounds = (-self.mean, 255 - self.mean)
        self.kernel = spectrum_kernel(self.data[0])
        self.rescues = []  # (scale, update, the update it went back to, how far the data's score climbed)

    def spectrum_start(self, n: int, side: int, seed: int) -> torch.Tensor:
        """n coarsest-scale chains of `side` px: random-phase noise with the image's spectrum at that scale."""
        return start_chains("spectrum", (n, self.data[0].shape[1], side, side), sigma=self.pyramid.sigma,
                            seed=seed, first_chain=0, total_chains=n, kernel=self.kernel)

    def starts(self, k: int, n: int, seed: int, bank=None, crop: int = 0) -> torch.Tensor:
        """n chains of scale k before its steps: the spectrum start, or samples of the coarser `bank`
        picked at random, shifted at random on the torus, upsampled and cut to `crop` (if given)."""
        side = self.pyramid.sides[k]
        if k == 0:
            return self.spectrum_start(n, side, seed)
        g = torch.Generator().manual_seed(seed)
        picked = bank[torch.randint(len(bank), (n,), generator=g)]
        shifts = torch.randint(bank.shape[-1], (2,), generator=g).tolist()
        x = self.pyramid.upsampled(torch.roll(picked, shifts, dims=(-2, -1)), side, self.bounds)
        return x[..., :crop, :crop] if crop else x

    def chains(self, k: int, n: int, seed: int, bank=None, crop: int = 0, first_step: int = 0) -> torch.Tensor:
        """Scale k's chains after its Langevin steps from `starts`; on a crop, its frame held."""
        x, known = self.starts(k, n, seed, bank, crop), None
        if crop:
            frame = torch.ones(1, 1, crop, crop, dtype=torch.bool)
            reach = self.pyramid.reach()
            frame[..., reach:crop - reach, reach:crop - reach] = False
            known = (x.clone(), frame)
        return self.pyramid.run(k, x, seed, first_step=first_step, boundary="valid" if crop else "periodic",
                                bounds=self.bounds, known=known, precision=self.recipe.precision)

    def moved_windows(self, x: torch.Tensor) -> torch.Tensor:
        """Chains on a crop cut to the region whose windows (scored without padding) are centred on the
        pixels that moved, inside the held frame."""
        half = self.pyramid.reach() // 2
        return x[..., half:x.shape[-2] - half, half:x.shape[-1] - half]

    def learn_scale(self, k: int, bank, progress=None) -> list:
        """Scale k's net learned from its data and new chains at every update; the gaps f(chains) - f(data),
        per position, one per update. `progress(k, update, gap)` is told after each."""
        recipe, net = self.recipe, self.pyramid.nets[k]
        update = WeightUpdate(net, LearnConfig(lr=recipe.lr))
        # the coarsest scale learns whole: its chains start from noise, with no coarser sample to hold a frame at
        crop = recipe.crop if k and 0 < recipe.crop < self.pyramid.sides[k] else 0
        seed, gaps = self.seed * 31 + k, []
        crops = torch.Generator().manual_seed(seed)
        guard, first_weights = RunawayGuard(), [p.detach().clone() for p in net.parameters()]
        for it in range(recipe.iterations):
            update.set_rate(rate_factor(it, recipe.iterations))
            x = self.chains(k, recipe.chains, seed * 7919 + it, bank, crop, first_step=it * self.pyramid.steps)
            if crop:
                x = self.moved_windows(x)
            data = random_crops(self.data[k], min(2 * crop, self.pyramid.sides[k]), 1, crops) if crop else self.data[k]
            update.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.precision == "bfloat16"):
                f_obs = per_position_score(net, data, "valid")
                f_syn = per_position_score(net, x, "valid" if crop else "periodic")
            gap = f_syn - f_obs
            gap.backward()
            gaps.append(gap.item())
            rescue = guard.check(f_obs.item(), first_weights)
            if rescue:  # as in the paper's learner, a rescue ends the scale
                with torch.no_grad():
                    for p, kept in zip(net.parameters(), rescue.weights):
                        p.copy_(kept)
                self.rescues.append((k, it, rescue.back_to, rescue.growth))
                break
            guard.keep(it + 1, list(net.parameters()))
            update.step()
            if progress:
                progress(k, it, gaps[-1])
        return gaps

    def learn(self, progress=None) -> list:
        """Every scale, coarse to fine; the gaps of each."""
        bank, gaps = None, []
        for k in range(len(self.pyramid.nets)):
            gaps.append(self.learn_scale(k, bank, progress))
            # the learned scale's own samples, from the bank below, start the next scale's chains
            bank = self.chains(k, self.recipe.bank, self.seed * 977 + k, bank)
        return gaps

    def sample(self, n: int, seed: int, side: int | None = None, every_scale: bool = False):
        """n fresh samples of `side` px (default: the training image's), in [0, 255], coarse to fine."""
        side = side or self.pyramid.sides[-1]
        start = self.spectrum_start(n, self.pyramid.sides_for(side)[0], seed)
        out = self.pyramid.sample(start, side, seed, bounds=self.bounds, precision=self.recipe.precision,
                                  every_scale=every_scale)
        pixels = (lambda x: (x + self.mean.view(1, -1, 1, 1)).clamp(0, 255).round())
        return [pixels(x) for x in out] if every_scale else pixels(out)
