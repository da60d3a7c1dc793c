"""One Langevin step of the generative ConvNet (eq. 19), with the Gaussian noise drawn inside the op.

    x <- x - step_size^2 / 2 * (x / sigma^2 - grad_f) + step_size * Z,   Z ~ N(0, 1)

Noise is addressed by (seed, counter): element e of `x` in a call with `offset` has counter `offset + e`,
so chain n of the call owns the counters from `offset + n * chain_numel`. A caller that gives each chain
the counters of its place in the whole bank gets the same noise whether it advances the chains in one
batch or in chunks. How a backend turns counters into normals is its own: the torch path keys one
generator per chain by its first counter, so equal counters give equal noise on the same backend and
device, and offsets that are not multiples of the chain size give unrelated noise, not shifted noise.
"""

import math

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """A 64-bit mixing function (Steele, Lea, Flood 2014): nearby inputs give unrelated outputs."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def chain_noise_torch(shape, seed: int, offset: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normal noise of `shape` (N, ...) for the torch backend.

    Chain n draws from its own generator keyed by (seed, offset + n * chain_numel), the counter of its
    first element: the noise of a chain depends only on its counters, never on the batch it is in.
    """
    n = shape[0]
    chain_numel = 1
    for s in shape[1:]:
        chain_numel *= s
    device = torch.device(device)
    out = torch.empty(shape, dtype=dtype, device=device)
    gen = torch.Generator(device=device)  # drawn where the chains live: no host-to-device copy
    for i in range(n):
        key = _splitmix64(_splitmix64(int(seed) & _MASK64) ^ ((int(offset) + i * chain_numel) & _MASK64))
        gen.manual_seed(key & ((1 << 63) - 1))
        torch.randn(shape[1:], generator=gen, dtype=dtype, device=device, out=out[i])
    return out


def langevin_update_torch(x, grad_f, step_size, sigma, seed, offset=0, out=None, temperature=1.0):
    """Reference and CPU path, into `out` (which may be `x`) or a new tensor.

    The step is written as x (1 - step_size^2 / (2 sigma^2)) + step_size^2 / 2 grad_f + step_size
    sqrt(temperature) Z and accumulated into the result in place: three passes over the chains and no
    temporary but the noise.
    """
    z = chain_noise_torch(x.shape, seed, offset, dtype=x.dtype, device=x.device)
    half_step = 0.5 * step_size * step_size
    out = torch.mul(x, 1.0 - half_step / (sigma * sigma), out=out)
    return out.add_(grad_f, alpha=half_step).add_(z, alpha=step_size * math.sqrt(temperature))
