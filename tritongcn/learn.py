"""Learning the generative ConvNet by maximum likelihood (Algorithm 1 of the paper).

Each iteration advances the synthesized chains by L Langevin steps under the current weights, then moves
the weights along mean_obs df/dw - mean_syn df/dw: the observed images' score goes up and the synthesized
images' score goes down until the model's samples match the data's statistics.

The chains are what the model is judged by, so they must be what its own sampler makes. Chains that
persist for the whole run follow a moving model and hide that its equilibrium is not the data (Nijkamp et
al., AAAI 2020): fresh chains of such a model drift elsewhere. Here each learning chain lives `lifetime`
iterations and then starts again from the sampler's start, staggered so that at every iteration the
model sees chains of every age from newborn to as old as a fresh sample, plus `persistent_chains` that
never restart and show where long runs go. The learning rate decays at the end, so the last chains are
drawn from a model that has stopped moving.

Even so, chains that lived through the learning can hold states that new chains of the final model do not
reach: they were steered there by the moving weights. The finish (`finish_iterations`) ends the run with
updates at the final rate in which every chain is a new sample, drawn as `tritongcn sample` draws them
(at the learning chains' size, or with `finish_chains` at the samples'), so the last thing the model
learns is where its own new chains go. With `finish_average` the learned weights are the mean of the
weights after the finish's last updates, which keeps what those updates agree on and not the last one's
noise.
"""

import contextlib
import dataclasses
import math
import time

import torch

from .config import LearnConfig, image_sample_size, learning_chain_size
from .autoencoder import reconstruct, reconstruction_error
from .geometry import OBJECT_LAYERS, TEXTURE_LAYERS
from .model import GenerativeConvNet
from .precision import resolve_precision
from .chains import ChainBank, sampler_bank
from .distributed import World, all_reduce_sum
from .starts import spectrum_kernel


def per_position_score(model: GenerativeConvNet, x: torch.Tensor, boundary: str = "zero", activity=None,
                       known: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over images of f / (number of top-layer positions); of f itself for the object model.

    The texture score is a sum over positions, so dividing by their number makes observed and
    synthesized images of different sizes comparable. Every layer's gradient is thus divided by the top
    layer's H x W; the release divided each layer's by its own output's H x W, which for the texture net
    is the same to within 10 %: only the first layer strides, and the later ones keep its output size.
    If `activity` is a list, the share of active ReLU units of each layer is appended to it, from the
    same bottom-up pass. `known`, a list of (N, 1, h, w) bool per layer (`GenerativeConvNet.known_positions`),
    counts only those positions of each layer, in the score (the top layer's) and in the shares (texture
    model only).
    """
    for i, top in enumerate(model.relu_responses(x, boundary)):
        if activity is not None:
            on = top > 0
            share = on.float().mean() if known is None else (on & known[i]).sum() / (known[i].sum() * top.shape[1])
            activity.append(share.item())
    top = top.float()  # summed in float32 when the convolutions ran in bfloat16
    if model.top == "fc":  # one number per image already: the top filter covers the whole map
        return model.top_score(top).mean()
    if known is not None:
        return (top * known[-1]).sum() / known[-1].sum()
    _, _, h, w = top.shape
    return model.top_score(top).mean() / (h * w)


# A layer with fewer active units than this share on the observed images is silent: learning through it
# has stopped (see Learner._regrow_silent_layer). A healthy layer keeps a few percent at least.
SILENT_SHARE = 1e-4
# Learning from the known part of an image needs at least as many fully known top-layer windows as a known
# square of twice the receptive field holds (144 for the texture net): less is a few patches, not a texture.
KNOWN_SQUARE = 2


def fewest_known_positions(model: GenerativeConvNet) -> int:
    """The fewest fully known top-layer windows a masked image may leave (`KNOWN_SQUARE`), at its depth."""
    side = KNOWN_SQUARE * model.receptive_field()
    _, _, h, w = model.output_shape((1, model.in_channels, side, side), "valid")
    return h * w


# A layer regrown this many times has gone silent at every step size tried (down to 1/16 of the
# configured one): the data give it nothing to learn, and the run stops instead of trying forever.
MAX_REGROWTHS = 4


class RunawayGuard:
    """Watches the data's score per position, layer by layer, for a runaway: the weights growing without
    bound while the chains fall behind them, so the data's score climbs on to 1e6 and beyond (seen on
    water, brick and wood learned from the known pixels around a hole, and on wood learned at its own
    152 px). Two signs, past the first `SETTLE` iterations since a new layer or a rescue: a jump to `GROWTH`
    times the median of the last `WINDOW` iterations, or a slower climb to `LAYER_GROWTH` times the early
    level (the median of the `WINDOW` iterations after `SETTLE`, measured again after a rescue). Healthy
    runs of every recipe measured stayed below 1.23 and 2.2 times those. It keeps the active weights as
    they were every `EVERY` iterations, so that the learner can go back to before the climb
    (`Learner._rescue_runaway`).
    """

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

    def keep(self, iteration: int, params) -> None:
        """Keep the weights every EVERY iterations (the KEPT latest)."""
        if iteration % self.EVERY == 0:
            self.snapshots = (self.snapshots + [(iteration, [p.detach().clone() for p in params])])[-self.KEPT:]

    def state_dict(self) -> dict:
        return {"seen": self.seen, "recent": list(self.recent), "early": list(self.early),
                "snapshots": [(i, [p.cpu() for p in ps]) for i, ps in self.snapshots]}

    def load_state_dict(self, state: dict, device) -> None:
        self.recent, self.early = list(state["recent"]), list(state["early"])
        self.seen = int(state.get("seen", len(self.recent)))
        self.snapshots = [(i, [p.to(device) for p in ps]) for i, ps in state["snapshots"]]


class ReversalDamping:
    """Rprop's sign rule, per tensor, on top of the clipped SGD step: a tensor whose gradient points
    against its previous one (cosine < 0) has its step halved, down to `FLOOR` of the rate; one whose
    gradient keeps its direction has it grown by 1.2x, back up to the full rate.

    Why: the clip rescales each tensor's gradient to a largest entry of `clip` at every iteration (the
    raw gradients are 1e4 to 1e5), so the plain step never shrinks as the weights near the point where
    data and chains balance. The weights of the upper layers then bounce across it, each update pointing
    against the last (cosine -0.85 to -0.98 on bark) and the gap swinging sign at every iteration.
    Halving on a reversal lets the step shrink to the size the balance needs; the tensors that move
    steadily keep the full rate (bench/TUNING.md).
    """

    DOWN, UP, FLOOR = 0.5, 1.2, 0.03

    def __init__(self):
        self.scale = {}  # parameter name -> its step, as a fraction of the rate
        self.last = {}  # parameter name -> its last gradient (clipped, before the scale)

    @torch.no_grad()
    def apply(self, named_params) -> None:
        """Scale each gradient in place by its tensor's step, updated from the last gradient."""
        for name, p in named_params:
            g, last = p.grad, self.last.get(name)
            # A new tensor starts at the full rate. Rprop's small start kept all of layer 2's units alive
            # (the full first steps leave 36 to 57 of 64 never on) but learned worse bark (bench/TUNING.md).
            scale = self.scale.get(name, 1.0)
            if last is not None:
                norms = g.norm() * last.norm()
                if norms > 0:
                    reversed_ = (g * last).sum() < 0
                    scale = max(self.FLOOR, scale * self.DOWN) if reversed_ else min(1.0, scale * self.UP)
            self.scale[name], self.last[name] = scale, g.clone()
            g.mul_(scale)

    def state_dict(self) -> dict:
        return {"scale": dict(self.scale), "last": {k: v.cpu() for k, v in self.last.items()}}

    def load_state_dict(self, state: dict, device) -> None:
        self.scale = dict(state["scale"])
        self.last = {k: v.to(device) for k, v in state["last"].items()}


# `shading="auto"` flattens images whose planes of light hold more than this share of their variance (about
# their mean colour): photos that are more slope than texture. The bundled wood's hold 63 %; water's 19 %,
# bark's 3.4 %, rose's 2.6 %, brick's 0.1 %.
SHADING_SHARE = 0.5

# The finish's chains draw their starts and noise from a stream of their own (the run's seed XOR this),
# apart from the learning chains' and from `sample`'s with the same seed.
FINISH_STREAM = 0xF1415


def shading_plane(images: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """(M, C, H, W): each image's and channel's least-squares plane a + b x + c y over its pixels (its
    `known` ones, a bool (M or 1, 1, H, W), where given)."""
    m, c, h, w = images.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    basis = torch.stack([torch.ones_like(xs), xs, ys]).to(images)  # (3, H, W)
    weight = (torch.ones(1, 1, h, w) if known is None else known).to(images).expand(m, 1, h, w)
    weighted = basis[None] * weight  # (M, 3, H, W)
    gram = torch.einsum("mihw,jhw->mij", weighted, basis)  # (M, 3, 3)
    moments = torch.einsum("mihw,mchw->mci", weighted, images)  # (M, C, 3)
    coefficients = torch.linalg.solve(gram[:, None], moments[..., None])[..., 0]  # (M, C, 3)
    return torch.einsum("mci,ihw->mchw", coefficients, basis)


class LearningFailed(RuntimeError):
    """Learning cannot go on; the message says why and what to change."""


def data_boundary(config: LearnConfig, model: GenerativeConvNet) -> str:
    """How the training images are scored: by their interior ("valid") when texture chains live on the
    torus, so both sides see nothing but texture; with zero padding otherwise. Object images are aligned,
    not periodic: the object net has no padding and sees them whole."""
    return "valid" if config.periodic and model.top == "sum" else "zero"


class Learner:
    """Algorithm 1 with layer growing. `run()` yields one metrics dict per iteration.

    State (model, optimiser, chains, counters) lives on the object so a caller can checkpoint it between
    iterations. `observed` are mean-subtracted images; `mean` (C,) is the colour to add back to the
    chains to show them (`samples()`). `from_images` does the subtraction, as the release did. With
    `config.shading` "flatten" (or "auto" on a photo that is more slope than texture), each image's plane
    of light (`shading_plane`, per channel, of its known pixels) is subtracted from `observed` too, and
    nothing adds it back: the model learns the texture without the light's slope, and with each image's
    own mean colour taken out. `config.shading` then records what was done.
    `known` (M, 1, H, W) bool, where given, marks the observed pixels that are known: the texture is
    learned from the rest of each image only (a photo with a hole, an object or a logo in it). The data
    are then scored by the top-layer windows that hold no unknown pixel, so the hole teaches nothing.
    """

    def __init__(self, observed: torch.Tensor, config: LearnConfig, model: GenerativeConvNet | None = None,
                 mean: torch.Tensor | None = None, world: World | None = None, known: torch.Tensor | None = None):
        config.check()
        self.device = torch.device(config.device)
        # The precision the run actually uses ("auto" resolved for this device) is what model.pt records.
        config = dataclasses.replace(config, precision=resolve_precision(config.precision, self.device, config.backend))
        self.config = config
        if observed.dim() != 4:
            raise ValueError("observed images must be a (M, C, H, W) tensor")
        self.observed = observed.to(self.device, torch.float32)
        self.mean = torch.zeros(observed.shape[1]) if mean is None else mean.reshape(-1).float().cpu()
        if not torch.isfinite(self.observed).all():
            raise ValueError("observed images hold NaN or infinite values")
        channels = self.observed.shape[1]
        if model is None:
            generator = torch.Generator().manual_seed(config.seed)
            if config.model == "object":  # its top filter covers the whole map of the training images
                if self.observed.shape[-1] != self.observed.shape[-2]:
                    raise ValueError("the object model learns from square images")
                model = GenerativeConvNet.object(channels, self.observed.shape[-1], generator=generator,
                                                 layers=min(config.layers, len(OBJECT_LAYERS)))
            else:  # the paper's three layers, and the fourth when asked for (texture() refuses more)
                model = GenerativeConvNet.texture(channels, generator=generator,
                                                  layers=max(config.layers, len(TEXTURE_LAYERS)))
        # Built here or given (another net to screen), the net starts at the depth the config learns from.
        if config.layers > len(model.layers):
            raise ValueError(f"the {config.model} net has {len(model.layers)} layers, asked for {config.layers}")
        # Layers grown one at a time (the release and the default) or all at once (grow_layers=False, CD).
        model.depth = 1 if self.grows(config) else config.layers
        self.model = model.to(self.device)
        self.model.sigma = config.sigma  # built here or given, the model is the one of the sigma it learns with
        stride = self.model.total_stride(len(self.model.layers))
        side, field = min(self.observed.shape[-2:]), self.model.receptive_field(config.layers)
        # The sizes the rules give are what model.pt records and `sample` draws at.
        self.config = config = dataclasses.replace(
            config, sample_size=config.sample_size or image_sample_size(side, stride),
            chain_size=config.chain_size or learning_chain_size(side, stride, field))
        self.project_filters()
        self.optimizer = self._make_optimizer()
        self.damping = ReversalDamping() if self.damps(config) else None
        # Periodic chains have no border, so the data are scored by their interior only ("valid"): both
        # sides then measure the same thing, the responses of filters that see nothing but texture.
        self.data_boundary = data_boundary(config, self.model)
        # Contrastive divergence chains start from the data, so they are scored as the data are.
        periodic = self.data_boundary == "valid"
        self.chain_boundary = self.data_boundary if config.cd_steps else ("periodic" if periodic else "zero")
        self._check_geometry()
        self.known, self._known_maps = None, {}  # the observed pixels known; each layer's known positions per depth
        if known is not None:
            self._set_known(known)
        self._resolve_shading()
        config = self.config
        # Under torchrun each process holds a shard of the chains; the weight gradient is summed over them.
        self.world = world or World()
        total = len(self.observed) if config.cd_steps else config.chains  # CD: one chain per image
        # Chains are the size of the samples; of the data for CD and for the object model's top filter.
        same_as_data = config.cd_steps or self.model.top == "fc"
        first, count = self.world.shard(total)
        if count < 1:
            what = "training images (one chain each with cd_steps)" if config.cd_steps else "chains"
            raise ValueError(f"{total} {what} cannot be split between {self.world.size} processes")
        self.share = count / total  # this shard's weight in the mean over all chains
        self.restart = self.observed[first:first + count] if config.cd_steps else None
        # The data's spectrum, for chains that start as random-phase noise; model.pt keeps it for `sample`.
        self.start_kernel = spectrum_kernel(self.observed, known=self.known)
        # ML chains start where the sampler's do (the data are mean-subtracted); CD chains at the data.
        shape = self.observed.shape[1:] if same_as_data else (channels, config.chain_size, config.chain_size)
        self.bank = ChainBank(self.model, count, shape, boundary=self.chain_boundary, step_size=config.step_size,
                              sigma=config.sigma, seed=config.seed, backend=config.backend, device=self.device,
                              first_chain=first, total_chains=total, precision=config.precision,
                              images=self.restart, init=config.start, start_kernel=self.start_kernel,
                              mean=self.mean if config.bounded else None)
        if self.finish_chains(config) and config.finish_chains < self.world.size:  # every process says so
            raise ValueError(f"the finish's {config.finish_chains} chains cannot be split between "
                             f"{self.world.size} processes")
        self.on_finish_chains = False  # whether `bank` holds the finish's chains (`_start_finish_chains`)
        self.layer = self.model.depth  # layer being grown, 1-based (the top layer when all learn at once)
        self.iteration = 0  # iterations done in the current layer
        self.seconds = 0.0  # time spent in iterations so far
        # Silent-layer rescue (see `_regrow_silent_layer`): each layer's step, as a fraction of the
        # configured one, and the active parameters as they were when the current layer started.
        self.step_scale = [1.0] * len(self.model.layers)
        self.layer_start = None
        self.guard = RunawayGuard()
        # The running mean of the active weights over the finish's last updates (`_average_weights`).
        self.weight_mean, self.averaged = None, 0

    def _resolve_shading(self) -> None:
        """Flatten the observed images' shading if the config says so, or says "auto" and they are texture
        images whose planes hold more than SHADING_SHARE of their variance (`shading_share`); record
        "flatten" or "keep" in the config."""
        plane = shading_plane(self.observed, self.known)  # of the known pixels; the unknown ones stay at 0
        weight = torch.ones_like(self.observed[:, :1]) if self.known is None else self.known.float()
        energy = (self.observed.pow(2) * weight).sum().clamp_min(1e-12)  # about the mean colour
        self.shading_share = float((plane.pow(2) * weight).sum() / energy)
        if self.config.shading == "auto":
            flatten = self.texture_chains(self.config) and self.shading_share > SHADING_SHARE
        else:
            flatten = self.config.shading == "flatten"
        if flatten:
            flat = self.observed - plane
            self.observed = flat if self.known is None else torch.where(self.known, flat, self.observed)
        self.config = dataclasses.replace(self.config, shading="flatten" if flatten else "keep")

    def _set_known(self, known: torch.Tensor) -> None:
        """Learn from the known pixels only (see the class): checked, and the unknown ones set to the mean."""
        if known.shape != (self.observed.shape[0], 1) + self.observed.shape[2:]:
            raise ValueError(f"a known-pixel mask of shape {tuple(known.shape)} does not fit images of shape "
                             f"{tuple(self.observed.shape)}")
        if self.config.cd_steps or self.data_boundary != "valid":
            raise ValueError("learning from the known part of an image needs periodic texture chains: not with "
                             "contrastive divergence, the object model or zero padding")
        self.known = known.to(self.device, torch.bool)
        self.observed = torch.where(self.known, self.observed, torch.zeros((), device=self.device))
        with self._at_full_depth():
            usable, needed = int(self.model.known_positions(self.known)[-1].sum()), fewest_known_positions(self.model)
        if usable < needed:
            field = self.model.receptive_field(self.config.layers)
            raise ValueError(f"the unknown pixels leave {usable} windows of {field} px that are wholly known, "
                             f"too little texture to learn from (at least {needed}, a known square of "
                             f"{KNOWN_SQUARE * field} px): mark a smaller region unknown, or give a model")

    def _known_positions(self):
        """Each active layer's fully known positions at the current depth (None: every position)."""
        if self.known is None:
            return None
        depth = self.model.depth
        if depth not in self._known_maps:
            self._known_maps[depth] = self.model.known_positions(self.known)
        return self._known_maps[depth]

    @staticmethod
    def finish_iterations(config: LearnConfig) -> int:
        """The finish's updates (contrastive divergence has no sampler from scratch, so none)."""
        return 0 if config.cd_steps else config.finish_iterations

    @classmethod
    def finish_chains(cls, config: LearnConfig) -> int:
        """The finish's own chains at the samples' size; 0: it restarts the learning chains as new samples
        (the object model, whose chains are the data's size, and files from before it had its own)."""
        return config.finish_chains if cls.texture_chains(config) else 0

    @classmethod
    def finished(cls, config: LearnConfig, layer: int, iteration: int) -> bool:
        """Whether a run of `config` at this layer and iteration (a state_dict's) has nothing left to do."""
        return layer >= config.layers and iteration >= config.iterations + cls.finish_iterations(config)

    @classmethod
    def averaged_updates(cls, config: LearnConfig) -> int:
        """The finish's last updates whose weights are averaged into the learned ones (0: none)."""
        return round(config.finish_average * cls.finish_iterations(config))

    @property
    def finishing(self) -> bool:
        """Whether the run is in its finish: past the last layer's `iterations`."""
        return self.layer >= self.config.layers and self.iteration >= self.config.iterations

    def _start_finish_chains(self) -> None:
        """Replace the learning chains by the finish's (`finish_chains`), new chains at the samples' size
        drawn as `sample` draws them; this process takes its shard."""
        c = self.config
        first, count = self.world.shard(c.finish_chains)
        self.bank = sampler_bank(self.model, c, self.start_kernel, count, seed=c.seed ^ FINISH_STREAM,
                                 device=self.device, mean=self.mean, backend=c.backend, precision=c.precision,
                                 first_chain=first, total_chains=c.finish_chains, notify=self.bank.notify)
        self.share = count / c.finish_chains
        self.on_finish_chains = True

    @staticmethod
    def texture_chains(config: LearnConfig) -> bool:
        """Whether the run learns a texture by maximum likelihood, on chains of its own size, not the data's
        (the object model's are) nor restarted from the data (contrastive divergence's). Only such chains
        cannot hold a slope of light on the torus, so only such runs may flatten the shading (an object's
        shading is part of it); only they can be drawn at the samples' size, so only their finish may have
        chains of its own."""
        return config.model == "texture" and not config.cd_steps

    @staticmethod
    def grows(config: LearnConfig) -> bool:
        """Whether the layers are switched on one at a time (the release) or learned at once."""
        return config.grow_layers and not config.cd_steps

    @staticmethod
    def damps(config: LearnConfig) -> bool:
        """Whether each tensor's SGD step is halved on a reversal (`ReversalDamping`); Adam adapts its own."""
        return config.damp_reversals and config.optimizer == "sgd"

    @classmethod
    def from_images(cls, images: torch.Tensor, config: LearnConfig, world: World | None = None,
                    known: torch.Tensor | None = None, model: GenerativeConvNet | None = None) -> "Learner":
        """A learner for (M, C, H, W) images in [0, 255]: their mean colour (of the `known` pixels, where
        given) is subtracted, so the chains start at 0 = the mean image and `samples()` adds it back.
        `model` is a net of the caller's own to learn, else the config's."""
        if known is None:
            mean = images.mean(dim=(0, 2, 3))
        else:
            weight = known.to(images.dtype).expand_as(images)
            mean = (images * weight).sum(dim=(0, 2, 3)) / weight.sum(dim=(0, 2, 3)).clamp_min(1)
        return cls(images - mean.view(1, -1, 1, 1), config, model=model, mean=mean, world=world, known=known)

    @property
    def chains(self) -> torch.Tensor:
        """The chains (N, C, H, W) learned on, mean-subtracted, on the learner's device: the learning
        chains, and in the finish its own (`_start_finish_chains`)."""
        return self.bank.x

    @property
    def langevin_steps_done(self) -> int:
        return int(self.bank.steps[0])

    def samples(self) -> torch.Tensor:
        """The chains as images in [0, 255] on the CPU, (N, C, H, W)."""
        return (self.chains.detach().cpu() + self.mean.view(1, -1, 1, 1)).clamp(0, 255)

    @contextlib.contextmanager
    def _at_full_depth(self):
        """The model at the run's last depth for a while: what is checked at the start must hold at the end."""
        depth, self.model.depth = self.model.depth, self.config.layers
        try:
            yield
        finally:
            self.model.depth = depth

    def _check_geometry(self) -> None:
        """Fail now, not when the last layer is switched on, if an image is too small or ill-sized."""
        with self._at_full_depth():
            self.model.check_size(self.observed.shape, self.data_boundary)
            c = self.config
            if not c.cd_steps and self.model.top == "sum":
                for side in (c.chain_size, c.sample_size):
                    self.model.check_size((c.chains, self.observed.shape[1], side, side), self.chain_boundary)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        weights = [conv.weight for conv in self.model.convs] + list(self.model.fc_weights)
        biases = [conv.bias for conv in self.model.convs] + list(self.model.fc_biases)
        # The release: weight decay on weights only, biases at twice the learning rate.
        groups = [{"params": weights, "lr": c.lr, "weight_decay": c.weight_decay},
                  {"params": biases, "lr": 2 * c.lr, "weight_decay": 0.0}]
        if c.optimizer == "adam":
            return torch.optim.Adam(groups, lr=c.lr, betas=(0.5, 0.999))
        return torch.optim.SGD(groups, lr=c.lr, momentum=0.0)

    @torch.no_grad()
    def project_filters(self) -> None:
        """Make each first-layer filter sum to zero over its channels and taps (if configured).

        A filter with a DC component responds to the brightness of a whole region. Learning then grows it
        wherever the data have bright patches, and the model gains a brightness mode that Langevin chains
        started at the mean image never reach: the gap stays open, the DC keeps growing and the samples
        collapse to flat patches (a low-contrast wood texture came out as its mean colour). Zero-mean
        filters see structure and colour contrasts, not the grey level the data's mean already gives.
        """
        if self.config.zero_mean_filters:
            weight = self.model.convs[0].weight
            weight.sub_(weight.mean(dim=(1, 2, 3), keepdim=True))

    def _set_learning_rate(self) -> None:
        """lr for the first `lr_decay_start` of each layer's iterations (of all, when the layers learn at
        once), then a cosine decay to lr * lr_final (biases at twice the rate).

        Persistent chains and the weights are a stochastic approximation (Younes): with a constant rate
        the weights keep circling the maximum-likelihood point and the chains keep chasing them, so the
        last chains come from a moving model. The decay lets the model settle, and the chains that live
        through it are samples of the model that is saved.
        """
        c = self.config
        progress = self.iteration / max(c.iterations - 1, 1)
        decay = min(1.0, max(0.0, progress - c.lr_decay_start) / (1 - c.lr_decay_start))  # the finish: lr_final
        factor = c.lr_final + (1 - c.lr_final) * 0.5 * (1 + math.cos(math.pi * decay))
        for group, scale in zip(self.optimizer.param_groups, (1.0, 2.0)):
            group["lr"] = c.lr * scale * factor

    def iteration_costs(self) -> list:
        """Relative cost of each iteration of the whole run, in order, for an honest estimate of the time
        left: the multiply-adds of the active layers on one learning chain, plus the first layer's again
        for what every iteration pays whatever its depth (the data, the update, Python). At depths 1, 2,
        3 of the default recipe that is 1 : 2.2 : 2.3; measured, 1 : 2.5 : 2.6 (bench/README.md)."""
        c = self.config
        macs = self._macs_per_layer(c.chain_size or c.sample_size)
        # A finish update runs finish_langevin_steps steps where the others run langevin_steps, on its own
        # chains where it has them; the weight gradient costs about one more step.
        finish_macs = sum(macs)
        if self.finish_chains(c):
            finish_macs = sum(self._macs_per_layer(c.sample_size)) * c.finish_chains / c.chains
        finish = [finish_macs * (c.finish_langevin_steps + 1) / (c.langevin_steps + 1) + macs[0]
                  ] * self.finish_iterations(c)
        if not self.grows(c):
            return [sum(macs) + macs[0]] * c.iterations + finish
        return [sum(macs[:depth]) + macs[0] for depth in range(1, c.layers + 1) for _ in range(c.iterations)] + finish

    def _macs_per_layer(self, side: int) -> list:
        """Multiply-adds of each of the run's layers on one chain of `side` px."""
        channels, macs = self.model.in_channels, []
        for spec in self.model.layers[:self.config.layers]:
            side = -(-side // spec.stride)
            macs.append(spec.out_channels * channels * spec.kernel_size ** 2 * side * side)
            channels = spec.out_channels
        return macs

    @property
    def total_iterations(self) -> int:
        c = self.config
        return c.iterations * (c.layers if self.grows(c) else 1) + self.finish_iterations(c)

    def step(self) -> dict:
        """One iteration: L Langevin steps on the chains, then one weight update."""
        c = self.config
        start = time.perf_counter()
        self._set_learning_rate()
        if self.finishing and self.finish_chains(c) and not self.on_finish_chains:
            self._start_finish_chains()
        record = {}
        if c.cd_steps:
            # How well the current weights auto-encode the data (Proposition 3: CD lowers this).
            error = reconstruction_error(self.restart, reconstruct(self.model, self.restart, c.sigma,
                                                                   self.data_boundary))
            totals = torch.stack([error.nansum(), torch.tensor(float(len(error)), device=error.device)])
            all_reduce_sum([totals], self.world)  # the mean over every process's images
            record["reconstruction_error"] = round((totals[0] / totals[1]).item(), 5)
            self.bank.x.copy_(self.restart)  # the step counters run on, so no noise is drawn twice
        else:
            self.bank.restart(self._chains_to_restart())
        # Tempered learning chains (`temperature`) explore; the finish's are new samples, drawn as `sample`
        # draws them.
        self.bank.advance(c.cd_steps or (c.finish_langevin_steps if self.finishing else c.langevin_steps),
                          temperature=1.0 if self.finishing or c.cd_steps else c.temperature)
        # Chains that left the float range: counted here, judged after the all-reduce so that every
        # process stops at the same iteration.
        lost_chains = (~torch.isfinite(self.chains.flatten(1)).all(dim=1)).sum().float()

        self.optimizer.zero_grad(set_to_none=True)
        active_obs, active_syn = [], []  # share of active units per layer: where the images sit in the
        # model's piecewise-Gaussian partition, observed against synthesized
        # The weight gradient's convolutions in the sampler's precision: bfloat16 halves this pass on CPUs
        # that multiply it natively (bench/README.md), and its rounding, about 0.4 % of each product, is
        # small against the chains' noise in the gradient; the scores are summed in float32.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=c.precision == "bfloat16"):
            f_obs = per_position_score(self.model, self.observed, self.data_boundary, active_obs,
                                       known=self._known_positions())
            f_syn = per_position_score(self.model, self.chains, self.chain_boundary, active_syn)
        silent = [i for i, share in enumerate(active_obs) if share < SILENT_SHARE]
        # A layer is silent when its units are off on the data, not when overflowing weights make every
        # response NaN: that is a divergence, reported below once every process has seen it.
        if silent and self.layer_start is not None and torch.isfinite(f_obs):
            self._regrow_silent_layer(silent[0])
            record.update(regrown=silent[0] + 1, step_scale=self.step_scale[silent[0]])
            return self._record(f_obs.detach(), f_syn.detach(), 0.0, active_obs, active_syn, record, start)
        if self.layer_start is None:
            self.layer_start = [p.detach().clone() for p in self.model.active_parameters()]
        # Gradient ascent on the log-likelihood = descent on f_syn - f_obs. Each process weighs its shard's
        # f_syn by its share and f_obs by 1 / processes, so the summed gradient is the whole bank's.
        (self.share * f_syn - f_obs / self.world.size).backward()
        params = self.model.active_parameters()
        scores = torch.stack([self.share * f_syn.detach(), f_obs.detach() / self.world.size, lost_chains])
        all_reduce_sum([p.grad for p in params] + [scores], self.world)
        f_syn, f_obs, lost_chains = scores[0], scores[1], int(scores[2])
        where = f"at layer {self.layer}, iteration {self.iteration + 1}"
        if lost_chains:
            raise FloatingPointError(f"the chains diverged {where}: {lost_chains} of {self.bank.total_chains} "
                                     f"hold NaN or Inf; lower --step-size (now {c.step_size:g}) or --lr "
                                     f"(now {c.lr:g})")
        if not (torch.isfinite(f_obs) and torch.isfinite(f_syn)):
            raise FloatingPointError(f"learning diverged {where}: the scores are no longer finite; lower --lr "
                                     f"(now {c.lr:g}) or --step-size (now {c.step_size:g})")
        growth = self.guard.ran_away(f_obs.item())
        if growth:
            record.update(self._rescue_runaway(growth))
            return self._record(f_obs, f_syn, 0.0, active_obs, active_syn, record, start)
        self.guard.keep(self.iteration + 1, params)
        grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params)).item()
        self.update()
        if not all(torch.isfinite(p).all() for p in params):
            raise FloatingPointError(f"the weights diverged {where}: an update left NaN or Inf in them; lower "
                                     f"--lr (now {c.lr:g})")
        self._average_weights()

        return self._record(f_obs, f_syn, grad_norm, active_obs, active_syn, record, start)

    @torch.no_grad()
    def update(self) -> None:
        """Move the active weights by their gradients: each clipped, scaled by its layer's step
        (`_regrow_silent_layer`) and, if configured, by its tensor's reversal damping; then the optimiser's
        step and the filter projection."""
        for p in self.model.active_parameters():
            largest = p.grad.abs().max()
            if largest > self.config.clip:
                p.grad.mul_(self.config.clip / largest)
        for i, conv in enumerate(self.model.active_convs()):
            if self.step_scale[i] != 1.0:
                for p in conv.parameters():
                    p.grad.mul_(self.step_scale[i])
        if self.damping is not None:
            self.damping.apply(self.model.active_named_parameters())
        self.optimizer.step()
        self.project_filters()

    @torch.no_grad()
    def _average_weights(self) -> None:
        """Fold the weights of this update into their running mean if it is one of the finish's last
        `averaged_updates`; the mean replaces the weights when the run ends (`run`)."""
        c = self.config
        first = c.iterations + self.finish_iterations(c) - self.averaged_updates(c)  # iterations before them
        if not self.finishing or self.iteration + 1 <= first:
            return
        params = self.model.active_parameters()
        if self.weight_mean is None:
            self.weight_mean = [torch.zeros_like(p) for p in params]  # the first update's weights, exactly, below
        self.averaged += 1
        for mean, p in zip(self.weight_mean, params):
            mean.add_(p.detach() - mean, alpha=1.0 / self.averaged)

    def _chains_to_restart(self) -> list:
        """Indices (in this process's bank) of the chains whose life ends now: chain g of the whole bank,
        past the `persistent_chains` that never restart, starts again whenever iteration + its phase is a
        multiple of `lifetime`, the phases spread evenly so the chains' ages are too."""
        lifetime, persistent = self._life_cycle()
        done = self.iterations_done
        mortal = self.bank.total_chains - persistent
        if not lifetime or mortal < 1 or done == 0:
            return []
        first = self.bank.first_chain
        # Chain g's phase: where in its life cycle it is at iteration 0.
        due = [g for g in range(max(first, persistent), first + len(self.bank))
               if (done + (g - persistent) * lifetime // mortal) % lifetime == 0]
        return [g - first for g in due]

    def _life_cycle(self) -> tuple:
        """(lifetime in iterations, chains that never restart): the config's, and in the finish every
        chain a new sample that lives as many Langevin steps as `sample` runs."""
        c = self.config
        if self.finishing:
            return max(1, c.sample_steps // c.finish_langevin_steps), 0
        return c.lifetime, c.persistent_chains

    @property
    def iterations_done(self) -> int:
        """Iterations run so far, over every layer."""
        return (self.layer - 1) * self.config.iterations + self.iteration if self.grows(self.config) else self.iteration

    def _record(self, f_obs, f_syn, grad_norm, active_obs, active_syn, record, start) -> dict:
        """Count the iteration and describe it (the metrics.jsonl line)."""
        self.iteration += 1
        self.seconds += time.perf_counter() - start
        return {"layer": self.layer, "iteration": self.iteration, "f_obs": f_obs.item(),
                "f_syn": f_syn.item(), "gap": (f_obs - f_syn).item(), "grad_norm": grad_norm,
                "active_obs": [round(a, 4) for a in active_obs], "active_syn": [round(a, 4) for a in active_syn],
                **record, "seconds": round(self.seconds, 3)}

    @torch.no_grad()
    def _regrow_silent_layer(self, index: int) -> None:
        """Start the current layer again, from the weights it started with, with layer `index + 1`'s
        steps halved from now on: that layer has (almost) no active unit left on the observed images.

        A layer that is off everywhere makes f constant: no gradient reaches it or the layers below, and
        learning stops for good (the samples become the Gaussian reference's noise). It happens when a
        clipped step, which can be larger than a young layer's weights, moves all of them the same way:
        the layer swings from all on to all off in two or three iterations (seen on bark, 225 px chains:
        layer 3 active on 51%, 65%, 33%, 0.01% of the data's units in its first four iterations). The
        iteration counter runs on, so the run keeps its length; this iteration makes no update (its
        record has grad_norm 0 and names the layer `regrown`).
        """
        if self.step_scale[index] <= 0.5 ** MAX_REGROWTHS:
            raise LearningFailed(
                f"layer {index + 1} went silent on the training images {MAX_REGROWTHS + 1} times, down to "
                f"{self.step_scale[index]:g} of the step: nothing in the images keeps its units on (an image "
                "without texture?); try fewer --layers or another image")
        for p, before in zip(self.model.active_parameters(), self.layer_start):
            p.copy_(before)
        self.step_scale[index] *= 0.5

    @torch.no_grad()
    def _rescue_runaway(self, growth: float) -> dict:
        """Go back to the oldest weights the guard kept (from before the climb), start every chain again
        from the start (they followed the weights away), and end the layer there: the next layer, or for
        the last one the finish, follows (a runaway in the finish ends the run). Halving the step and
        learning on did not help: water, brick and wood learned around a hole ran away again within 30 to 60
        iterations each time; nor did learning on with the learning chains at 4 times the temperature (wood,
        whole image: its finish ran away). Describes it for the record (`growth`: the guard's), with the
        iterations skipped."""
        back_to, weights = self.guard.snapshots[0] if self.guard.snapshots else (0, self.layer_start)
        for p, before in zip(self.model.active_parameters(), weights):
            p.copy_(before)
        self.bank.restart(range(len(self.bank)))
        self.guard.reset()
        self.weight_mean, self.averaged = None, 0  # it may hold weights from the climb
        end = self.config.iterations + (self.finish_iterations(self.config) if self.finishing else 0)
        skipped = end - (self.iteration + 1)
        self.iteration = end - 1  # _record counts this iteration
        return {"runaway": self.layer, "from_iteration": back_to, "growth": round(growth, 2),
                "skipped": skipped}

    def run(self):
        """Yield one metrics dict per iteration until every layer is grown and refined."""
        while True:
            self.model.depth = self.layer
            last = self.layer >= self.config.layers
            # The last layer runs on through the finish.
            while self.iteration < self.config.iterations or (
                    last and not self.finished(self.config, self.layer, self.iteration)):
                yield self.step()
            if last:
                if self.weight_mean is not None:
                    with torch.no_grad():
                        for p, mean in zip(self.model.active_parameters(), self.weight_mean):
                            p.copy_(mean)
                    self.weight_mean, self.averaged = None, 0
                return
            self.layer += 1
            self.iteration = 0
            self.layer_start = None  # taken again at the new layer's first iteration
            self.guard.reset()

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: weights, optimiser, chains and counters, so that the rest of the
        run is the one an uninterrupted run would have had (the Langevin noise is addressed by chain and
        step, so no random generator state is needed). Under torchrun each process takes its shard of
        the saved chains."""
        self.model.depth = int(state["layer"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.layer, self.iteration = int(state["layer"]), int(state["iteration"])
        # Saved after a finish update: the chains are the finish's own.
        if self.finish_chains(self.config) and self.finishing and self.iteration > self.config.iterations:
            self._start_finish_chains()
        chains = state["chains"]
        first = self.bank.first_chain
        if len(chains) != self.bank.total_chains or tuple(chains.shape[1:]) != tuple(self.chains.shape[1:]):
            raise ValueError(f"saved chains of shape {tuple(chains.shape)} do not fit this run's "
                             f"{self.bank.total_chains} chains of {tuple(self.chains.shape[1:])}")
        self.bank.x.copy_(chains[first:first + len(self.bank)])
        self.bank.steps.fill_(int(state["langevin_steps_done"]))
        self.seconds = float(state["seconds"])
        self.step_scale = list(state.get("step_scale", self.step_scale))
        self.layer_start = state.get("layer_start")
        if self.damping is not None and "damping" in state:
            self.damping.load_state_dict(state["damping"], self.device)
        if state.get("guard") is not None:
            self.guard.load_state_dict(state["guard"], self.device)
        mean = state.get("weight_mean")
        self.weight_mean = None if mean is None else [m.to(self.device) for m in mean]
        self.averaged = int(state.get("averaged", 0))

    def state_dict(self) -> dict:
        return {"config": self.config.to_dict(), "model_config": self.model.config(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "chains": self.chains.detach().cpu(), "layer": self.layer, "iteration": self.iteration,
                "langevin_steps_done": self.langevin_steps_done, "seconds": self.seconds,
                "mean": self.mean.clone(), "step_scale": list(self.step_scale),
                "layer_start": self.layer_start, "start_kernel": self.start_kernel.clone(),
                "damping": self.damping.state_dict() if self.damping is not None else None,
                "guard": self.guard.state_dict(),
                "weight_mean": None if self.weight_mean is None else [m.detach().cpu() for m in self.weight_mean],
                "averaged": self.averaged}

    def fresh_bank(self, chains: int, seed: int = 0) -> ChainBank:
        """`chains` new chains of the learned model, as `tritongcn sample` draws them by default: from
        the sampler's start at the samples' size, none of them the learning chains."""
        return sampler_bank(self.model, self.config, self.start_kernel, chains, seed=seed, device=self.device,
                            mean=self.mean)
