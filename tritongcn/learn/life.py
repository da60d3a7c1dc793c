"""The learning chains and their life cycle.

The chains are what the model is judged by, so they must be what its own sampler makes. Chains that persist
for the whole run follow a moving model and hide that its equilibrium is not the data (Nijkamp et al., AAAI
2020): fresh chains of such a model drift elsewhere. So each learning chain lives `lifetime` iterations and
starts again from the sampler's start, staggered so that at every iteration the model sees chains of every
age from newborn to as old as a new sample, plus `persistent_chains` that never restart and show where long
runs go. In the finish every chain is a new sample drawn as `tritongcn sample` draws them: it restarts every
`sample_steps` Langevin steps, taken `finish_langevin_steps` per update at the model's temperature.
Contrastive divergence instead restarts one chain per training image from that image at every iteration.
"""

import time

import torch

from ..autoencoder import reconstruct, reconstruction_error
from ..chains import ChainBank
from ..distributed import all_reduce_sum


class LearningChains:
    """This process's shard of the learning chains (a `ChainBank`), mean-subtracted like the data."""

    def __init__(self, model, config, data, world, device):
        self.model, self.config, self.world = model, config, world
        total = len(data.images) if config.cd_steps else config.chains  # CD: one chain per image
        first, count = world.shard(total)
        if count < 1:
            what = "training images (one chain each with cd_steps)" if config.cd_steps else "chains"
            raise ValueError(f"{total} {what} cannot be split between {world.size} processes")
        self.share = count / total  # this shard's weight in the mean over all chains
        self.restart_images = data.images[first:first + count] if config.cd_steps else None
        # Chains the size of the data for CD and for the object model's top filter, else their own.
        same_as_data = config.cd_steps or model.top == "fc"
        shape = data.images.shape[1:] if same_as_data else (data.images.shape[1], config.chain_size, config.chain_size)
        self.bank = ChainBank(model, count, shape, boundary=config.chain_boundary(), step_size=config.step_size,
                              sigma=config.sigma, seed=config.seed, backend=config.backend, device=device,
                              first_chain=first, total_chains=total, precision=config.precision,
                              images=self.restart_images, init=config.start, start_kernel=data.start_kernel,
                              mean=data.mean if config.bounded else None)

    @property
    def x(self) -> torch.Tensor:
        """The chains (N, C, H, W), mean-subtracted, on the learner's device."""
        return self.bank.x

    def __len__(self) -> int:
        return len(self.bank)

    @property
    def steps_done(self) -> int:
        return int(self.bank.steps[0])

    def advance(self, schedule) -> dict:
        """Restart the chains whose life ends now (CD: all, from the data) and run this iteration's
        Langevin steps; what the metrics line says of it (CD: how well the weights auto-encode the data)."""
        c, record = self.config, {}
        if c.cd_steps:
            record["reconstruction_error"] = self._reconstruction_error()
            self.bank.x.copy_(self.restart_images)  # the step counters run on, so no noise is drawn twice
        else:
            self.bank.restart(self.due(schedule))
        # Tempered learning chains explore; the finish's are new samples, drawn as `sample` draws them.
        finishing = schedule.finishing
        self.bank.advance(c.cd_steps or (c.finish_langevin_steps if finishing else c.langevin_steps),
                          temperature=1.0 if finishing or c.cd_steps else c.temperature)
        return record

    def _reconstruction_error(self) -> float:
        """The mean over every process's images of ||I - sigma^2 B(I)|| / ||I|| (Proposition 3: CD lowers it)."""
        images = self.restart_images
        error = reconstruction_error(images, reconstruct(self.model, images, self.config.sigma,
                                                         self.config.data_boundary()))
        totals = torch.stack([error.nansum(), torch.tensor(float(len(error)), device=error.device)])
        all_reduce_sum([totals], self.world)
        return round((totals[0] / totals[1]).item(), 5)

    def due(self, schedule) -> list:
        """Indices (in this shard) of the chains whose life ends now: chain g of the whole bank, past the
        persistent ones, restarts whenever iteration + its phase is a multiple of its lifetime, the phases
        spread evenly so the chains' ages are too."""
        lifetime, persistent = self._life_cycle(schedule.finishing)
        done = schedule.iterations_done
        mortal = self.bank.total_chains - persistent
        if not lifetime or mortal < 1 or done == 0:
            return []
        first = self.bank.first_chain
        due = [g for g in range(max(first, persistent), first + len(self.bank))
               if (done + (g - persistent) * lifetime // mortal) % lifetime == 0]
        return [g - first for g in due]

    def _life_cycle(self, finishing: bool) -> tuple:
        """(lifetime in iterations, chains that never restart): the config's, and in the finish every chain
        a new sample that lives as many Langevin steps as `sample` runs."""
        c = self.config
        if finishing:
            return max(1, c.sample_steps // c.finish_langevin_steps), 0
        return c.lifetime, c.persistent_chains

    def step_seconds(self, layers: int) -> list:
        """Seconds of one Langevin step's gradient B(I) of these chains at each depth 1 .. `layers`, the
        second of two timings (the first pays the warm-up); the chains and the model's depth are left as
        they were. What the progress estimate weighs the run's iterations by (`Schedule.costs`)."""
        bank, seconds = self.bank, []
        for depth in range(1, layers + 1):
            with self.model.at_depth(depth):
                for _ in range(2):
                    start = time.perf_counter()
                    self.model.grad_input(bank.x, backend=bank.backend, boundary=bank.boundary,
                                          precision=bank.precision).sum().item()  # .item() waits for a GPU
                    took = time.perf_counter() - start
            seconds.append(took)
        return seconds

    def lost(self) -> torch.Tensor:
        """How many chains left the float range, as a float tensor (judged after the all-reduce, so that
        every process stops at the same iteration)."""
        return (~torch.isfinite(self.bank.x.flatten(1)).all(dim=1)).sum().float()

    def restart_all(self) -> None:
        self.bank.restart(range(len(self.bank)))

    def state_dict(self) -> dict:
        return {"chains": self.bank.x.detach().cpu(), "langevin_steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        """This shard of the saved chains of the whole bank."""
        chains, first = state["chains"], self.bank.first_chain
        if len(chains) != self.bank.total_chains or tuple(chains.shape[1:]) != tuple(self.bank.x.shape[1:]):
            raise ValueError(f"saved chains of shape {tuple(chains.shape)} do not fit this run's "
                             f"{self.bank.total_chains} chains of {tuple(self.bank.x.shape[1:])}")
        self.bank.x.copy_(chains[first:first + len(self.bank)])
        self.bank.steps.fill_(int(state["langevin_steps_done"]))
