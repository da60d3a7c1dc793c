"""Langevin dynamics for the generative ConvNet (eq. 19)."""

import torch

from .kernels import langevin_update


@torch.no_grad()
def langevin(model, x: torch.Tensor, steps: int, step_size: float, sigma: float, seed: int = 0,
             backend: str = "auto", first_step: int = 0, boundary: str = "zero") -> torch.Tensor:
    """Advance the chains `x` (N, C, H, W) by `steps` Langevin steps and return them (x is not modified).

    Step t draws its noise from (seed, counters of step `first_step + t`): a learner that continues
    persistent chains passes the number of steps already taken, so no noise is ever reused.
    `boundary="periodic"` samples on the torus (see GenerativeConvNet): the chains tile seamlessly.
    """
    if steps < 0 or step_size <= 0 or sigma <= 0:
        raise ValueError("langevin needs steps >= 0, step_size > 0 and sigma > 0")
    x = x.detach().clone()
    numel = x.numel()
    for t in range(first_step, first_step + steps):
        grad_f = model.grad_input(x, backend=backend, boundary=boundary)
        x = langevin_update(x, grad_f, step_size, sigma, seed, offset=t * numel, backend=backend)
    return x
