"""tritongcn: sampling and learning generative ConvNets (Xie, Lu, Zhu, Wu, ICML 2016)."""

__version__ = "0.1.0"

from .learn import LearnConfig, Learner  # noqa: E402
from .model import GenerativeConvNet, LayerSpec  # noqa: E402
from .sampler import langevin  # noqa: E402

__all__ = ["GenerativeConvNet", "LayerSpec", "LearnConfig", "Learner", "langevin", "__version__"]
