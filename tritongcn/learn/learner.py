"""The learner: Algorithm 1 of the paper, wired from its parts.

Each iteration advances the learning chains a few Langevin steps under the current weights, then moves the
weights along mean_obs df/dw - mean_syn df/dw: the observed images' score goes up and the synthesized
images' score goes down until the model's samples match the data's statistics. The parts each own one
ingredient of the recipe and their own state_dict: the schedule (`schedule`), the observed data (`data`),
the chains' life cycle (`life`), the weight update (`update`) and the guards (`guards`).
"""

import dataclasses
import time

import torch

from ..chains import ChainBank, sampler_bank
from ..distributed import World, all_reduce_sum
from ..config import check_depth
from ..geometry import OBJECT_LAYERS, TEXTURE_LAYERS
from ..model import GenerativeConvNet
from ..precision import resolve_precision
from .data import ObservedData, checked_images, mean_colour, per_position_score
from .guards import DivergenceGuard, Regrow, RunawayGuard, SilentLayerGuard
from .life import LearningChains
from .schedule import Schedule
from .update import WeightUpdate


def build_model(config, images: torch.Tensor) -> GenerativeConvNet:
    """The net `config.model` names for (M, C, H, W) `images`, its weights drawn from `config.seed`: the
    paper's texture net (with the fourth layer when asked for), or its object net over the images' map."""
    generator = torch.Generator().manual_seed(config.seed)
    channels = images.shape[1]
    if config.model == "object":  # its top filter covers the whole map of the training images
        if images.shape[-1] != images.shape[-2]:
            raise ValueError("the object model learns from square images")
        return GenerativeConvNet.object(channels, images.shape[-1], generator=generator,
                                        layers=min(config.layers, len(OBJECT_LAYERS)))
    return GenerativeConvNet.texture(channels, generator=generator, layers=max(config.layers, len(TEXTURE_LAYERS)))


class Learner:
    """Algorithm 1 with layer growing; `run()` yields one metrics dict per iteration. The state lives on
    the object, so a caller can checkpoint it between iterations (`state_dict`). `observed` are
    mean-subtracted images (`from_images` subtracts their `mean`); `model` is a net of the caller's own,
    else the config's; `known` (M, 1, H, W) bool marks the pixels to learn from (`data.ObservedData`)."""

    def __init__(self, observed: torch.Tensor, config, model: GenerativeConvNet | None = None,
                 mean: torch.Tensor | None = None, world: World | None = None, known: torch.Tensor | None = None):
        config.check()
        self.device = torch.device(config.device)
        # The precision the run actually uses ("auto" resolved here) is what model.pt records.
        config = dataclasses.replace(config, precision=resolve_precision(config.precision, self.device,
                                                                         config.backend))
        images = checked_images(observed, self.device)
        model = model or build_model(config, images)
        check_depth(len(model.layers), config.layers, config.model)
        model.depth = 1 if config.grows() else config.layers
        self.model = model.to(self.device)
        self.model.sigma = config.sigma  # built here or given, the net is the one of the sigma it learns with
        config = config.with_sizes(min(images.shape[-2:]), model.layers[:config.layers])
        config.check_sizes(model.layers[:config.layers])
        self.update = WeightUpdate(self.model, config)
        self.data = ObservedData(images, mean, config, self.model, known)
        self.config = dataclasses.replace(config, shading=self.data.shading)  # what was done, for model.pt
        self.world = world or World()  # under torchrun each process holds a shard of the chains
        self.life = LearningChains(self.model, self.config, self.data, self.world, self.device)
        self.schedule = Schedule(self.config)
        self.silent, self.runaway, self.divergence = SilentLayerGuard(), RunawayGuard(), DivergenceGuard(self.config)
        self.seconds = 0.0  # time spent in iterations so far

    @classmethod
    def from_images(cls, images: torch.Tensor, config, world: World | None = None, known: torch.Tensor | None = None,
                    model: GenerativeConvNet | None = None) -> "Learner":
        """A learner for (M, C, H, W) images in [0, 255]: their mean colour (of the `known` pixels, where
        given) is subtracted, so the chains start at 0 = the mean image and `samples()` adds it back."""
        mean = mean_colour(images, known)
        return cls(images - mean.view(1, -1, 1, 1), config, model=model, mean=mean, world=world, known=known)

    def run(self):
        """Yield one metrics dict per iteration until every layer is grown and the finish is done."""
        while not self.schedule.done:
            if self.schedule.layer_done:
                self.schedule.next_layer()
                self.silent.layer_start = None  # taken again at the new layer's first update
                self.runaway.reset()
            self.model.depth = self.schedule.layer
            yield self.step()

    def step(self) -> dict:
        """One iteration: the chains' Langevin steps, then one weight update (or a guard's action)."""
        start, finishing = time.perf_counter(), self.schedule.finishing
        self.update.set_rate(self.schedule.rate_factor())
        record = self.life.advance(self.schedule)
        lost = self.life.lost()
        f_obs, f_syn, active_obs, active_syn = self._scores()
        action, grad_norm = self.silent.check(active_obs, f_obs, self.update.layer_scale), 0.0
        if action is None:
            self.silent.remember(self.model.active_parameters())
            f_obs, f_syn = self._gradient(f_obs, f_syn, lost)
            action = self.runaway.check(f_obs.item(), self.silent.layer_start)
        if action is None:
            params = self.model.active_parameters()
            self.runaway.keep(self.schedule.iteration + 1, params)
            grad_norm = self.update.step()
            self.divergence.check_weights(params, self._where())
        else:
            record.update(self._apply(action))
        rescued = action is not None and not isinstance(action, Regrow)  # a rescue ends its layer
        skipped = self.schedule.count(end_stage=rescued)
        if rescued:
            record["skipped"] = skipped
        self.seconds += time.perf_counter() - start
        return {"layer": self.schedule.layer, "iteration": self.schedule.iteration, "finishing": finishing,
                "f_obs": f_obs.item(), "f_syn": f_syn.item(), "gap": (f_obs - f_syn).item(), "grad_norm": grad_norm,
                "active_obs": [round(a, 4) for a in active_obs], "active_syn": [round(a, 4) for a in active_syn],
                **record, "seconds": round(self.seconds, 3)}

    def _scores(self) -> tuple:
        """(f_obs, f_syn, active shares of the data, of the chains) from one bottom-up pass each. The
        convolutions run in the sampler's precision: bfloat16 halves this pass on CPUs that multiply it
        natively, and its rounding is small against the chains' noise; the scores are summed in float32."""
        self.update.zero_grad()
        active_obs, active_syn = [], []
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bfloat16"):
            f_obs = self.data.score(active_obs)
            f_syn = per_position_score(self.model, self.life.x, self.config.chain_boundary(), active_syn)
        return f_obs, f_syn, active_obs, active_syn

    def _gradient(self, f_obs, f_syn, lost) -> tuple:
        """Gradient ascent on the log-likelihood = descent on f_syn - f_obs, summed over the processes:
        each weighs its shard's f_syn by its share and f_obs by 1 / processes. The scores, all-reduced."""
        (self.life.share * f_syn - f_obs / self.world.size).backward()
        scores = torch.stack([self.life.share * f_syn.detach(), f_obs.detach() / self.world.size, lost])
        all_reduce_sum([p.grad for p in self.model.active_parameters()] + [scores], self.world)
        self.divergence.check_chains(int(scores[2]), self.life.bank.total_chains, self._where())
        self.divergence.check_scores(scores[1], scores[0], self._where())
        return scores[1], scores[0]

    @torch.no_grad()
    def _apply(self, action) -> dict:
        """Put a guard's weights back and do the rest of its action; what the metrics line says of it."""
        for p, weights in zip(self.model.active_parameters(), action.weights):
            p.copy_(weights)
        if isinstance(action, Regrow):
            self.update.layer_scale[action.index] *= 0.5
            return {"regrown": action.index + 1, "step_scale": self.update.layer_scale[action.index]}
        self.life.restart_all()  # they followed the weights away
        self.runaway.reset()
        return {"runaway": self.schedule.layer, "from_iteration": action.back_to, "growth": round(action.growth, 2)}

    def _where(self) -> str:
        return f"at layer {self.schedule.layer}, iteration {self.schedule.iteration + 1}"

    def state_dict(self) -> dict:
        """Everything to continue exactly, one flat dict: each part's own entries."""
        return {"config": self.config.to_dict(), "model_config": self.model.config(), "model": self.model.state_dict(),
                **self.schedule.state_dict(), **self.life.state_dict(), **self.update.state_dict(),
                **self.data.state_dict(), **self.silent.state_dict(), **self.runaway.state_dict(),
                "seconds": self.seconds}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`, so that the rest of the run is the one an uninterrupted run would
        have had (the Langevin noise is addressed by chain and step, so no random generator state is needed).
        Under torchrun each process takes its shard of the saved chains."""
        self.model.depth = int(state["layer"])
        self.model.load_state_dict(state["model"])
        self.schedule.load_state_dict(state)
        self.update.load_state_dict(state, self.device)
        self.life.load_state_dict(state)
        self.silent.load_state_dict(state)
        self.runaway.load_state_dict(state, self.device)
        self.seconds = float(state["seconds"])

    @property
    def mean(self) -> torch.Tensor:
        return self.data.mean

    def samples(self) -> torch.Tensor:
        """The learning chains as images in [0, 255] on the CPU, (N, C, H, W)."""
        return (self.life.x.detach().cpu() + self.mean.view(1, -1, 1, 1)).clamp(0, 255)

    def fresh_bank(self, chains: int, seed: int = 0) -> ChainBank:
        """`chains` new chains of the learned model, as `tritongcn sample` draws them by default: from the
        sampler's start at the samples' size, none of them a learning chain."""
        return sampler_bank(self.model, self.config, self.data.start_kernel, chains, seed=seed, device=self.device,
                            mean=self.mean)
