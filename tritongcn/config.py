"""Learning settings, and the one place that answers a recipe's yes/no questions (does it grow its layers,
does it finish, where do its chains live). Kept free of torch so that the command line reads it instantly.

Each setting's `help` (its field metadata) is what `tritongcn learn --help` shows for it; the numbers
behind the defaults are in bench/TUNING.md."""

import math
from dataclasses import asdict, dataclass, field, fields, replace

from .geometry import DEEPER_TEXTURE_LAYERS, OBJECT_LAYERS, receptive_field, size_problem, total_stride
from .precision import PRECISION_CHOICES

STARTS = ("zero", "noise", "spectrum")  # where chains start: tritongcn.starts (kept here for the CLI)
SHADINGS = ("auto", "flatten", "keep")  # LearnConfig.shading, resolved by tritongcn.learn.data
MODELS = ("texture", "object")


def setting(default, help: str = "", option: str | None = None, low=None, high=None, choices=None):
    """A LearnConfig field with what the command line needs to offer it: its help, its option name when it
    is not the field's (`--finish` for finish_iterations), and its range or choices. No help: not an option."""
    metadata = {"help": help, "option": option, "low": low, "high": high, "choices": choices}
    return field(default=default, metadata=metadata)


def stride_multiple(size: int, stride: int) -> int:
    """`size` rounded up to a multiple of the net's total stride, the one rule for every side of periodic
    chains (on the torus every unit needs a whole window of strides): a sample is never smaller than asked."""
    return -(-int(size) // stride) * stride


def image_sample_size(image_size: int, stride: int) -> int:
    """The default side of texture samples: the training image's, made a multiple of the net's total
    stride (`stride_multiple`). 224 px data and the texture net's stride 3 give 225 px."""
    return stride_multiple(image_size, stride)


def learning_chain_size(image_size: int, stride: int, receptive_field: int) -> int:
    """The default side of the learning chains: half the training image's, at least the receptive field,
    rounded up to the net's total stride (114 px for 224 px data and the texture net)."""
    return stride_multiple(max(-(-int(image_size) // 2), receptive_field), stride)


# What `LearnConfig.check` asks of each setting.
AT_LEAST_ONE = ("image_size", "chains", "langevin_steps", "iterations", "layers", "sample_steps",
                "finish_langevin_steps")
AT_LEAST_ZERO = ("sample_size", "chain_size", "lifetime", "persistent_chains", "finish_iterations", "cd_steps")
POSITIVE = ("step_size", "sigma", "lr", "clip", "temperature")
SHARES = {"lr_final": (0.0, 1.0, "high"), "lr_decay_start": (0.0, 1.0, "low")}  # (low, high, closed end)
CHOICES = {"model": MODELS, "start": STARTS, "shading": SHADINGS, "precision": PRECISION_CHOICES}


class ConfigError(ValueError):
    """A setting that cannot work; `setting` names the LearnConfig field at fault."""

    def __init__(self, message: str, setting: str):
        super().__init__(message)
        self.setting = setting

    @property
    def option(self) -> str:
        """The `learn` option of the setting at fault."""
        meta = {f.name: f.metadata for f in fields(LearnConfig)}.get(self.setting, {})
        return (meta.get("option") or f"--{self.setting.replace('_', '-')}").split("/")[0]


def net_layers(model: str, layers: int) -> tuple:
    """The first `layers` LayerSpecs of the net a LearnConfig's `model` names ("texture": the paper's
    three and our fourth; "object": the paper's three), refusing more than it has."""
    net = OBJECT_LAYERS if model == "object" else DEEPER_TEXTURE_LAYERS
    check_depth(len(net), layers, model)
    return net[:layers]


def check_depth(available: int, layers: int, what: str) -> None:
    """Refuse to learn more layers than the net holds (the one rule, for the nets built and those given)."""
    if layers > available:
        raise ConfigError(f"the {what} net has at most {available} layers, asked for {layers}", "layers")


@dataclass
class LearnConfig:
    """One learning run. The defaults are the texture recipe: layers grown one at a time by clipped SGD
    whose steps halve when they reverse, a few large Langevin steps between updates on half-size chains
    (half of them restarted from the sampler's start every `lifetime` iterations, half never), and a
    finish on new chains drawn as `tritongcn sample` draws them (`RELEASE` is the paper's own recipe)."""

    model: str = setting("texture", "texture: f sums the top layer's responses, samples of any size; object: "
                                    "the paper's object net with one top filter over the whole map, for a folder "
                                    "of aligned images, learned by the paper's recipe.", choices=MODELS)
    image_size: int = setting(224, "Training images: shorter side resized to this, then a centred square crop "
                                   "[default: 224; the images' smallest side for objects]", low=8, high=4096)
    # 0: the training image's side rounded up to the net's total stride (`image_sample_size`).
    sample_size: int = setting(0, "Side of the samples drawn at the end and by `sample` [default: --image-size "
                                  "rounded up to the net's stride, 225 for 224]", low=8, high=4096)
    # 0: half the training image's side (`learning_chain_size`): a texture is a field of local statistics,
    # and three receptive fields of it cost a quarter of a full-size chain per step.
    chain_size: int = setting(0, "Side of the learning chains [default: half --image-size, rounded up to the "
                                 "stride, 114 for 224]", low=8, high=4096)
    chains: int = setting(8, "Learning chains.", low=1, high=1 << 20)
    langevin_steps: int = setting(3, "Langevin steps between weight updates (L).", low=1, high=10000)
    # Inside one ReLU piece a step closes eps^2 / (2 sigma^2) of the way to the piece's mode: half at 1.
    step_size: float = setting(1.0, "Langevin step size eps, on the [0, 255] pixel scale.", low=0.0)
    sigma: float = setting(1.0, "Standard deviation of the Gaussian reference distribution.", low=0.0)
    temperature: float = setting(1.0, "The learning chains' noise variance as a multiple of the model's (new "
                                      "samples keep 1); above 1 they leave a mode more easily.", low=0.0)
    iterations: int = setting(300, "Weight updates per grown layer (in all with --cd).", low=1, high=10**7)
    layers: int = setting(3, "Layers of the net: the paper's 3, or 4 for textures (a fourth layer widens "
                             "what the net sees from 33 to 45 px).", low=1, high=4)
    # False learns all layers at once, which ran away with the default recipe.
    grow_layers: bool = True
    lr: float = setting(0.001, "Learning rate (biases twice it).", low=0.0)
    lr_final: float = 0.1  # the rate at the end, as a fraction of lr, reached by a cosine decay
    lr_decay_start: float = 0.6  # share of each layer's iterations before the decay
    start: str = setting("spectrum", "Where chains start: the mean image (zero), white noise, or random-phase "
                                     "noise with the training image's spectrum.", choices=STARTS)
    # A learning chain's life in iterations before it starts again from `start`, the chains' ages staggered
    # so the model always sees chains as young and as old as new samples are. 0: never (the paper).
    lifetime: int = 60
    persistent_chains: int = 4  # chains that never restart: the model also learns where long runs go
    sample_steps: int = setting(300, "Langevin steps of the samples drawn at the end (and `sample`'s "
                                     "default).", low=1, high=10**6)
    # The finish: updates at the final rate in which every chain is a new sample, restarted every
    # `sample_steps`, so the last thing the model learns is where its own new chains go.
    finish_iterations: int = setting(40, "Updates at the end in which every chain is a new sample, drawn as "
                                         "`sample` draws them (0: none).", option="--finish", low=0, high=10**6)
    finish_langevin_steps: int = 30
    # Chains kept inside the [0, 255] range of images: an unbounded chain thrown far outside it by grown
    # weights drags the weights after it.
    bounded: bool = True
    periodic: bool = setting(True, "Synthesize on the torus (seamless tiles; data scored by their interior) or "
                                   "with the paper's zero padding everywhere.", option="--periodic/--zero-padding")
    # A photo's slope of light is not texture, and no chain on the torus can hold a ramp.
    shading: str = setting("auto", "flatten: subtract each training image's plane of light before learning "
                                   "(samples have no shading across them); keep: learn the images as they are; "
                                   "auto: flatten photos whose plane holds over half their variance.",
                           choices=SHADINGS)
    zero_mean_filters: bool = True  # first-layer filters see structure, not brightness (see learn.update)
    weight_decay: float = 1e-4
    clip: float = 20.0  # each tensor's gradient rescaled so its largest entry is at most this
    damp_reversals: bool = True  # halve a tensor's step when its gradient reverses (learn.update.ReversalDamping)
    seed: int = setting(0, "Seed of the initial weights and the Langevin noise.", low=0, high=2**63 - 1)
    # k > 0: k-step contrastive divergence, chains restarted from the data at every iteration.
    cd_steps: int = setting(0, "k-step contrastive divergence: one chain per training image, restarted from it "
                               "at every iteration for k Langevin steps, all layers learned at once, by the "
                               "paper's recipe (0: maximum likelihood).", option="--cd", low=0, high=10000)
    device: str = "cpu"
    backend: str = "auto"  # kernel backend for the sampler (see tritongcn.kernels)
    precision: str = "auto"  # the sampler's convolutions, one of PRECISION_CHOICES (chains stay float32)

    # The recipe's yes/no questions, answered here only.

    def grows(self) -> bool:
        """Whether the layers are switched on one at a time (contrastive divergence learns them at once)."""
        return self.grow_layers and not self.cd_steps

    def finish_updates(self) -> int:
        """The finish's updates: contrastive divergence has no sampler from scratch, so none."""
        return 0 if self.cd_steps else self.finish_iterations

    def texture_chains(self) -> bool:
        """Whether the chains are texture chains of their own size: not the object model's (the data's
        size) nor contrastive divergence's (restarted from the data). Only they can flatten the shading."""
        return self.model == "texture" and not self.cd_steps

    def on_torus(self) -> bool:
        """Whether chains live on the torus: the object model is aligned images, with zero padding."""
        return self.periodic and self.model == "texture"

    def data_boundary(self) -> str:
        """How the training images are scored: by their interior when chains live on the torus, so both
        sides see nothing but texture; else with zero padding."""
        return "valid" if self.on_torus() else "zero"

    def chain_boundary(self) -> str:
        """What the learning chains see past their edge: contrastive divergence's are scored as the data."""
        if self.cd_steps:
            return self.data_boundary()
        return "periodic" if self.on_torus() else "zero"

    def total_iterations(self) -> int:
        return self.iterations * (self.layers if self.grows() else 1) + self.finish_updates()

    def finished(self, layer: int, iteration: int) -> bool:
        """Whether a run at this layer and iteration (a saved state's) has nothing left to do."""
        return layer >= self.layers and iteration >= self.iterations + self.finish_updates()

    def with_sizes(self, side: int, layers) -> "LearnConfig":
        """This config with its sizes resolved for training images of shorter side `side` and a net of these
        `layers` (LayerSpecs): the object model's chains and samples are the images' size; a texture's 0
        sizes take the rules above."""
        if self.model == "object":
            return replace(self, sample_size=side, chain_size=side)
        stride, field_ = total_stride(layers), receptive_field(layers)
        return replace(self, sample_size=self.sample_size or image_sample_size(side, stride),
                       chain_size=self.chain_size or learning_chain_size(side, stride, field_))

    def check_sizes(self, layers) -> None:
        """Raise ConfigError naming a chain size (sample_size, chain_size) that a net of these `layers`
        cannot score: every chain holds a whole window, and chains on the torus a whole number of strides."""
        if not self.texture_chains():  # the object model's and CD's chains are the data's
            return
        for name in ("sample_size", "chain_size"):
            size = getattr(self, name)
            for boundary in ("valid", "periodic") if self.on_torus() else ("valid",):
                problem = size_problem(size, size, layers, boundary)
                if problem:
                    hint = f" (try {stride_multiple(size, total_stride(layers))})" if boundary == "periodic" else ""
                    raise ConfigError(problem + hint, name)

    def check(self) -> None:
        """Raise ConfigError naming the first setting that cannot work."""
        for name in AT_LEAST_ONE + AT_LEAST_ZERO:
            least = 1 if name in AT_LEAST_ONE else 0
            if int(getattr(self, name)) < least:
                raise ConfigError(f"{name} must be at least {least}, got {getattr(self, name)}", name)
        for name in POSITIVE:
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive finite number, got {value}", name)
        for name, (low, high, closed) in SHARES.items():
            value = float(getattr(self, name))
            if not (math.isfinite(value) and (low < value <= high if closed == "high" else low <= value < high)):
                interval = f"({low:g}, {high:g}]" if closed == "high" else f"[{low:g}, {high:g})"
                raise ConfigError(f"{name} must be in {interval}, got {value}", name)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}", name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnConfig":
        """The config a model or checkpoint file saved. Files from before a setting existed ran the
        paper's way in it (grown layers, chains from the mean image that never restart, chains the
        samples' size), so a missing setting takes that value, not today's default; settings that no
        longer exist are ignored."""
        known = {f.name for f in fields(cls)}
        legacy = {"shading": "keep", "grow_layers": True, "lr_decay_start": 0.0, "start": "zero",
                  "lifetime": 0, "persistent_chains": 0, "bounded": False, "damp_reversals": False,
                  "finish_iterations": 0, "chain_size": d.get("sample_size", 0)}
        settings = {k: v for k, v in d.items() if k in known}
        return cls(**{**{k: v for k, v in legacy.items() if k not in d}, **settings})


# The paper's recipe (Algorithm 1 as the authors' MatConvNet code runs it): layers grown one at a time,
# 300 plain clipped SGD steps each, persistent chains from the mean image, 10 Langevin steps of 0.3. The
# object model and contrastive divergence learn this way.
RELEASE = dict(grow_layers=True, lr_final=1.0, lr_decay_start=0.0, chains=4, langevin_steps=10, step_size=0.3,
               iterations=300, start="zero", lifetime=0, persistent_chains=0, bounded=False, damp_reversals=False,
               finish_iterations=0, shading="keep")
QUALITIES = ("default", "high")
# `--quality high`: longer, with twice the chains, and no finish (which helped some textures, not these runs).
HIGH = dict(chains=16, persistent_chains=8, iterations=700, finish_iterations=0)


def recipe(model: str = "texture", quality: str = "default", cd_steps: int = 0) -> dict:
    """The LearnConfig settings that differ from its defaults for this kind of run."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    if model == "object" or cd_steps:
        return dict(RELEASE)
    return dict(HIGH) if quality == "high" else {}
