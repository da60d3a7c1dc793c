"""`tritongcn sample` as a run: new chains of a learned model, advanced and written out."""

import io
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import LearnConfig, stride_multiple
from ..progress import Progress
from .common import (Reporter, RunError, chain_start, claim_out_dir, load_model, sample_name, stop_if_asked,
                     usable_device)

PNG_LIMIT = 256  # format "auto": one PNG per chain up to this many chains, one samples.npz above
# Frames of evolution.gif after the first. Langevin chains are noisy and GIF compresses noise poorly: a
# frame costs about 45 kB per 225 px chain, so 4 chains make a 4 MB animation (40 frames made 8 MB).
GIF_FRAMES = 20
# Its frames are shrunk to at most this many pixels across: 8 chains of 330 px made a 17 MB animation.
GIF_WIDTH = 512


@dataclass
class SampleRun:
    """One `tritongcn sample`. None: as the model was learned (its samples' steps, size, start, step
    size and boundary)."""

    model_path: Path
    chains: int = 16
    steps: int | None = None  # Langevin steps per chain in all; with resume, the steps taken count
    size: int | None = None
    out_dir: Path | None = None  # default: the model's folder / samples-<size>
    init: str | None = None
    seed: int = 0
    step_size: float | None = None
    memory_budget: int | None = None  # bytes for work in flight; default: half the free memory
    resume: bool = False
    save_every: int | None = None  # save chains.pt every this many steps
    fmt: str = "auto"  # png, npz or auto
    gif: int = 0  # chains animated into evolution.gif
    periodic: bool | None = None
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    overwrite: bool = False


def sample(run: SampleRun, report: Reporter | None = None) -> Path:
    """Draw the samples, write them to the output folder and return it. Ctrl-C or SIGTERM saves the
    chains (chains.pt) at the end of the current segment of steps and raises `Stopped`."""
    import torch

    from ..distributed import finish, init_world

    report = report or Reporter()
    state, model = load_model(run.model_path)
    learned = LearnConfig.from_dict(state["config"])
    size, periodic = _size_and_boundary(run, model, learned, report)
    out_dir = run.out_dir or run.model_path.parent / f"samples-{size}"
    if not learned.finished(state["layer"], state["iteration"]):
        report.note(f"{run.model_path} is the checkpoint of a learning run stopped at layer {state['layer']}, "
                    f"iteration {state['iteration']}: these are samples of a model still learning")
    device = usable_device(run.device)
    world = init_world(torch.device(device))
    state_path = _rank_path(out_dir / "chains.pt", world)  # each process saves and resumes its own shard
    claim_out_dir(out_dir, "stats.json", state_path.name, resume=run.resume, overwrite=run.overwrite,
                  foreign={"model.pt": "a learned model"})  # learn's folder, whose samples/ these would join
    init = chain_start(state, learned, run.init, run.model_path, report)
    draw = dict(size=size, periodic=periodic, init=init, seed=run.seed, step_size=run.step_size, device=device,
                memory_budget=run.memory_budget, backend=run.backend, precision=run.precision)
    bank = _bank(run, model.to(device), learned, state, draw, world, state_path, report)
    out_dir.mkdir(parents=True, exist_ok=True)
    bank.notify = report.note
    steps = learned.sample_steps if run.steps is None else run.steps
    label = (f"sampling {run.chains} {'chain' if run.chains == 1 else 'chains'} of {size} px from {init} "
             f"({bank.precision})")
    frames, elapsed, work = _advance(run, bank, steps, state["mean"], world, state_path, label)
    _save_bank(bank, state_path)
    fmt = run.fmt if run.fmt != "auto" else "png" if run.chains <= PNG_LIMIT else "npz"
    _write_samples(bank, state["mean"].float().view(1, -1, 1, 1), out_dir, world, fmt, frames, report)
    _write_stats(bank, out_dir, world, run.chains, elapsed, work, fmt, bool(frames), report)
    finish(world)
    return out_dir


def _size_and_boundary(run: SampleRun, model, learned: LearnConfig, report: Reporter) -> tuple:
    """(side, periodic) of the samples: as asked, else as learned; the object model draws its images' size
    with zero padding only; periodic sides are rounded up to the net's stride."""
    size, periodic = run.size, run.periodic
    if model.top == "fc":  # the object model: aligned images of the size its top filter covers
        if (size and size != model.image_size) or periodic:
            raise RunError(f"the object model samples {model.image_size} px images with zero padding only "
                           "(drop --size and --periodic)")
        return model.image_size, False
    periodic = learned.on_torus() if periodic is None else periodic
    size = size or learned.sample_size
    stride = model.total_stride()
    if periodic and size % stride:
        size = stride_multiple(size, stride)
        report.say(f"periodic samples need sides that are multiples of {stride}: sampling at {size} px")
    return size, periodic


def _bank(run: SampleRun, model, learned: LearnConfig, state: dict, draw: dict, world, state_path: Path,
          report: Reporter):
    """This process's shard of the chains: the saved ones with --resume, else new ones drawn as the model was
    learned for, with the `draw` settings (sampler_bank's) resolved from the options."""
    from ..chains import sampler_bank

    first, count = world.shard(run.chains)
    if count == 0:
        raise RunError(f"{run.chains} chains cannot be split between {world.size} processes")
    try:
        if not run.resume:
            return sampler_bank(model, learned, state.get("start_kernel"), count, first_chain=first,
                                total_chains=run.chains, mean=state["mean"], **draw)
        bank = _load_bank(state_path, model, run, (model.in_channels, draw["size"], draw["size"]), draw["device"])
    except ValueError as err:
        raise RunError(str(err)) from None
    if run.precision != "auto" and run.precision != bank.precision:
        report.say(f"resuming in {bank.precision}, the precision the chains ran in (not {run.precision}), so "
                   "they continue exactly")
    return bank


def _advance(run: SampleRun, bank, steps: int, mean, world, state_path: Path, label: str):
    """Run every chain to step `steps` in segments of about a second, in chunks of chains of about a second
    each (the chains do not depend on how their steps are split), so that Ctrl-C is answered within about a
    second; segments end at the saving and animation points. (GIF frames, seconds, chain-steps run here)."""
    from ..interrupts import stop_requests

    first = int(bank.steps.min())
    work = int((steps - bank.steps).clamp_min(0).sum())
    frame_every = max(1, (steps - first) // GIF_FRAMES) if run.gif else 0
    animated = min(run.gif, len(bank)) if world.is_main else 0
    mean = mean.float().view(1, -1, 1, 1)
    frames = [_frame(bank, mean, animated)] if animated else []
    start = time.perf_counter()
    quiet = None if world.is_main else io.StringIO()  # one progress display, the first process's
    with stop_requests() as stop, Progress(work, label, file=quiet) as bar:
        while int(bank.steps.min()) < steps:
            done = int(bank.steps.min()) - first
            segment = _segment(steps - first - done, done, time.perf_counter() - start, (run.save_every, frame_every))
            chunk = _chunk(len(bank), segment, bar.done, time.perf_counter() - start)
            whole = _advance_segment(bank, first + done + segment, chunk, bar, start, world, state_path, stop)
            done += segment
            if whole and animated and done % frame_every == 0:
                frames.append(_frame(bank, mean, animated))
            if whole and run.save_every and done % run.save_every == 0 and first + done < steps:
                _save_bank(bank, state_path)
            if not whole or first + done < steps:
                stop_if_asked(stop, world, bank.device, lambda: _save_bank(bank, state_path),
                              f"stopped at step {int(bank.steps.min())} of {steps}; continue with the same "
                              f"command and --resume ({state_path})")
    return frames, time.perf_counter() - start, work


def _segment(left: int, done: int, seconds: float, cuts) -> int:
    """Steps in the next segment: about a second's worth at the pace so far (one step first, to time it),
    at most `left`, and ending at the next multiple of each of `cuts` (saving, animation) that is set."""
    segment = min(left, max(1, int(done / seconds)) if done and seconds > 0 else 1)
    for every in cuts:
        if every:
            segment = min(segment, every - done % every)
    return segment


def _chunk(chains: int, segment: int, chain_steps: int, seconds: float) -> int:
    """Chains to advance `segment` steps together: about a second's worth at the pace so far (all of them
    until it is known), so that a stop is looked at about every second even when one step takes longer."""
    if not chain_steps or seconds <= 0:
        return chains
    return max(1, min(chains, int(chain_steps / seconds / segment)))


def _advance_segment(bank, step: int, chunk: int, bar, start: float, world, state_path: Path, stop) -> bool:
    """Every chain to `step`, `chunk` chains at a time, the progress line told after each chunk; False if
    Ctrl-C stopped it between chunks."""
    def progress(chain_steps):
        done_now = bar.done + chain_steps  # the rate counts this chunk's steps too
        bar.update(chain_steps, f"{done_now * world.size / max(time.perf_counter() - start, 1e-9):.0f} chain-steps/s")

    try:
        return bank.advance_to(step, progress, stop=lambda: bool(stop), chunk=chunk)
    except MemoryError as err:
        _save_bank(bank, state_path)
        raise RunError(f"{err}; the chains so far are in {state_path}") from None


def _rank_path(path: Path, world) -> Path:
    return path if world.size == 1 else path.with_name(f"{path.stem}.rank{world.rank}{path.suffix}")


def _save_bank(bank, path) -> None:
    from ..checkpoints import CHAINS_FORMAT, save_checkpoint

    save_checkpoint(bank.state_dict(), path, fmt=CHAINS_FORMAT)


def _load_bank(path, model, run: SampleRun, shape, device):
    from ..chains import ChainBank
    from ..checkpoints import CHAINS_FORMAT, load_checkpoint
    from ..io import InputError

    try:
        state = load_checkpoint(path, fmt=CHAINS_FORMAT)
    except InputError as err:
        raise RunError(str(err)) from None
    if state["total_chains"] != run.chains or tuple(state["x"].shape[1:]) != shape:
        raise RunError(f"{path} holds {state['total_chains']} chains of {tuple(state['x'].shape[1:])}: "
                       "resume with the same --chains and --size")
    return ChainBank.from_state(model, state, memory_budget=run.memory_budget, backend=run.backend, device=device)


def _frame(bank, mean, count):
    """The first `count` chains as one frame of the animation, at most GIF_WIDTH pixels across."""
    from PIL import Image

    from ..figures import contact_sheet

    sheet = contact_sheet((bank.x[:count].cpu() + mean).clamp(0, 255))
    if sheet.width > GIF_WIDTH:
        sheet = sheet.resize((GIF_WIDTH, round(sheet.height * GIF_WIDTH / sheet.width)), Image.Resampling.BOX)
    return sheet


def _write_samples(bank, mean, out_dir, world, fmt, frames, report) -> None:
    """This process's chains as images (one PNG each, or its shard of samples.npz); the first process also
    writes the contact sheet of the first 64 chains of the whole bank and the animation."""
    import numpy as np
    import torch

    from ..distributed import gather_objects
    from ..figures import contact_sheet, save_gif
    from ..images import save_png
    from ..io import atomic_save

    images = (bank.x.cpu() + mean).clamp(0, 255).round().to(torch.uint8)
    if fmt == "png":
        (out_dir / "samples").mkdir(exist_ok=True)
        for i, image in enumerate(images):
            save_png(image.float(), out_dir / "samples" / sample_name(bank.first_chain + i))
    else:
        array = images.permute(0, 2, 3, 1).numpy()

        def write(tmp):
            with open(tmp, "wb") as f:  # a file object: given a name, numpy would append ".npz" to it
                np.savez_compressed(f, samples=array, first_chain=bank.first_chain)

        atomic_save(write, _rank_path(out_dir / "samples.npz", world))
    shown = gather_objects(images[:64], world)
    if world.is_main:
        save_png(contact_sheet(torch.cat(shown)[:64].float()), out_dir / "grid.png")
        if frames:
            save_gif(frames, out_dir / "evolution.gif")


def _write_stats(bank, out_dir, world, chains, elapsed, work, fmt, animated, report) -> None:
    """stats.json: each chain's energy and activity, their summary and the speed (`work`: the chain-steps
    this process ran); and the closing line. Every process takes part (the statistics are gathered); the
    first one writes."""
    import numpy as np

    from ..distributed import barrier, gather_objects
    from ..io import save_json

    per_chain = {key: value.tolist() for key, value in bank.stats().items()}
    all_stats = gather_objects(per_chain, world)
    barrier(world)
    if not world.is_main:
        return
    merged = {key: sum((s[key] for s in all_stats), []) for key in per_chain}
    summary = {key: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
               for key, v in merged.items()}
    report_data = {"chains": chains, "steps": int(bank.steps.max()), "seconds": round(elapsed, 3),
                   "chain_steps_per_s": work * world.size / elapsed if elapsed > 0 and work else None,
                   "processes": world.size, "chunk_size": bank.chunk_size, "summary": summary, "per_chain": merged}
    save_json(report_data, out_dir / "stats.json")
    rate = f", {report_data['chain_steps_per_s']:.0f} chain-steps/s" if report_data["chain_steps_per_s"] else ""
    files = "samples/" if fmt == "png" else "samples.npz"
    report.say(f"{chains} sample{'s' if chains != 1 else ''} in {out_dir} ({files}, grid.png"
               f"{', evolution.gif' if animated else ''}, stats.json){rate}; energy mean "
               f"{summary['energy']['mean']:.4g}, active units {summary['active']['mean']:.1%}")
