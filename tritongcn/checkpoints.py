"""Model files and saved chains: written atomically with their format and version, read back without
running any code from them and checked against their schema."""

from pathlib import Path

import torch

from .io import InputError, atomic_save

CHECKPOINT_FORMAT = "tritongcn.model"


def save_checkpoint(state: dict, path, fmt: str = CHECKPOINT_FORMAT) -> None:
    """Save a checkpoint dict (plain types and tensors only, so weights_only loading works) atomically,
    with its format and the package version (see `load_checkpoint`)."""
    from . import __version__

    payload = {"format": fmt, "version": __version__, **state}
    atomic_save(lambda tmp: torch.save(payload, tmp), path)


# What a model file and a saved chain bank must hold, and of which type: anything else is foreign,
# damaged or tampered with.
CHECKPOINT_SCHEMA = {"format": str, "version": str, "config": dict, "model_config": dict, "model": dict,
                     "optimizer": dict, "chains": torch.Tensor, "layer": int, "iteration": int,
                     "langevin_steps_done": int, "seconds": float, "mean": torch.Tensor}
# Optional in a model file: what model files of earlier versions do not have.
CHECKPOINT_OPTIONAL = {"start_kernel": torch.Tensor}
CHAINS_FORMAT = "tritongcn.chains"
CHAINS_SCHEMA = {"format": str, "x": torch.Tensor, "steps": torch.Tensor, "boundary": str, "step_size": float,
                 "sigma": float, "seed": int, "first_chain": int, "total_chains": int, "precision": str}
# Bounded chains: the colour subtracted from them.
CHAINS_OPTIONAL = {"mean": torch.Tensor}


def _version_tuple(version: str) -> tuple:
    return tuple(int(part) for part in version.split("."))


def load_checkpoint(path, fmt: str = CHECKPOINT_FORMAT) -> dict:
    """Load a model file (or, with fmt=CHAINS_FORMAT, saved chains) without running any code from it
    (torch's weights_only loader refuses any pickled object but plain containers, numbers, strings and
    tensors), then check it against its schema and the package version. Raises InputError with a
    one-line reason."""
    from . import __version__

    path = Path(path)
    what, schema = ("tritongcn model", CHECKPOINT_SCHEMA) if fmt == CHECKPOINT_FORMAT else \
        ("saved tritongcn chains", CHAINS_SCHEMA)
    if not path.is_file():
        raise InputError(f"{path}: no such {'model' if fmt == CHECKPOINT_FORMAT else 'chains'} file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign, damaged or unsafe files
        reason = "it holds objects other than tensors and plain data" if "weights_only" in str(err) else \
            "damaged, or not a file that torch saved"
        raise InputError(f"{path}: not a readable {what} file ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise InputError(f"{path}: not a {what} file")
    for key, kind in schema.items():
        if not isinstance(state.get(key), kind) or (kind is int and isinstance(state[key], bool)):
            got = "missing" if key not in state else type(state[key]).__name__
            raise InputError(f"{path}: damaged {what} file ({key!r} should be {kind.__name__}, is {got})")
    if "version" in state:  # chains saved before they carried it are read as they are
        try:
            newer = _version_tuple(str(state["version"])) > _version_tuple(__version__)
        except ValueError:
            raise InputError(f"{path}: damaged {what} file (version {state['version']!r})") from None
        if newer:
            raise InputError(f"{path}: written by tritongcn {state['version']}, newer than this {__version__}; "
                             "upgrade tritongcn to read it")
    optional = CHECKPOINT_OPTIONAL if fmt == CHECKPOINT_FORMAT else CHAINS_OPTIONAL
    for key, kind in optional.items():
        if key in state and not isinstance(state[key], kind):
            raise InputError(f"{path}: damaged {what} file ({key!r} should be {kind.__name__}, is "
                             f"{type(state[key]).__name__})")
    tensors = list(state["model"].values()) if fmt == CHECKPOINT_FORMAT else [state["x"]]
    tensors += [state[key] for key, kind in optional.items() if key in state and kind is torch.Tensor]
    if not all(isinstance(t, torch.Tensor) and torch.isfinite(t).all() for t in tensors):
        raise InputError(f"{path}: damaged {what} file (values that are not finite tensors)")
    return state
