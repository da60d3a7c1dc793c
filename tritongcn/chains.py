"""A bank of persistent Langevin chains, resident on one device and advanced in memory-sized chunks.

Every chain has its own step count, and its noise is addressed by (its index in the whole bank, its step)
through the counters of `tritongcn.langevin`: a bank gives the same chains whether it is advanced in one
batch or in chunks, in one process or sharded over several, in one run or resumed from a saved state.
"""

import warnings

import torch

from .config import LearnConfig
from .kernels import mask_shape, resolve_backend
from .model import GenerativeConvNet
from .precision import resolve_precision
from .sampler import checked_graph_steps, langevin, out_of_memory
from .starts import STARTS, start_chains

FLOAT_BYTES = 4


def bits_bytes_per_chain(model: GenerativeConvNet, shape, boundary: str = "periodic") -> int:
    """Bytes of the packed masks one bottom-up pass keeps for a chain of `shape` (C, H, W): all that the
    top-down pass reads of it."""
    return sum(FLOAT_BYTES * mask_shape(s)[1] * mask_shape(s)[2]
               for s in model.layer_shapes((1,) + tuple(shape), boundary))


def bytes_per_chain(model: GenerativeConvNet, shape, boundary: str = "periodic") -> int:
    """Bytes of work in flight per chain during one Langevin step (its resident state not counted).

    The bottom-up pass keeps every layer's bits and has one layer's float input and output alive at a
    time; the top-down pass has one gradient arriving and one leaving; the step then holds the input
    gradient and the noise. Counted from the layer shapes at the model's current depth.
    """
    shapes = model.layer_shapes((1,) + tuple(shape), boundary)
    numels = [shape[0] * shape[1] * shape[2]] + [s[1] * s[2] * s[3] for s in shapes]
    in_flight = max(a + b for a, b in zip(numels, numels[1:]))
    return bits_bytes_per_chain(model, shape, boundary) + FLOAT_BYTES * (in_flight + 2 * numels[0])


def default_memory_budget(device: torch.device) -> int:
    """Bytes the bank may use for work in flight: half of what the device has free (2 GiB if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 2 << 30


class ChainBank:
    """N chains of shape (C, H, W) for `model`, as one fp32 tensor `x` on `device`.

    `first_chain` and `total_chains` place this bank inside a larger one (a shard of a bank spread over
    processes): chain i here is chain first_chain + i of the whole, and draws that chain's noise.
    Chains start where `init` says (`tritongcn.starts`: "zero", the mean image of mean-subtracted data;
    "noise", N(0, sigma^2); "spectrum", random-phase noise with the training images' spectrum, whose
    kernel `start_kernel` the model file holds) or from given images (`images`, mean-subtracted);
    `restart(indices)` draws chains from that start again. `mean` (C,), the colour subtracted from the
    images, keeps the chains inside the [0, 255] range of images after every step (see `langevin`).
    `precision="bfloat16"` computes the input gradient in bfloat16 (the chains stay float32); "auto" picks it
    where it is the fast path (precision.resolve_precision). `known` = (values, mask) holds some pixels of every
    chain fixed (mean-subtracted values (N or 1, C, H, W), boolean mask (N or 1, 1 or C, H, W), set where
    known): the chains sample the rest given them (`langevin`), as completion and expansion do.
    A chunk that runs out of memory is halved and tried again (the chains do not depend on the chunking);
    `notify(message)` is told once (default: a RuntimeWarning). `graph_steps` k > 1 runs the Triton backend's
    steps k at a time, on CUDA as one recorded CUDA graph (`langevin`): the same chains, fewer launches; None
    (the default) leaves it to `langevin`, which records small chunks on a GPU; 0 never.
    """

    def __init__(self, model: GenerativeConvNet, chains: int, shape, *, boundary: str = "periodic",
                 step_size: float = 0.3, sigma: float = 1.0, seed: int = 0, init: str = "zero",
                 images: torch.Tensor | None = None, memory_budget: int | None = None, backend: str = "auto",
                 device=None, first_chain: int = 0, total_chains: int | None = None, precision: str = "auto",
                 notify=None, start_kernel: torch.Tensor | None = None, mean: torch.Tensor | None = None,
                 known: tuple | None = None, graph_steps: int | None = None):
        if chains < 1:
            raise ValueError(f"a chain bank needs at least one chain, got {chains}")
        if step_size <= 0 or sigma <= 0:
            raise ValueError("step_size and sigma must be positive")
        if init not in STARTS:
            raise ValueError(f"init must be one of {', '.join(STARTS)}, got {init!r}")
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or shape[0] != model.in_channels:
            raise ValueError(f"chains of shape {shape} do not fit a model of {model.in_channels} input channels")
        self.total_chains = chains if total_chains is None else total_chains
        if first_chain < 0 or first_chain + chains > self.total_chains:
            raise ValueError(f"chains {first_chain}..{first_chain + chains - 1} do not fit in a bank of "
                             f"{self.total_chains}")
        self.model, self.boundary, self.init = model, boundary, init
        self.shape, self.start_kernel = shape, start_kernel  # one chain's (C, H, W); the spectrum start's
        self.mean = None if mean is None else mean.detach().float().reshape(-1).cpu()
        self.bounds = None if mean is None else (-self.mean, 255.0 - self.mean)
        self.step_size, self.sigma, self.seed = float(step_size), float(sigma), int(seed)
        self.first_chain = first_chain
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        # Resolved once, not at every kernel call; and so a saved bank resumes in the precision it ran in,
        # whatever machine resumes it.
        self.backend = resolve_backend(backend, self.device)
        self.precision = resolve_precision(precision, self.device, backend)
        # None: langevin's default for each chunk. Checked here, so a bad value is refused before any work.
        self.graph_steps = checked_graph_steps(graph_steps)
        self.memory_budget = memory_budget or default_memory_budget(self.device)
        self.chunk_limit = None  # set when a chunk ran out of memory: the largest chunk since
        self.notify = notify or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))
        model.check_size((chains,) + shape, boundary)
        self.known = None if known is None else self._check_known(known, chains, shape)
        self.steps = torch.zeros(chains, dtype=torch.int64)  # Langevin steps taken by each chain
        if images is not None:
            if tuple(images.shape) != (chains,) + shape:
                raise ValueError(f"start images of shape {tuple(images.shape)} for {chains} chains of {shape}")
            self.x = images.to(self.device, torch.float32).clone()
        else:
            self.x = self._start(0, chains, step=0)
        self._hold_known(0, chains)

    def _check_known(self, known, chains: int, shape) -> tuple:
        values, mask = known
        c, h, w = shape
        if (values.dim() != 4 or values.shape[0] not in (1, chains) or tuple(values.shape[1:]) != shape
                or mask.dim() != 4 or mask.shape[0] not in (1, chains) or mask.shape[1] not in (1, c)
                or tuple(mask.shape[2:]) != (h, w)):
            raise ValueError(f"known values {tuple(values.shape)} and mask {tuple(mask.shape)} do not fit "
                             f"{chains} chains of {shape}")
        return values.to(self.device, torch.float32), mask.to(self.device, torch.bool)

    def _known_slice(self, start: int, stop: int):
        """The known (values, mask) of chains start .. stop - 1, or None."""
        if self.known is None:
            return None
        return tuple(t if t.shape[0] == 1 else t[start:stop] for t in self.known)

    def _hold_known(self, start: int, stop: int) -> None:
        known = self._known_slice(start, stop)
        if known is not None:
            self.x[start:stop] = torch.where(known[1], known[0], self.x[start:stop])

    def __len__(self) -> int:
        return self.x.shape[0]

    def _start(self, start: int, stop: int, step: int) -> torch.Tensor:
        """Chains start .. stop - 1 of this bank drawn from its start, as (re)started at Langevin `step`."""
        return start_chains(self.init, (stop - start,) + self.shape,
                            sigma=self.sigma, seed=self.seed, first_chain=self.first_chain + start,
                            total_chains=self.total_chains, step=step, kernel=self.start_kernel, device=self.device)

    @torch.no_grad()
    def restart(self, indices) -> None:
        """Draw the chains at `indices` (of this bank) from the start again. Their step counts run on, so
        the new start and the Langevin noise that follows are drawn from counters no chain has used."""
        for i in indices:
            self.x[i:i + 1] = self._start(i, i + 1, step=int(self.steps[i]))
            self._hold_known(i, i + 1)

    @property
    def chunk_size(self) -> int:
        """Chains advanced together: as many as the memory budget holds, at least one."""
        per_chain = bytes_per_chain(self.model, self.x.shape[1:], self.boundary)
        return max(1, min(len(self), self.memory_budget // per_chain, self.chunk_limit or len(self)))

    def _runs(self, chunk: int):
        """(start, end, step) of consecutive chains with equal step counts, at most `chunk` long."""
        steps = self.steps.tolist()
        start = 0
        while start < len(steps):
            end = start + 1
            while end < len(steps) and end - start < chunk and steps[end] == steps[start]:
                end += 1
            yield start, end, steps[start]
            start = end

    @torch.no_grad()
    def advance(self, steps: int, progress=None, noise: bool = True, temperature: float = 1.0) -> None:
        """Move every chain `steps` Langevin steps; `progress(chains_done)` is called after each chunk.
        `noise=False`: steps without the noise term, a deterministic descent; `temperature`: the noise's
        variance as a multiple of the model's (see `langevin`)."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if steps == 0:
            return
        for start, end, first_step in self._runs(len(self)):
            self._advance_run(start, end, first_step, steps, progress, noise, temperature)

    @torch.no_grad()
    def advance_to(self, step: int, progress=None, stop=None, chunk: int | None = None) -> bool:
        """Move every chain that is behind Langevin step `step` up to it, each by the steps it lacks (a stop
        can leave chains at different counts), at most `chunk` chains at a time. `stop()` is asked before
        each chunk: if it answers True the rest stay where they are, and so does the answer, False.
        `progress(chain_steps)` is called after each chunk."""
        for start, end, first_step in self._runs(len(self)):
            if first_step < step:
                steps = step - first_step
                told = None if progress is None else (lambda chains, steps=steps: progress(chains * steps))
                if not self._advance_run(start, end, first_step, steps, told, stop=stop, chunk=chunk):
                    return False
        return True

    def _advance_run(self, start: int, end: int, first_step: int, steps: int, progress=None, noise: bool = True,
                     temperature: float = 1.0, stop=None, chunk: int | None = None) -> bool:
        """Chains start .. end - 1, all at `first_step`, moved `steps` steps in chunks that fit the memory
        (and `chunk`); False if `stop()` ended it early."""
        while start < end:
            if stop is not None and stop():
                return False
            stop_at = min(end, start + min(self.chunk_size, chunk or len(self)))
            try:
                self.x[start:stop_at] = langevin(self.model, self.x[start:stop_at], steps, self.step_size,
                                                 self.sigma, seed=self.seed, backend=self.backend,
                                                 first_step=first_step, boundary=self.boundary,
                                                 chain_start=self.first_chain + start,
                                                 total_chains=self.total_chains, precision=self.precision,
                                                 bounds=self.bounds, known=self._known_slice(start, stop_at),
                                                 noise=noise, temperature=temperature,
                                                 graph_steps=self.graph_steps)
            except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
                if not out_of_memory(err):
                    raise
                self._halve_chunk(stop_at - start, err)  # the chunk's chains are untouched: try again
                continue
            self.steps[start:stop_at] += steps
            if progress is not None:
                progress(stop_at - start)
            start = stop_at
        return True

    def _halve_chunk(self, chunk: int, err: BaseException) -> None:
        if chunk == 1:
            raise MemoryError(f"one chain of {tuple(self.x.shape[1:])} does not fit in the memory of "
                              f"{self.device} ({str(err).splitlines()[0]})") from err
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # what the failed chunk had reserved
        if self.chunk_limit is None:
            self.notify(f"out of memory with {chunk} chains at once on {self.device}: halving the chunk "
                        "until it fits (the samples are the same)")
        self.chunk_limit = chunk // 2

    @torch.no_grad()
    def stats(self) -> dict:
        """Per chain: energy E(I), the norm of the input gradient B(I) = df/dI, the share of active units."""
        energy, grad_norm, active = [], [], []
        for start in range(0, len(self), self.chunk_size):
            x = self.x[start:start + self.chunk_size]
            energy.append(self.model.energy(x, self.sigma, self.boundary))
            grad = self.model.grad_input(x, backend=self.backend, boundary=self.boundary,
                                         precision=self.precision)
            grad_norm.append(grad.flatten(1).norm(dim=1))
            active.append(self.model.active_fraction(x, self.boundary))
        return {"energy": torch.cat(energy).cpu(), "grad_norm": torch.cat(grad_norm).cpu(),
                "active": torch.cat(active).cpu()}

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: chains, step counts, settings (plain types and tensors)."""
        return {"x": self.x.detach().cpu(), "steps": self.steps.clone(), "boundary": self.boundary,
                "step_size": self.step_size, "sigma": self.sigma, "seed": self.seed,
                "first_chain": self.first_chain, "total_chains": self.total_chains, "precision": self.precision,
                **({} if self.mean is None else {"mean": self.mean.clone()}),
                **({} if self.known is None else {"known": tuple(t.cpu() for t in self.known)})}

    @classmethod
    def from_state(cls, model: GenerativeConvNet, state: dict, **kwargs) -> "ChainBank":
        """The bank `state_dict` saved, continuing where it stopped (budget, backend, device from kwargs)."""
        x = state["x"]
        bank = cls(model, x.shape[0], x.shape[1:], boundary=state["boundary"], step_size=state["step_size"],
                   sigma=state["sigma"], seed=state["seed"], images=x, first_chain=state["first_chain"],
                   total_chains=state["total_chains"], precision=state.get("precision", "float32"),
                   mean=state.get("mean"), known=state.get("known"), **kwargs)
        bank.steps = state["steps"].clone().to(torch.int64)
        return bank


def sampler_bank(model: GenerativeConvNet, config: LearnConfig, start_kernel: torch.Tensor | None, chains: int, *,
                 size: int | None = None, seed: int = 0, init: str | None = None, step_size: float | None = None,
                 periodic: bool | None = None, mean: torch.Tensor | None = None, **kwargs) -> ChainBank:
    """New chains of a learned model, drawn the way it was learned for: from its learning chains' start,
    with its Langevin step, at its samples' size, on the torus when it learned there, inside the image
    range around its `mean` colour when it learned so (`config.bounded`). Each setting can be overridden;
    `kwargs` go to ChainBank (budget, backend, device, shard, precision)."""
    periodic = config.on_torus() if periodic is None else periodic
    size = size or config.sample_size
    return ChainBank(model, chains, (model.in_channels, size, size), boundary="periodic" if periodic else "zero",
                     step_size=step_size or config.step_size, sigma=model.sigma, seed=seed,
                     init=init or config.start, start_kernel=start_kernel,
                     mean=mean if config.bounded else None, **kwargs)
