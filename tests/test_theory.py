"""The paper's theory, checked on small random nets in float64: the model is piecewise Gaussian (Theorem 1),
its local modes are auto-encodings (Proposition 2), and one-step contrastive divergence follows the
reconstruction error's gradient (Proposition 3)."""

import pytest
import torch

from tritongcn import GenerativeConvNet, LayerSpec
from tritongcn.autoencoder import descend_to_mode, reconstruct, reconstruction_error

LAYERS = [LayerSpec(6, 5, stride=2, padding=1), LayerSpec(8, 3, padding=1), LayerSpec(4, 3)]


def _net(seed=0, init_std=0.3, bias_margin=0.0):
    """Biases of both signs, at least `bias_margin` away from 0."""
    g = torch.Generator().manual_seed(seed)
    net = GenerativeConvNet(2, LAYERS, init_std=init_std, generator=g).double()
    with torch.no_grad():
        for conv in net.convs:
            b = torch.randn(conv.bias.shape, generator=g, dtype=torch.float64) * 0.5
            conv.bias.copy_(torch.sign(b) * (bias_margin + b.abs()))
    return net


def _mode_net(seed):
    # Small weights and biases clear of 0: the energy's minima lie inside pieces. With large random
    # weights (init_std 0.3) the pieces are small and descent from noise ends on a kink between pieces,
    # where E is lowest but I = sigma^2 B(delta(I)) holds on neither side (the residual stays near 0.3).
    return _net(seed, init_std=0.1, bias_margin=0.5)


def _bits(net, x, boundary="zero"):
    return [h > 0 for h in net.relu_responses(x, boundary)]


@pytest.mark.parametrize("boundary", ["zero", "periodic"])
def test_f_is_alpha_plus_inner_product_with_B_on_a_piece(boundary):
    net = _net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 16, 16, generator=g, dtype=torch.float64) * 3
    B = net.grad_input(x, boundary=boundary)
    alpha = net.score(x, boundary) - (x * B).sum(dim=(1, 2, 3))
    checked = 0
    for scale in (1e-8, 1e-5, 1e-3, 1e-2):
        y = x + scale * x.abs().max() * torch.randn(x.shape, generator=g, dtype=torch.float64)
        same_piece = all(torch.equal(a, b) for a, b in zip(_bits(net, x, boundary), _bits(net, y, boundary)))
        linear = alpha + (y * B).sum(dim=(1, 2, 3))
        if same_piece:
            torch.testing.assert_close(net.score(y, boundary), linear, rtol=1e-12, atol=1e-9)
            checked += 1
    assert checked >= 2  # the small perturbations keep every bit
    # Off the piece the linear form is wrong: a perturbation that flips bits breaks it.
    far = x + 3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert not torch.allclose(net.score(far, boundary), alpha + (far * B).sum(dim=(1, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("sigma,seed", [(1.0, 0), (1.0, 1), (0.5, 2)])
def test_descent_ends_at_an_image_that_reconstructs_itself(sigma, seed):
    net = _mode_net(seed)
    x = torch.randn(4, 2, 14, 14, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 5
    modes, residual, steps = descend_to_mode(net, x, sigma, max_steps=2000, tol=1e-10)
    assert steps < 2000 and (residual < 1e-10).all()
    # Proposition 2: I = sigma^2 B(delta(I)), checked afresh, and not the trivial image.
    torch.testing.assert_close(modes, reconstruct(net, modes, sigma), rtol=1e-9, atol=1e-9)
    assert (modes.flatten(1).norm(dim=1) > 0.05).all()
    # Descent lowered the energy, and the mode is a local minimum: nearby images on its piece are higher.
    assert (net.energy(modes, sigma) < net.energy(x, sigma)).all()
    nudged = modes + 1e-6 * torch.randn(modes.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert (net.energy(nudged, sigma) > net.energy(modes, sigma)).all()


def test_descent_from_a_mode_stays_there_and_reconstruction_error_has_its_scale():
    net = _mode_net(seed=2)
    x = torch.randn(2, 2, 14, 14, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 5
    modes, _, _ = descend_to_mode(net, x, 1.0, max_steps=2000, tol=1e-12)
    again, _, steps = descend_to_mode(net, modes, 1.0, tol=1e-10)
    assert steps == 0 and torch.equal(again, modes)
    torch.testing.assert_close(reconstruction_error(x, torch.zeros_like(x)), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="rate"):
        descend_to_mode(net, x, 1.0, rate=1.5)


def _weight_grad(net, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))])


def test_one_step_cd_gradient_points_along_the_reconstruction_gradient():
    # Proposition 3: with I' = I - eps^2/2 (I/sigma^2 - B(I)) + eps Z, the expected CD gradient
    # df(I)/dw - E df(I')/dw is -(eps^2 / (2 sigma^4)) dR/dw with R = ||I - sigma^2 B(I)||^2 / 2, as long as
    # the chains stay on I's piece. The Monte Carlo estimate uses antithetic noise pairs (Z, -Z), whose
    # linear part cancels, so 2000 pairs resolve the eps^2 drift term. With larger steps, chains that cross
    # into other pieces add an O(eps) term from units near 0 that the proposition leaves out (at eps = 0.05
    # on this net the cosine drops to about 0.06), so the check runs at eps = 0.002 and asserts that no
    # chain left the piece.
    net, sigma, eps, pairs = _net(seed=5), 1.0, 0.002, 2000
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 2, 12, 12, generator=g, dtype=torch.float64) * 3

    xr = x.clone().requires_grad_(True)
    B = torch.autograd.grad(net.score(xr).sum(), xr, create_graph=True)[0]
    reconstruction_grad = _weight_grad(net, 0.5 * (xr - sigma**2 * B).pow(2).sum())

    with torch.no_grad():
        drift = x + 0.5 * eps**2 * (B.detach() - x / sigma**2)
        z = torch.randn((pairs,) + x.shape[1:], generator=g, dtype=torch.float64)
        chains = torch.cat([drift + eps * z, drift - eps * z])
    flipped = sum((a != b).any(dim=(1, 2, 3)).sum().item()
                  for a, b in zip(_bits(net, x.expand_as(chains)), _bits(net, chains)))
    assert flipped == 0
    cd_grad = _weight_grad(net, net.score(x).sum() - net.score(chains).mean())

    expected = -(eps**2 / (2 * sigma**4)) * reconstruction_grad
    assert torch.nn.functional.cosine_similarity(cd_grad, expected, dim=0).item() > 0.999
    assert cd_grad.norm().item() == pytest.approx(expected.norm().item(), rel=1e-3)
    # The direction is the reconstruction error's descent direction: a small CD step lowers R.
    reconstruction_grad_norm = reconstruction_grad.norm()
    assert (cd_grad @ reconstruction_grad).item() < -0.99 * cd_grad.norm().item() * reconstruction_grad_norm.item()
