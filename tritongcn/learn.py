"""Learning the generative ConvNet by maximum likelihood (Algorithm 1 of the paper).

Each iteration advances persistent synthesized chains by L Langevin steps under the current weights, then
moves the weights along mean_obs df/dw - mean_syn df/dw: the observed images' score goes up and the
synthesized images' score goes down until the model's samples match the data's statistics.
"""

import math
import time
from dataclasses import asdict, dataclass, fields

import torch

from .model import GenerativeConvNet
from .sampler import langevin


@dataclass
class LearnConfig:
    image_size: int = 224  # training image: shorter side resized to this, then a centred square crop
    sample_size: int = 112  # side of the synthesized chains (the model is convolutional: any size works)
    chains: int = 4  # persistent Langevin chains
    langevin_steps: int = 10  # L, Langevin steps per weight update (release: 10)
    step_size: float = 0.3  # Langevin eps on the [0, 255] pixel scale (release: 0.3)
    sigma: float = 1.0  # reference Gaussian's standard deviation (release: 1)
    iterations: int = 300  # weight updates per grown layer
    layers: int = 3  # layers of the texture net grown one at a time
    lr: float = 0.001  # learning rate (release SGD: 0.0008 to 0.001); biases use twice this
    optimizer: str = "sgd"  # "sgd": the release's plain SGD; "adam": Adam with beta1 0.5 (the group's later code)
    periodic: bool = False  # chains on the torus and data by their interior (see GenerativeConvNet.boundary)
    weight_decay: float = 1e-4  # release: 1e-4
    clip: float = 20.0  # rescale each parameter's gradient so its largest entry is at most this
    seed: int = 0  # weights' initialisation and Langevin noise
    device: str = "cpu"
    backend: str = "auto"  # kernel backend for the sampler (see tritongcn.kernels)

    def check(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        positive_ints = ("image_size", "sample_size", "chains", "langevin_steps", "iterations", "layers")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("step_size", "sigma", "lr", "clip"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def per_position_score(model: GenerativeConvNet, x: torch.Tensor, boundary: str = "zero") -> torch.Tensor:
    """Mean over images of f / (number of top-layer positions).

    Normalising by the spatial size is the release's gradient scaling (each layer's gradient divided by
    its output's H x W); doing it per side keeps the gradient right when the chains are smaller than the
    observed image, as the texture score is a sum over positions.
    """
    _, _, h, w = model.output_shape(x.shape, boundary)
    return model.score(x, boundary).mean() / (h * w)


class Learner:
    """Algorithm 1 with layer growing. `run()` yields one metrics dict per iteration.

    State (model, optimiser, chains, counters) lives on the object so a caller can checkpoint it between
    iterations.
    """

    def __init__(self, observed: torch.Tensor, config: LearnConfig, model: GenerativeConvNet | None = None):
        config.check()
        self.config = config
        self.device = torch.device(config.device)
        if observed.dim() != 4:
            raise ValueError("observed images must be a (M, C, H, W) tensor")
        self.observed = observed.to(self.device, torch.float32)
        channels = self.observed.shape[1]
        if model is None:
            model = GenerativeConvNet.texture(channels, generator=torch.Generator().manual_seed(config.seed))
            if config.layers > len(model.layers):
                raise ValueError(f"the texture net has {len(model.layers)} layers, asked for {config.layers}")
            model.depth = 1
        self.model = model.to(self.device)
        self.optimizer = self._make_optimizer()
        # Periodic chains have no border, so the data are scored by their interior only ("valid"): both
        # sides then measure the same thing, the responses of filters that see nothing but texture.
        self.chain_boundary = "periodic" if config.periodic else "zero"
        self.data_boundary = "valid" if config.periodic else "zero"
        # Chains start at 0, the mean image (the data are mean-subtracted).
        self.chains = torch.zeros(config.chains, channels, config.sample_size, config.sample_size,
                                  device=self.device)
        self.layer = self.model.depth  # layer being grown, 1-based
        self.iteration = 0  # iterations done in the current layer
        self.langevin_steps_done = 0  # drives the noise counters of the persistent chains

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        weights = [conv.weight for conv in self.model.convs]
        biases = [conv.bias for conv in self.model.convs]
        # The release: weight decay on weights only, biases at twice the learning rate.
        groups = [{"params": weights, "lr": c.lr, "weight_decay": c.weight_decay},
                  {"params": biases, "lr": 2 * c.lr, "weight_decay": 0.0}]
        if c.optimizer == "adam":
            return torch.optim.Adam(groups, lr=c.lr, betas=(0.5, 0.999))
        return torch.optim.SGD(groups, lr=c.lr, momentum=0.0)

    @property
    def total_iterations(self) -> int:
        return self.config.iterations * self.config.layers

    @property
    def iterations_done(self) -> int:
        return (self.layer - 1) * self.config.iterations + self.iteration

    def step(self) -> dict:
        """One iteration: L Langevin steps on the chains, then one weight update."""
        c = self.config
        start = time.perf_counter()
        self.chains = langevin(self.model, self.chains, c.langevin_steps, c.step_size, c.sigma,
                               seed=c.seed, backend=c.backend, first_step=self.langevin_steps_done,
                               boundary=self.chain_boundary)
        self.langevin_steps_done += c.langevin_steps

        self.optimizer.zero_grad(set_to_none=True)
        f_obs = per_position_score(self.model, self.observed, self.data_boundary)
        f_syn = per_position_score(self.model, self.chains, self.chain_boundary)
        # Gradient ascent on the log-likelihood = descent on f_syn - f_obs.
        (f_syn - f_obs).backward()
        params = [p for conv in self.model.active_convs() for p in conv.parameters()]
        grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params)).item()
        for p in params:
            largest = p.grad.abs().max()
            if largest > c.clip:
                p.grad.mul_(c.clip / largest)
        self.optimizer.step()

        self.iteration += 1
        record = {"layer": self.layer, "iteration": self.iteration, "f_obs": f_obs.item(),
                  "f_syn": f_syn.item(), "gap": (f_obs - f_syn).item(), "grad_norm": grad_norm,
                  "iteration_seconds": time.perf_counter() - start}
        return record

    def run(self):
        """Yield one metrics dict per iteration until every layer is grown and refined."""
        c = self.config
        while self.layer <= c.layers:
            if self.model.depth != self.layer:
                self.model.depth = self.layer
            while self.iteration < c.iterations:
                yield self.step()
            if self.layer == c.layers:
                break
            self.layer += 1
            self.iteration = 0

    def state_dict(self) -> dict:
        return {"config": self.config.to_dict(), "model_config": self.model.config(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "chains": self.chains.detach().cpu(), "layer": self.layer, "iteration": self.iteration,
                "langevin_steps_done": self.langevin_steps_done}
