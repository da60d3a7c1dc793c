"""`tritongcn profile` as a run: each kernel call site of a Langevin step timed, against the autograd loop."""

from dataclasses import dataclass
from pathlib import Path

from ..config import LearnConfig, stride_multiple
from .common import Reporter, RunError, load_model, usable_device


@dataclass
class ProfileRun:
    model_path: Path | None = None  # None: the texture net with random weights
    chains: int = 16
    size: int = 112
    steps: int = 5
    periodic: bool | None = None  # None: the model's own boundary; periodic without a model, as learn makes them
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    trace: Path | None = None  # a Chrome trace of one more step
    compare: bool = True  # time the autograd loop too


def profile(run: ProfileRun, report: Reporter | None = None) -> dict:
    """Time the steps and say the table; return `profile_steps`'s report."""
    import torch

    from ..precision import resolve_precision
    from ..profile import peak_probes, profile_steps, random_texture_net, report_lines

    report = report or Reporter()
    device = usable_device(run.device)
    if run.model_path is None:
        model, source, periodic = random_texture_net(3), "texture net, random weights", LearnConfig().on_torus()
    else:
        state, model = load_model(run.model_path)
        source, periodic = str(run.model_path), LearnConfig.from_dict(state["config"]).on_torus()
    periodic = periodic if run.periodic is None else run.periodic
    size = run.size
    if periodic and size % model.total_stride():
        size = stride_multiple(size, model.total_stride())
        report.say(f"periodic chains need sides that are multiples of {model.total_stride()}: profiling at {size} px")
    boundary = "periodic" if periodic else "zero"
    try:
        precision = resolve_precision(run.precision, device, run.backend)
        model = model.to(device)
        x = torch.randn(run.chains, model.in_channels, size, size, device=device,
                        generator=torch.Generator(device=device).manual_seed(0)) * 30
        gflops_peak, gbs_peak = peak_probes(torch.device(device), precision)
        result = profile_steps(model, x, run.steps, boundary=boundary, backend=run.backend, precision=precision,
                               trace=run.trace, compare=run.compare)
    except ValueError as err:
        raise RunError(str(err)) from None
    report.say(f"{source}: {run.chains} chain{'s' if run.chains != 1 else ''} of {size} px, {run.steps} steps, "
               f"{boundary} boundary, {precision}, {device}; peaks measured here: {gflops_peak:.0f} GFLOP/s "
               f"({precision} matmul), {gbs_peak:.0f} GB/s (copy)")
    for line in report_lines(result, gflops_peak, gbs_peak):
        report.say(line)
    if run.trace:
        report.say(f"trace: {run.trace}")
    return result
