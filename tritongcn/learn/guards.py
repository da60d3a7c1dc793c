"""What watches learning for the ways it fails, each returning what to do: a silent layer is grown again
(`Regrow`), a runaway goes back to weights from before it (`Rescue`), a divergence stops the run
(FloatingPointError), a layer that keeps going silent too (`LearningFailed`). The learner applies them."""

from dataclasses import dataclass

import torch

# A layer with fewer active units than this share on the observed images is silent: learning through it
# has stopped. A healthy layer keeps a few percent at least.
SILENT_SHARE = 1e-4
# A layer regrown this many times has gone silent at every step size tried (down to 1/16 of the configured
# one): the data give it nothing to learn, and the run stops instead of trying forever.
MAX_REGROWTHS = 4


class LearningFailed(RuntimeError):
    """Learning cannot go on; the message says why and what to change."""


@dataclass
class Regrow:
    """Start the current layer again from its first `weights`, with layer `index`'s steps halved."""

    index: int
    weights: list


@dataclass
class Rescue:
    """Go back to the kept `weights` of iteration `back_to`, restart every chain and end the layer there."""

    weights: list
    back_to: int
    growth: float


class SilentLayerGuard:
    """A layer whose units are all off on the data makes f constant: no gradient reaches it or the layers
    below, and learning stops for good (the samples become the reference's noise). It happens when a
    clipped step, larger than a young layer's weights, moves all of them the same way: the layer swings
    from all on to all off in two or three iterations. The cure is to start the layer again from the weights
    it started with, at half the step; the iteration counter runs on, so the run keeps its length."""

    def __init__(self):
        self.layer_start = None  # the active weights as the current layer started

    def remember(self, params) -> None:
        """Keep the weights the current layer starts from (at its first update)."""
        if self.layer_start is None:
            self.layer_start = [p.detach().clone() for p in params]

    def check(self, active_obs: list, f_obs: torch.Tensor, layer_scale: list) -> Regrow | None:
        """A `Regrow` if a layer is silent on the data; a layer is silent when its units are off, not when
        overflowing weights make every response NaN: that is a divergence, judged later."""
        silent = [i for i, share in enumerate(active_obs) if share < SILENT_SHARE]
        if not silent or self.layer_start is None or not torch.isfinite(f_obs):
            return None
        index = silent[0]
        if layer_scale[index] <= 0.5 ** MAX_REGROWTHS:
            raise LearningFailed(
                f"layer {index + 1} went silent on the training images {MAX_REGROWTHS + 1} times, down to "
                f"{layer_scale[index]:g} of the step: nothing in the images keeps its units on (an image "
                "without texture?); try fewer --layers or another image")
        return Regrow(index, self.layer_start)

    def state_dict(self) -> dict:
        return {"layer_start": self.layer_start}

    def load_state_dict(self, state: dict) -> None:
        self.layer_start = state.get("layer_start")


class RunawayGuard:
    """Watches the data's score per position, layer by layer, for a runaway: the weights growing without
    bound while the chains fall behind them, so the data's score climbs on to 1e6 and beyond (seen on
    photos learned around a hole and on the bundled wood at its own 152 px). Two signs, past the first
    `SETTLE` iterations since a new layer or a rescue: a jump to `GROWTH` times the median of the last
    `WINDOW` iterations, or a slower climb to `LAYER_GROWTH` times the early level (the median of the
    `WINDOW` iterations after `SETTLE`). Healthy runs of every recipe measured stayed below 1.23 and 2.2
    times those. It keeps the active weights every `EVERY` iterations, to go back to from before the climb.
    Halving the step and learning on did not help (the runs ran away again within 30 to 60 iterations), so
    a rescue ends the layer: the next one, or for the last the finish, follows; a runaway in the finish
    ends the run."""

    WINDOW, GROWTH, LAYER_GROWTH, SETTLE, EVERY, KEPT = 20, 2.0, 3.0, 30, 10, 3

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """A new layer, or a rescue: the history starts again."""
        self.seen, self.recent, self.early, self.snapshots = 0, [], [], []  # (iteration, weights) oldest first

    @staticmethod
    def _median(values) -> float:
        return sorted(values)[len(values) // 2] if values else 0.0

    def ran_away(self, f_obs: float) -> float:
        """How many times the level it left the data's score has climbed to, if it ran away at this
        iteration; 0.0 if it did not."""
        window = self.recent[-self.WINDOW:]
        level, early = self._median(window), self._median(self.early)
        self.recent, self.seen = window + [f_obs], self.seen + 1
        if self.SETTLE < self.seen <= self.SETTLE + self.WINDOW:
            self.early.append(f_obs)
        if self.seen <= self.SETTLE:
            return 0.0
        if len(window) == self.WINDOW and level > 0 and f_obs > self.GROWTH * level:
            return f_obs / level
        if len(self.early) == self.WINDOW and early > 0 and f_obs > self.LAYER_GROWTH * early:
            return f_obs / early
        return 0.0

    def check(self, f_obs: float, layer_start: list) -> Rescue | None:
        """A `Rescue` to the oldest weights kept (the layer's first, `layer_start`, if none) if it ran away."""
        growth = self.ran_away(f_obs)
        if not growth:
            return None
        back_to, weights = self.snapshots[0] if self.snapshots else (0, layer_start)
        return Rescue(weights, back_to, growth)

    def keep(self, iteration: int, params) -> None:
        """Keep the weights every EVERY iterations (the KEPT latest)."""
        if iteration % self.EVERY == 0:
            self.snapshots = (self.snapshots + [(iteration, [p.detach().clone() for p in params])])[-self.KEPT:]

    def state_dict(self) -> dict:
        return {"guard": {"seen": self.seen, "recent": list(self.recent), "early": list(self.early),
                          "snapshots": [(i, [p.cpu() for p in ps]) for i, ps in self.snapshots]}}

    def load_state_dict(self, state: dict, device) -> None:
        guard = state.get("guard")
        if guard is None:
            return
        self.recent, self.early = list(guard["recent"]), list(guard["early"])
        self.seen = int(guard.get("seen", len(self.recent)))
        self.snapshots = [(i, [p.to(device) for p in ps]) for i, ps in guard["snapshots"]]


class DivergenceGuard:
    """Chains, scores or weights that left the float range: the run stops with what to lower."""

    def __init__(self, config):
        self.config = config

    def _advice(self, first: str, second: str) -> str:
        values = {"--lr": self.config.lr, "--step-size": self.config.step_size}
        return f"lower {first} (now {values[first]:g}) or {second} (now {values[second]:g})"

    def check_chains(self, lost: int, total: int, where: str) -> None:
        if lost:
            raise FloatingPointError(f"the chains diverged {where}: {lost} of {total} hold NaN or Inf; "
                                     + self._advice("--step-size", "--lr"))

    def check_scores(self, f_obs: torch.Tensor, f_syn: torch.Tensor, where: str) -> None:
        if not (torch.isfinite(f_obs) and torch.isfinite(f_syn)):
            raise FloatingPointError(f"learning diverged {where}: the scores are no longer finite; "
                                     + self._advice("--lr", "--step-size"))

    def check_weights(self, params, where: str) -> None:
        if not all(torch.isfinite(p).all() for p in params):
            raise FloatingPointError(f"the weights diverged {where}: an update left NaN or Inf in them; lower "
                                     f"--lr (now {self.config.lr:g})")
