"""tritongcn: sampling and learning generative ConvNets (Xie, Lu, Zhu, Wu, ICML 2016)."""

import importlib

__version__ = "0.2.0"

# Public names, imported on first use so that `tritongcn --help` does not wait for torch.
_PUBLIC = {
    "GenerativeConvNet": ".model",
    "LayerSpec": ".geometry",
    "LearnConfig": ".config",
    "Learner": ".learn",
    "langevin": ".sampler",
    "ChainBank": ".chains",
    "complete": ".completion",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module 'tritongcn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
