"""Learning settings. Kept free of torch so that the command line can read defaults instantly."""

import math
from dataclasses import asdict, dataclass, fields

# The sampler's precision: "auto" is bfloat16 convolutions on CPUs with native bfloat16 and float32 elsewhere
# (model.resolve_precision); the chains and the Langevin update are float32 in every case.
PRECISION_CHOICES = ("auto", "float32", "bfloat16")


def image_sample_size(image_size: int, stride: int) -> int:
    """The default side of texture samples: the training image's, rounded up to a multiple of the net's
    total stride (periodic chains need it). 224 px data and the texture net's stride 3 give 225 px."""
    return -(-int(image_size) // stride) * stride


@dataclass
class LearnConfig:
    image_size: int = 224  # training image: shorter side resized to this, then a centred square crop
    # Side of the synthesized chains (the model is convolutional: any size works). 0: the training image's
    # side, rounded up to the net's total stride, so that each chain's torus holds as much texture as the
    # data and large structures (flower heads, ripples) fit as many times as they do there.
    sample_size: int = 0
    chains: int = 4  # persistent Langevin chains
    langevin_steps: int = 10  # L, Langevin steps per weight update (release: 10)
    step_size: float = 0.3  # Langevin eps on the [0, 255] pixel scale (release: 0.3)
    sigma: float = 1.0  # reference Gaussian's standard deviation (release: 1)
    iterations: int = 300  # weight updates per grown layer (with cd_steps: in all)
    layers: int = 3  # layers of the texture net grown one at a time
    lr: float = 0.001  # learning rate (release SGD: 0.0008 to 0.001); biases use twice this
    lr_final: float = 1.0  # lr at the end of each layer's iterations, as a fraction of lr (cosine); 1: constant
    optimizer: str = "sgd"  # "sgd": the release's plain SGD; "adam": Adam with beta1 0.5 (the group's later code)
    periodic: bool = True  # chains on the torus and data by their interior (see GenerativeConvNet.boundary)
    zero_mean_filters: bool = True  # keep first-layer filters zero-mean (see Learner.project_filters)
    weight_decay: float = 1e-4  # release: 1e-4
    clip: float = 20.0  # rescale each parameter's gradient so its largest entry is at most this
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
        positive_ints = ("image_size", "chains", "langevin_steps", "iterations", "layers")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if int(self.sample_size) < 0:
            raise ValueError(f"sample_size must be at least 1 (or 0: the training image's), got {self.sample_size}")
        for name in ("step_size", "sigma", "lr", "clip"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not (math.isfinite(self.lr_final) and 0 < self.lr_final <= 1):
            raise ValueError(f"lr_final must be in (0, 1], got {self.lr_final}")
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.model not in ("texture", "object"):
            raise ValueError(f"model must be 'texture' or 'object', got {self.model!r}")
        if int(self.cd_steps) < 0:
            raise ValueError(f"cd_steps must be >= 0, got {self.cd_steps}")
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
