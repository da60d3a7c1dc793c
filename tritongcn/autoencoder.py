"""The generative ConvNet as an auto-encoder (the paper's Section 4, Propositions 2 and 3).

On the piece of image space where the activation pattern is δ, f(I) = α + <I, B_δ>, so the energy
E(I) = ||I||² / (2σ²) - f(I) is a quadratic there with its minimum at σ² B_δ. Reading an image I bottom-up
gives its bits δ(I) (the encoding); the top-down pass gated by them gives B(δ(I)) (the decoding), and
`reconstruct` returns σ² B(δ(I)). A local mode of the energy is an image that reconstructs itself:
I = σ² B(δ(I)) (Proposition 2); `descend_to_mode` finds one by deterministic gradient descent.
"""

import torch


@torch.no_grad()
def reconstruct(model, x: torch.Tensor, sigma: float, boundary: str = "zero") -> torch.Tensor:
    """σ² B(δ(x)) per image: the bits of x bottom-up, then the gated top-down deconvolution (float32)."""
    return sigma * sigma * model.grad_input(x, boundary=boundary, precision="float32")


def reconstruction_error(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """||x - reconstruction|| / ||x|| per image: 1 for a model that reconstructs nothing (B = 0); NaN for
    an all-zero image (the mean colour itself), which has no scale to compare with."""
    residual = (x - reconstruction).flatten(1).norm(dim=1)
    norm = x.flatten(1).norm(dim=1)
    return torch.where(norm > 0, residual / norm.clamp_min(torch.finfo(x.dtype).tiny), float("nan"))


@torch.no_grad()
def descend_to_mode(model, x: torch.Tensor, sigma: float, boundary: str = "zero", max_steps: int = 500,
                    tol: float = 1e-6, rate: float = 0.5, progress=None):
    """Deterministic descent on the energy from x: I <- I - rate σ² (I / σ² - B(I)) = (1 - rate) I + rate σ² B(I).

    With the bits fixed, each step closes the fraction `rate` of the distance to that piece's minimum
    σ² B_δ; once the bits stop changing the iteration converges geometrically to a point with
    I = σ² B(δ(I)). A rate below 1 damps the jumps between pieces that a pure fixed-point iteration
    (rate 1) can cycle through. Stops when every image's relative residual ||I - σ² B(δ(I))|| / ||I|| is
    below `tol`. `progress(steps taken, largest residual before the last step)`, if given, is called
    after each step. Returns (modes, residuals, steps taken).
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    current = x.clone()
    for step in range(max_steps + 1):
        target = reconstruct(model, current, sigma, boundary)
        residual = reconstruction_error(current, target)
        if bool((residual.nan_to_num(0.0) < tol).all()) or step == max_steps:
            return current, residual, step
        current.mul_(1 - rate).add_(target, alpha=rate)
        if progress is not None:
            progress(step + 1, residual.max().item())
