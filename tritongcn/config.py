"""Learning settings. Kept free of torch so that the command line can read defaults instantly."""

import math
from dataclasses import asdict, dataclass, fields

from .precision import PRECISION_CHOICES

STARTS = ("zero", "noise", "spectrum")  # where chains start: tritongcn.starts (kept here for the CLI)
OPTIMIZERS = ("sgd", "adam")  # tritongcn.learn.Learner._make_optimizer
SHADINGS = ("auto", "flatten", "keep")  # LearnConfig.shading, resolved by tritongcn.learn.Learner


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


@dataclass
class LearnConfig:
    """One learning run. The defaults are the texture recipe measured in bench/TUNING.md: the release's
    layer-by-layer clipped SGD, each tensor's step halved when its update reverses, with short Langevin
    runs of large steps between updates on half-size chains, half of which start again from the
    sampler's start every `lifetime` iterations, so the model learns what its own new chains do, and half
    of which never restart, so it also learns where long runs go (`RELEASE` holds the release's recipe)."""

    image_size: int = 224  # training image: shorter side resized to this, then a centred square crop
    # Side of the fresh samples drawn at the end (and `tritongcn sample`'s default). 0: the training
    # image's side rounded up to the net's total stride, so a sample holds as much texture as the data.
    sample_size: int = 0
    # Side of the learning chains. 0: `learning_chain_size`, half the training image's side (114 px for
    # 224): a texture is a field of local statistics, and a torus of three 33 px receptive fields holds
    # them at a quarter of the cost per step of a full-size chain.
    chain_size: int = 0
    chains: int = 8  # learning chains
    langevin_steps: int = 3  # L, Langevin steps per weight update (release: 10)
    # Langevin eps on the [0, 255] pixel scale (release: 0.3). Inside one ReLU piece the energy is a
    # quadratic of curvature 1/sigma^2, so a step closes eps^2 / (2 sigma^2) of the way to the piece's
    # mode: half of it at eps = 1, 4.5 % at 0.3; the update stays stable below eps = 2 sigma.
    step_size: float = 1.0
    # The learning chains' noise variance as a multiple of the model's (the finish and new samples stay at
    # 1): above 1 they sample p^(1/T) and leave a ReLU piece's mode more easily (learn.Learner.step).
    temperature: float = 1.0
    sigma: float = 1.0  # reference Gaussian's standard deviation (release: 1)
    iterations: int = 300  # weight updates per grown layer (all layers at once: in all)
    layers: int = 3  # layers of the net (texture: up to 4, geometry.DEEPER_TEXTURE_LAYERS; object: 3)
    # Layers switched on one at a time, `iterations` each, the lower ones refined with each new one (the
    # release); False learns them all at once, which ran away with SGD and Adam alike (bench/TUNING.md).
    grow_layers: bool = True
    lr: float = 0.001  # learning rate; biases use twice this
    lr_final: float = 0.1  # lr at the end, as a fraction of lr (cosine decay); 1: constant
    lr_decay_start: float = 0.6  # share of the iterations (of each layer when growing) before the decay
    # "sgd": the release's plain SGD, each gradient clipped; "adam": Adam with beta1 0.5. Adam's step is
    # normalised per weight, so weights the data hardly pull on move as fast as the rest, driven by the
    # chains' noise; learned all at once with it, 2 of 4 textures ran away (bench/TUNING.md).
    optimizer: str = "sgd"
    start: str = "spectrum"  # where chains start (tritongcn.starts): zero, noise, spectrum
    # Iterations a learning chain lives before it starts again from `start`, staggered over the chains so
    # their ages spread evenly: the model always sees chains as young and as old as fresh samples are.
    # 0: persistent chains that never restart (the release).
    lifetime: int = 60
    # Chains that never restart: the model also sees where long runs go. With one of 8, fresh chains of a
    # water model drifted to vertical stripes after 300 steps, a mode no short-lived chain reached.
    persistent_chains: int = 4
    sample_steps: int = 300  # Langevin steps of fresh samples (`tritongcn sample`'s default)
    # The finish: after the last layer, this many updates at the final rate in which every chain is a
    # new sample drawn as `tritongcn sample` draws them, restarted from `start` every `sample_steps`
    # Langevin steps, taken `finish_langevin_steps` per update. Learning chains that follow the moving
    # weights stay in states that new chains of the final model do not reach (brick: 0.9 against 1.7 in
    # ps_z); the finish shows the model where its new chains go, and corrects it there (bench/TUNING.md).
    finish_iterations: int = 40
    finish_langevin_steps: int = 30
    # The finish's own chains, new chains at the samples' size that replace the learning chains in it
    # (texture model); 0: the learning chains restart as new samples at their own size. With 4 of 225 px
    # water's new samples scored ps_z 1.10 and 1.08 (two seeds) against 1.11 and 1.31, but rose's 1.62 and
    # 1.34 against 1.30 and 1.38, in smooth blobs larger than a learning chain; with 2, bark's 1.95
    # against 0.91. Each run takes a minute longer (bench/TUNING.md).
    finish_chains: int = 0
    # The learned weights: the mean of the weights after each of the finish's last `finish_average` share
    # of updates (Polyak averaging), not the last update's, which carry that update's noise. 0: the last
    # update's weights. On the same runs, the mean over all 40 took the new samples' ps_z from 1.39 to 1.36
    # on rose and from 1.30 to 1.18 on water (two seeds each) but from 0.90 to 1.01 on brick and from 0.95
    # to 1.08 on bark, whose finish moves the model most: its first updates' weights are not yet corrected
    # (bench/TUNING.md). The mean of the last half narrowed the spread between four seeds (bark 0.95 to
    # 1.22 became 0.99 to 1.05) but moved the mean of 16 paired runs by only -0.02: off by default.
    finish_average: float = 0.0
    # Keep every chain inside the [0, 255] range of images after each Langevin step (the model restricted
    # to images). Unbounded, a model whose weights grew can throw chains far outside it in one step of
    # 1.0; the chains' statistics then leave the data's and the weights run away (water and rose did).
    bounded: bool = True
    periodic: bool = True  # chains on the torus and data by their interior (see GenerativeConvNet.boundary)
    # "flatten": subtract each training image's least-squares plane (per channel, over its known pixels)
    # with its mean. The light's slope across a photo is not texture, and no chain on the torus can hold a
    # ramp, so a model that chases it pulls the data's score away from every chain (the bundled wood's 53
    # grey levels across the image ran its learning away). The model learns the texture without the slope,
    # and from several images, without their differences in brightness (each image's plane holds its
    # mean). "keep": learn the images as they are. "auto": flatten texture images whose planes hold more
    # of their variance than everything else does (learn.SHADING_SHARE): wood's 63 %, where water's 19 %
    # and bark's, rose's and brick's 3 % or less keep their shading, which their new samples' ps_z
    # measures (bench/TUNING.md). The learner records which it did.
    shading: str = "auto"
    zero_mean_filters: bool = True  # keep first-layer filters zero-mean (see Learner.project_filters)
    weight_decay: float = 1e-4  # release: 1e-4
    clip: float = 20.0  # SGD: rescale each parameter's gradient so its largest entry is at most this
    # SGD: halve a tensor's step when its gradient reverses, regrow it when it does not (Rprop's rule,
    # tritongcn.learn.ReversalDamping); without it the upper layers' weights bounce at every update.
    damp_reversals: bool = True
    seed: int = 0  # weights' initialisation and Langevin noise
    # 0: maximum likelihood with persistent chains (Algorithm 1). k > 0: k-step contrastive divergence, the
    # chains restart from the observed images at every iteration and all layers are learned at once.
    cd_steps: int = 0
    model: str = "texture"  # "texture": f sums the top responses; "object": one top filter over the whole map
    device: str = "cpu"
    backend: str = "auto"  # kernel backend for the sampler (see tritongcn.kernels)
    precision: str = "auto"  # the sampler's convolutions, one of PRECISION_CHOICES (chains stay float32)

    def check(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        positive_ints = ("image_size", "chains", "langevin_steps", "iterations", "layers", "sample_steps",
                         "finish_langevin_steps")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("sample_size", "chain_size", "lifetime", "persistent_chains", "finish_iterations",
                     "finish_chains"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0 (0: the default rule), got {getattr(self, name)}")
        for name in ("step_size", "sigma", "lr", "clip", "temperature"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not (math.isfinite(self.lr_final) and 0 < self.lr_final <= 1):
            raise ValueError(f"lr_final must be in (0, 1], got {self.lr_final}")
        if not (math.isfinite(self.finish_average) and 0 <= self.finish_average <= 1):
            raise ValueError(f"finish_average must be in [0, 1], got {self.finish_average}")
        if not (math.isfinite(self.lr_decay_start) and 0 <= self.lr_decay_start < 1):
            raise ValueError(f"lr_decay_start must be in [0, 1), got {self.lr_decay_start}")
        if self.shading not in SHADINGS:
            raise ValueError(f"shading must be one of {', '.join(SHADINGS)}, got {self.shading!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.model not in ("texture", "object"):
            raise ValueError(f"model must be 'texture' or 'object', got {self.model!r}")
        if int(self.cd_steps) < 0:
            raise ValueError(f"cd_steps must be >= 0, got {self.cd_steps}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnConfig":
        """The config a model or checkpoint file saved. Files from before a setting existed ran the
        release's way in it (grown layers, chains from the mean image that never restart, chains the
        samples' size), so a missing setting takes that value, not today's default."""
        known = {f.name for f in fields(cls)}
        legacy = {"shading": "keep", "grow_layers": True, "lr_decay_start": 0.0, "start": "zero",
                  "lifetime": 0, "persistent_chains": 0, "bounded": False, "damp_reversals": False,
                  "finish_iterations": 0, "finish_chains": 0,
                  "finish_average": 0.0, "chain_size": d.get("sample_size", 0)}
        settings = {k: v for k, v in d.items() if k in known}
        return cls(**{**{k: v for k, v in legacy.items() if k not in d}, **settings})


# The release's recipe (the paper's Algorithm 1 as the MatConvNet code runs it): layers grown one at a
# time, 300 plain clipped SGD steps each, persistent chains from the mean image, 10 Langevin steps of 0.3.
# The object model and contrastive divergence learn this way; they were not tuned further.
RELEASE = dict(grow_layers=True, optimizer="sgd", lr_final=1.0, lr_decay_start=0.0, chains=4, langevin_steps=10,
               step_size=0.3, iterations=300, start="zero", lifetime=0, persistent_chains=0, bounded=False,
               damp_reversals=False, finish_iterations=0, shading="keep")
QUALITIES = ("default", "high")
# `--quality high`: the same recipe, longer and with twice the chains, and without the finish, which made
# its new samples worse on bark and rose and better on water (bench/TUNING.md).
HIGH = dict(chains=16, persistent_chains=8, iterations=700, finish_iterations=0)


def recipe(model: str = "texture", quality: str = "default", cd_steps: int = 0) -> dict:
    """The LearnConfig settings that differ from its defaults for this kind of run."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    if model == "object" or cd_steps:
        return dict(RELEASE, grow_layers=not cd_steps)
    return dict(HIGH) if quality == "high" else {}
