"""What the runs share: their error types, where their messages go, the device check and model files."""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click


class RunError(Exception):
    """A run cannot go on. The message is one line for the user; `option` names the command-line option
    at fault, when one is. Raised before anything is written, or with the message saying what was kept."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class Stopped(Exception):
    """Ctrl-C or SIGTERM stopped a run at a safe point; its state was saved and the message said how to
    continue. The command line exits with `interrupts.INTERRUPTED_EXIT_CODE`."""


def _to_stderr(message: str) -> None:
    click.echo(message, err=True)


@dataclass
class Reporter:
    """Where a run's messages go: `say` for results (standard output), `warn` for warnings and remarks
    (standard error). Progress bars draw to standard output on the first process only."""

    say: Callable[[str], None] = field(default=click.echo)
    warn: Callable[[str], None] = field(default=_to_stderr)

    def note(self, message: str) -> None:
        """A remark about the input that changes nothing the user must act on."""
        self.warn(f"note: {message}")


def usable_device(device: str) -> str:
    """`device` checked (auto: cuda when available, else cpu); under torchrun, this process's GPU."""
    import torch

    from ..distributed import local_device

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = local_device(device)
    try:
        if torch.device(device).type not in ("cpu", "cuda"):
            raise RuntimeError("tritongcn runs on cpu and cuda devices")
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise RunError(f"{device!r} is not a usable device ({err})", option="--device") from None
    return device


def load_model(model_path: Path):
    """(checkpoint dict, GenerativeConvNet with its weights) of a model file."""
    from ..checkpoints import load_checkpoint
    from ..io import InputError
    from ..model import GenerativeConvNet

    try:
        state = load_checkpoint(model_path)
        # Files from before the net held its sigma keep it in their learning settings only.
        model = GenerativeConvNet.from_config(state["model_config"], sigma=state["config"].get("sigma", 1.0))
        model.load_state_dict(state["model"])
    except InputError as err:
        raise RunError(str(err)) from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a net description or weights that do not fit
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunError(f"{model_path}: damaged model file ({detail})") from None
    return state, model


def stop_everywhere(stop, world, device) -> bool:
    """Whether any process was asked to stop: all of them must save and stop at the same point."""
    if world.size == 1:
        return bool(stop)
    import torch

    from ..distributed import all_reduce_sum

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    all_reduce_sum([flag], world)
    return flag.item() > 0


def finite(value):
    """A float for JSON: rounded, and None where it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None
