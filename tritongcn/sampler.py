"""Langevin dynamics for the generative ConvNet (eq. 19), free or with some pixels known."""

import warnings

import torch

from .kernels import langevin_update, resolve_backend
from .kernels.launch import interpreting
from .precision import resolve_precision

# Steps replayed from a CUDA graph, GRAPH_BLOCK at a time, by default when a call's chains hold at most
# GRAPH_MAX_PIXELS pixels (chains x height x width): such banks spend their time launching kernels, which a
# replay does once per block. On an H200 (bench/README.md) blocks of 10 ran those banks 1.0x to 4.4x as fast
# as steps launched one by one (1.6x to 4.4x in bfloat16, the GPU's default), and larger ones, which keep
# the GPU busy, 0.93x to 1.16x.
GRAPH_BLOCK, GRAPH_MAX_PIXELS = 10, 2**19


def default_graph_steps(shape, device, backend: str) -> int:
    """The steps per recorded block `langevin` runs chains of `shape` in when not told: GRAPH_BLOCK for
    small banks of the Triton kernels on a CUDA GPU, else 0 (every step launched on its own)."""
    small = shape[0] * shape[-2] * shape[-1] <= GRAPH_MAX_PIXELS
    return GRAPH_BLOCK if small and backend == "triton" and torch.device(device).type == "cuda" else 0


def checked_graph_steps(graph_steps):
    """`graph_steps` as `langevin` takes it (None, or a whole number >= 0), or a ValueError naming it."""
    if graph_steps is None:
        return None
    try:
        whole = int(graph_steps) == graph_steps and graph_steps >= 0
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ValueError(f"graph_steps must be None or a whole number >= 0, got {graph_steps!r}")
    return int(graph_steps)


@torch.no_grad()
def langevin(model, x: torch.Tensor, steps: int, step_size: float, sigma: float, seed: int = 0,
             backend: str = "auto", first_step: int = 0, boundary: str = "zero", chain_start: int = 0,
             total_chains: int | None = None, precision: str = "auto",
             bounds: tuple | None = None, known: tuple | None = None, noise: bool = True,
             temperature: float = 1.0, graph_steps: int | None = None) -> torch.Tensor:
    """Advance the chains `x` (N, C, H, W) by `steps` Langevin steps and return them (x is not modified).

    Noise counters: step t of chain n (of `total_chains`, default N) starts at (t * total_chains + n) *
    chain_numel. A learner that continues its chains passes the steps already taken as `first_step`, so no
    noise is reused; a caller that advances a bank in chunks passes each chunk's `chain_start` and the bank's
    `total_chains`, and gets the chains one big batch would. `boundary="periodic"` samples on the torus.
    `precision="bfloat16"` computes B(I) in bfloat16 (GenerativeConvNet.grad_input); the chains and the
    update stay float32 ("auto": `precision.resolve_precision`). `bounds` = (low, high), per channel (C,),
    keeps the chains in the box of valid images after every step (projected Langevin dynamics: the model
    restricted to images whose pixels lie in [0, 255], mean-subtracted).

    `known` = (values, mask) samples the other pixels given some: where the boolean `mask` is set, the
    chains hold `values` before and after every step (both broadcast against x). The energy's gradient at
    the unknown pixels does not depend on whether the known ones move, so this is exact Langevin dynamics
    of p(unknown | known). `noise=False` drops the noise: each step descends the energy, closing
    step_size^2 / (2 sigma^2) of the way to the mode of the current ReLU piece. `temperature` T scales the
    noise's variance: the chains sample p(I)^(1/T), whose modes they leave more easily. `graph_steps` k > 1
    (Triton backend) runs the steps k at a time as one recorded block (`_run_blocks`), the same chains; None
    records blocks where that was measured faster (`default_graph_steps`); 0 never does.
    """
    if steps < 0 or step_size <= 0 or sigma <= 0:
        raise ValueError("langevin needs steps >= 0, step_size > 0 and sigma > 0")
    graph_steps = checked_graph_steps(graph_steps)
    total_chains = _checked_total(x, chain_start, total_chains)
    precision = resolve_precision(precision, x.device, backend)  # both once, not at every kernel call
    backend = resolve_backend(backend, x.device)
    if graph_steps is None:
        graph_steps = default_graph_steps(x.shape, x.device, backend)
    x = x.detach().clone()
    step = _step_function(model, x, step_size, sigma, seed, backend, boundary, precision, bounds, known, noise,
                          temperature)
    chain_numel = x[0].numel() if x.shape[0] else 0
    if graph_steps > 1 and backend == "triton" and steps >= graph_steps and x.shape[0]:
        blocks = steps // graph_steps
        counter = torch.full((), (first_step * total_chains + chain_start) * chain_numel, dtype=torch.int64,
                             device=x.device)
        _run_blocks(step, x, counter, total_chains * chain_numel, graph_steps, blocks)
        first_step, steps = first_step + blocks * graph_steps, steps - blocks * graph_steps
    for t in range(first_step, first_step + steps):
        step(x, (t * total_chains + chain_start) * chain_numel)
    return x


def _checked_total(x: torch.Tensor, chain_start: int, total_chains: int | None) -> int:
    """The bank's size (default: the chains given), refused if the chains given do not fit in it."""
    total_chains = x.shape[0] if total_chains is None else total_chains
    if chain_start < 0 or chain_start + x.shape[0] > total_chains:
        raise ValueError(f"chains {chain_start}..{chain_start + x.shape[0] - 1} do not fit in a bank of "
                         f"{total_chains}")
    return total_chains


def _step_function(model, x: torch.Tensor, step_size: float, sigma: float, seed: int, backend: str, boundary: str,
                   precision: str, bounds: tuple | None, known: tuple | None, noise: bool, temperature: float):
    """`step(x, offset)`, one Langevin step of the chains in place as `langevin` describes; `offset`, an int
    or a device-side counter, is step t's (t * total_chains + chain_start) * chain_numel. Holds the known
    pixels of `x` now, as every step does after its update."""
    if bounds is not None:
        low, high = (torch.as_tensor(b, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for b in bounds)
    if known is not None:
        values, mask = known[0].to(x.device, x.dtype), known[1].to(x.device, torch.bool)
        torch.where(mask, values, x, out=x)
    half_step = 0.5 * step_size * step_size

    def step(x: torch.Tensor, offset) -> None:
        grad_f = model.grad_input(x, backend=backend, boundary=boundary, precision=precision)
        if noise:
            langevin_update(x, grad_f, step_size, sigma, seed, offset=offset, out=x, backend=backend,
                            temperature=temperature)
        else:
            x.mul_(1.0 - half_step / (sigma * sigma)).add_(grad_f, alpha=half_step)
        if bounds is not None:
            torch.maximum(x, low, out=x)
            torch.minimum(x, high, out=x)
        if known is not None:
            torch.where(mask, values, x, out=x)

    return step


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation failure: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return "out of memory" in text or "can't allocate memory" in text


def _run_blocks(step, x: torch.Tensor, counter: torch.Tensor, counter_stride: int, block_steps: int,
                blocks: int) -> None:
    """`blocks` times `block_steps` calls of step(x, counter), the counter advanced by `counter_stride`
    after each: each step's noise counter is read from the device-side tensor `counter` that the block
    advances. On a CUDA GPU the block is recorded once as a CUDA graph and replayed, one launch for k steps
    instead of about a dozen launches and their Python per step, which is what small banks spend their time
    on; elsewhere (and for a single block, which a recording would only slow down) it runs as recorded,
    eagerly, so the interpreter tests the same arithmetic."""

    def block(x: torch.Tensor, counter: torch.Tensor) -> None:
        for _ in range(block_steps):
            step(x, counter)
            counter.add_(counter_stride)

    graph = _record(block, step, x, counter) if x.is_cuda and blocks > 1 and not interpreting() else None
    for _ in range(blocks):
        if graph is None:
            block(x, counter)
        else:
            graph.replay()


def _record(block, step, x: torch.Tensor, counter: torch.Tensor):
    """block(x, counter), a run of step(x, counter), recorded as a CUDA graph that replays on the current
    stream, or None (with a warning) when the recording fails for another reason than memory: the steps then
    run unrecorded, and nothing is lost, since a recording runs nothing."""
    with torch.cuda.device(x.device):
        # One step on copies first, on the current stream that later steps and replays use: it compiles
        # every kernel a step launches and lays out the weights, neither of which may happen while a graph
        # records. Every step of a block launches the same kernels, so one is enough, and a call of s steps
        # spends one extra step on it rather than a whole block.
        step(x.clone(), counter.clone())
        graph, side = torch.cuda.CUDAGraph(), torch.cuda.Stream()  # a graph records on a stream of its own
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                graph.capture_begin()
                try:
                    block(x, counter)  # records the launches on x and the counter; runs nothing
                finally:
                    graph.capture_end()
        except (MemoryError, RuntimeError) as err:
            for cause in (err, err.__context__):  # capture_end's own error can hide the first one
                if cause is not None and out_of_memory(cause):
                    raise cause from None  # the bank halves its chunk
            warnings.warn(f"recording Langevin steps as a CUDA graph failed, running them one by one: "
                          f"{(str(err).splitlines() or [type(err).__name__])[0]}", RuntimeWarning, stacklevel=4)
            return None
    return graph
