"""Where a learning run is, and what that means: the layer being grown, the iteration in it, the finish,
the learning rate and the relative cost of every iteration. A pure function of the config and two counters,
like a PyTorch learning-rate scheduler.

The layers are grown one at a time, `iterations` updates each, the lower ones refined with each new one
(the paper's way); contrastive divergence and `grow_layers=False` learn all of them at once. The last
layer runs on through the finish: `finish_updates()` more updates, at the final rate.
"""

import math


def cosine_rate(iteration: int, iterations: int, decay_start: float, final: float) -> float:
    """The rate's factor at `iteration` of `iterations`: 1 for the first `decay_start` share of them, then a
    cosine decay to `final` at the last."""
    progress = iteration / max(iterations - 1, 1)
    decay = min(1.0, max(0.0, progress - decay_start) / (1 - decay_start))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * decay))


class Schedule:
    def __init__(self, config):
        self.config = config
        self.layer = 1 if config.grows() else config.layers  # being grown, 1-based
        self.iteration = 0  # iterations done in this layer; the finish continues the last layer's count

    @property
    def finishing(self) -> bool:
        """Whether the run is in its finish: past the last layer's `iterations`."""
        return self.layer >= self.config.layers and self.iteration >= self.config.iterations

    @property
    def done(self) -> bool:
        return self.config.finished(self.layer, self.iteration)

    @property
    def layer_done(self) -> bool:
        """Whether this layer has had its iterations and another layer follows."""
        return self.iteration >= self.config.iterations and self.layer < self.config.layers

    @property
    def iterations_done(self) -> int:
        """Iterations run so far, over every layer."""
        return (self.layer - 1) * self.config.iterations + self.iteration if self.config.grows() else self.iteration

    def next_layer(self) -> None:
        self.layer, self.iteration = self.layer + 1, 0

    def count(self, end_stage: bool = False) -> int:
        """Count the iteration just run; with `end_stage`, end its layer (or the finish) there too. Returns
        the iterations skipped."""
        if not end_stage:
            self.iteration += 1
            return 0
        end = self.config.iterations + (self.config.finish_updates() if self.finishing else 0)
        skipped, self.iteration = end - (self.iteration + 1), end
        return skipped

    def rate_factor(self) -> float:
        """The learning rate as a share of `lr`: 1 for the first `lr_decay_start` of each layer's iterations
        (of all, when the layers learn at once), then a cosine decay to `lr_final`, which the finish keeps.

        Persistent chains and the weights are a stochastic approximation (Younes): with a constant rate the
        weights keep circling the maximum-likelihood point and the chains keep chasing them. The decay lets
        the model settle, so the last chains are samples of the model that is saved."""
        c = self.config
        return cosine_rate(self.iteration, c.iterations, c.lr_decay_start, c.lr_final)

    def costs(self, step_seconds: list) -> list:
        """Relative cost of each iteration of the whole run, in order, from the seconds of one Langevin step
        of the learning chains at each depth (`LearningChains.step_seconds`): an update at depth d runs its
        Langevin steps and a weight gradient of about one step more, plus what every iteration pays at any
        depth (the data, the update, Python), about one step at depth 1. On brick (2-core EPYC) that put
        the layers' iterations within 2 % of their measured times and a finish update 13 % above."""
        c = self.config
        base = step_seconds[0]
        per_depth = [((c.cd_steps or c.langevin_steps) + 1) * seconds + base for seconds in step_seconds]
        finish = [(c.finish_langevin_steps + 1) * step_seconds[-1] + base] * c.finish_updates()
        if not c.grows():
            return [per_depth[c.layers - 1]] * c.iterations + finish
        return [per_depth[depth] for depth in range(c.layers) for _ in range(c.iterations)] + finish

    def state_dict(self) -> dict:
        return {"layer": self.layer, "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.layer, self.iteration = int(state["layer"]), int(state["iteration"])


def where(config, record: dict) -> str:
    """Where a metrics record's iteration is in its run, for a person: 'layer 2/3 it 40/300', 'finish 3/40'."""
    past = record["iteration"] - config.iterations
    if record.get("finishing", past > 0):
        return f"finish {past}/{config.finish_updates()}"
    layer = f"layer {record['layer']}/{config.layers} " if config.grows() else ""
    return f"{layer}it {record['iteration']}/{config.iterations}"
