"""`tritongcn sample` as a run: new chains of a learned model, advanced and written out."""

import io
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import LearnConfig, stride_multiple
from ..progress import Progress
from .common import Reporter, RunError, Stopped, load_model, stop_everywhere, usable_device

PNG_LIMIT = 256  # format "auto": one PNG per chain up to this many chains, one samples.npz above
# Frames of evolution.gif after the first. Langevin chains are noisy and GIF compresses noise poorly: a
# frame costs about 45 kB per 225 px chain, so 4 chains make a 4 MB animation (40 frames made 8 MB).
GIF_FRAMES = 20


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

    from ..chains import sampler_bank
    from ..distributed import finish, init_world
    from ..interrupts import stop_requests
    from ..learn import Learner

    report = report or Reporter()
    state, model = load_model(run.model_path)
    learned = LearnConfig.from_dict(state["config"])
    size, periodic = run.size, run.periodic
    if model.top == "fc":  # the object model: aligned images of the size its top filter covers
        if (size and size != model.image_size) or periodic:
            raise RunError(f"the object model samples {model.image_size} px images with zero padding only "
                           "(drop --size and --periodic)")
        size, periodic = model.image_size, False
    periodic = learned.periodic if periodic is None else periodic
    steps = learned.sample_steps if run.steps is None else run.steps
    init = run.init or learned.start
    if init == "spectrum" and "start_kernel" not in state:
        raise RunError(f"{run.model_path} holds no spectrum of its training image (a model of tritongcn "
                       "before 0.2.0): use --init zero or --init noise")
    size = size or learned.sample_size
    stride = model.total_stride()
    if periodic and size % stride:
        size = stride_multiple(size, stride)
        report.say(f"periodic samples need sides that are multiples of {stride}: sampling at {size} px")
    out_dir = run.out_dir or run.model_path.parent / f"samples-{size}"
    if (out_dir / "model.pt").exists():  # its samples/ would mix learn's files with these
        raise RunError(f"{out_dir} holds a learned model (model.pt): choose another --out for the samples")
    if not Learner.finished(learned, state["layer"], state["iteration"]):
        report.note(f"{run.model_path} is the checkpoint of a learning run stopped at layer {state['layer']}, "
                    f"iteration {state['iteration']}: these are samples of a model still learning")
    device = usable_device(run.device)
    world = init_world(torch.device(device))
    state_path = _rank_path(out_dir / "chains.pt", world)  # each process saves and resumes its own shard
    if state_path.exists() and not (run.resume or run.overwrite):
        raise RunError(f"{out_dir} already holds chains ({state_path.name}): pass --resume to continue them, "
                       "--overwrite to start again, or choose another --out")
    if run.resume and not state_path.exists():
        raise RunError(f"nothing to resume: {state_path} does not exist")
    if (out_dir / "stats.json").exists() and not (run.resume or run.overwrite):
        raise RunError(f"{out_dir} already holds samples (stats.json): pass --overwrite to replace them or "
                       "choose another --out")
    first, count = world.shard(run.chains)
    if count == 0:
        raise RunError(f"{run.chains} chains cannot be split between {world.size} processes")
    model = model.to(device)
    mean = state["mean"].float().view(1, -1, 1, 1)
    shape = (model.in_channels, size, size)
    try:
        if run.resume:
            bank = _load_bank(state_path, model, run, shape, device)
            if run.precision != "auto" and run.precision != bank.precision:
                report.say(f"resuming in {bank.precision}, the precision the chains ran in (not "
                           f"{run.precision}), so they continue exactly")
        else:
            bank = sampler_bank(model, learned, state.get("start_kernel"), count, size=size, seed=run.seed,
                                init=init, step_size=run.step_size, periodic=periodic,
                                memory_budget=run.memory_budget, backend=run.backend, device=device,
                                first_chain=first, total_chains=run.chains, precision=run.precision,
                                mean=state["mean"])
    except ValueError as err:
        raise RunError(str(err)) from None
    out_dir.mkdir(parents=True, exist_ok=True)

    bank.notify = report.note
    remaining = max(0, steps - int(bank.steps.min()))
    frames, frame_every = [], max(1, remaining // GIF_FRAMES) if run.gif else 0
    animated = min(run.gif, len(bank)) if world.is_main else 0
    if animated:
        frames.append(_frame(bank, mean, animated))
    start = time.perf_counter()
    done = 0
    quiet = None if world.is_main else io.StringIO()  # one progress display, the first process's
    label = (f"sampling {run.chains} {'chain' if run.chains == 1 else 'chains'} of {size} px from {init} "
             f"({bank.precision})")
    with stop_requests() as stop, Progress(remaining * len(bank), label, file=quiet) as bar:
        while done < remaining:
            # Segments of about a second, so that Ctrl-C is answered soon (the chains do not depend on
            # how their steps are split), cut at the saving and animation points.
            per_step = (time.perf_counter() - start) / done if done else None
            segment = min(remaining - done, max(1, int(1.0 / per_step)) if per_step else 1)
            for every in (run.save_every, frame_every):
                if every:
                    segment = min(segment, every - done % every)

            def progress(advanced, segment=segment):
                done_now = bar.done + advanced * segment  # the rate counts this chunk's steps too
                bar.update(advanced * segment,
                           f"{done_now * world.size / max(time.perf_counter() - start, 1e-9):.0f} chain-steps/s")

            try:
                bank.advance(segment, progress)
            except MemoryError as err:
                _save_bank(bank, state_path)
                raise RunError(f"{err}; the chains so far are in {state_path}") from None
            done += segment
            if animated and done % frame_every == 0:
                frames.append(_frame(bank, mean, animated))
            if run.save_every and done % run.save_every == 0 and done < remaining:
                _save_bank(bank, state_path)
            if done < remaining and stop_everywhere(stop, world, bank.device):
                _save_bank(bank, state_path)
                if world.is_main:
                    report.warn(f"\n{stop.signal_name}: stopped at step {int(bank.steps.max())} of {steps}; "
                                f"continue with the same command and --resume ({state_path})")
                finish(world)
                raise Stopped(stop.signal_name)
    elapsed = time.perf_counter() - start
    _save_bank(bank, state_path)
    fmt = run.fmt if run.fmt != "auto" else "png" if run.chains <= PNG_LIMIT else "npz"
    _write_samples(bank, mean, out_dir, world, fmt, frames, report)
    _write_stats(bank, out_dir, world, run.chains, elapsed, remaining, fmt, bool(frames), report)
    finish(world)
    return out_dir


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
    from ..figures import contact_sheet

    return contact_sheet((bank.x[:count].cpu() + mean).clamp(0, 255))


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
            save_png(image.float(), out_dir / "samples" / f"{bank.first_chain + i:05d}.png")
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


def _write_stats(bank, out_dir, world, chains, elapsed, steps, fmt, animated, report) -> None:
    """stats.json: each chain's energy and activity, their summary and the speed; and the closing line.
    Every process takes part (the statistics are gathered); the first one writes."""
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
                   "chain_steps_per_s": chains * steps / elapsed if elapsed > 0 and steps else None,
                   "processes": world.size, "chunk_size": bank.chunk_size, "summary": summary, "per_chain": merged}
    save_json(report_data, out_dir / "stats.json")
    rate = f", {report_data['chain_steps_per_s']:.0f} chain-steps/s" if report_data["chain_steps_per_s"] else ""
    files = "samples/" if fmt == "png" else "samples.npz"
    report.say(f"{chains} sample{'s' if chains != 1 else ''} in {out_dir} ({files}, grid.png"
               f"{', evolution.gif' if animated else ''}, stats.json){rate}; energy mean "
               f"{summary['energy']['mean']:.4g}, active units {summary['active']['mean']:.1%}")
