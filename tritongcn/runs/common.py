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


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run at a safe point; its state was saved, and the message says how to
    continue. A KeyboardInterrupt, so that Python code that handles one handles this one; the command line
    prints the message (the first process's, under torchrun) and exits with
    `interrupts.INTERRUPTED_EXIT_CODE`."""

    def __init__(self, message: str, is_main: bool = True):
        super().__init__(message)
        self.is_main = is_main


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


def load_images(inputs, empty: str, note=None) -> tuple:
    """(paths, raw arrays) of the images among `inputs` (files, and the PNG/JPEG files of folders), each
    read by `images.load_image`; a run's error when one cannot be read, or with `empty` when there is none."""
    from ..images import image_paths, load_image
    from ..io import InputError

    try:
        paths = image_paths(inputs)
        if not paths:
            raise InputError(empty)
        return paths, [load_image(path, note=note) for path in paths]
    except InputError as err:
        raise RunError(str(err)) from None


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


def claim_out_dir(out_dir: Path, product: str, state: str | None = None, resume: bool = False,
                  overwrite: bool = False, foreign: dict | None = None) -> None:
    """The one rule for every command's output folder: a new run never mixes with an earlier one's files
    unless told what to do with them. `product` is the file a finished run leaves (--overwrite replaces
    it); `state`, the file a run leaves to be continued (--resume continues it, --overwrite starts again);
    `foreign`, {file: what it is} of another command's results that this one's must not join (choose
    another --out)."""
    if resume and overwrite:
        raise RunError("--resume continues the run in --out and --overwrite replaces it: pass one")
    for name, what in (foreign or {}).items():
        if (out_dir / name).exists():
            raise RunError(f"{out_dir} holds {what} ({name}): choose another --out")
    saved = state is not None and (out_dir / state).exists()
    if (out_dir / product).exists() and not (overwrite or resume and saved):
        more = ", --resume to continue it" if saved else ""
        raise RunError(f"{out_dir} already holds a run's results ({product}): pass --overwrite to replace them"
                       f"{more} or choose another --out")
    if saved and not (resume or overwrite):
        raise RunError(f"{out_dir} holds an interrupted run ({state}): pass --resume to continue it, "
                       "--overwrite to start again, or choose another --out")
    if resume and state is not None and not saved:
        raise RunError(f"nothing to resume: {out_dir / state} does not exist")


def stop_if_asked(stop, world, device, save, message: str) -> None:
    """The one Ctrl-C sequence: if any process was asked to stop, every process saves its state (`save()`)
    at this same point and stops with `Stopped(message)`; the message says how to continue."""
    if not stop_everywhere(stop, world, device):
        return
    from ..distributed import finish

    save()
    finish(world)
    raise Stopped(f"{stop.signal_name or 'stopped with another process'}: {message}", world.is_main)


def chain_start(state: dict, learned, asked: str | None, model_path: Path, report: Reporter) -> str:
    """Where new chains of a model start: `asked`, else where its learning chains started. A model file
    from before tritongcn 0.2.0 holds no spectrum of its training image: its chains start from white noise
    instead, with a note; the spectrum start asked for by name is refused."""
    init = asked or learned.start
    if init == "spectrum" and "start_kernel" not in state:
        message = f"{model_path} holds no spectrum of its training image (a model of tritongcn before 0.2.0)"
        if asked:
            raise RunError(f"{message}: use --init zero or --init noise", option="--init")
        report.note(f"{message}: its chains start from white noise")
        return "noise"
    return init


def stop_everywhere(stop, world, device) -> bool:
    """Whether any process was asked to stop: all of them must save and stop at the same point."""
    if world.size == 1:
        return bool(stop)
    import torch

    from ..distributed import all_reduce_sum

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    all_reduce_sum([flag], world)
    return flag.item() > 0


def sample_name(index: int) -> str:
    """The file name of sample `index` in every command's folder of samples: 00000.png, 00001.png, ..."""
    return f"{index:05d}.png"


def finite(value):
    """A float for JSON: rounded, and None where it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None
