import pytest
import torch

from tritongcn import ChainBank, GenerativeConvNet, LayerSpec, langevin


def _dead_net():
    """A net whose units are all inactive, so B(I) = 0 and the chain is a pure Gaussian random walk."""
    net = GenerativeConvNet(1, [LayerSpec(3, 3, 1, 1)])
    with torch.no_grad():
        net.convs[0].bias.fill_(-1e6)
    return net


def test_langevin_is_deterministic_per_seed():
    net = GenerativeConvNet.texture(3)
    x = torch.randn(3, 3, 40, 37) * 30
    a = langevin(net, x, 3, 0.3, 1.0, seed=5)
    assert torch.equal(a, langevin(net, x, 3, 0.3, 1.0, seed=5))
    assert not torch.equal(a, langevin(net, x, 3, 0.3, 1.0, seed=6))
    assert not torch.equal(a, x)


def test_langevin_continues_where_it_stopped():
    net = GenerativeConvNet.texture(1)
    x = torch.randn(2, 1, 36, 36) * 30
    half = langevin(net, x, 2, 0.3, 1.0, seed=1)
    assert torch.equal(langevin(net, half, 2, 0.3, 1.0, seed=1, first_step=2), langevin(net, x, 4, 0.3, 1.0, seed=1))


def test_one_step_noise_has_mean_zero_and_variance_eps_squared():
    eps = 0.7
    x = langevin(_dead_net(), torch.zeros(256, 1, 16, 16), 1, eps, 1.0, seed=0).double().flatten()
    n = x.numel()
    assert abs(x.mean().item()) < 5 * eps / n**0.5
    assert abs(x.var().item() / eps**2 - 1) < 5 * (2 / n) ** 0.5


def test_chains_reach_the_reference_gaussian_with_the_discretisation_variance():
    # With B = 0, x <- a x + eps Z with a = 1 - eps^2 / (2 sigma^2): stationary variance eps^2 / (1 - a^2).
    eps, sigma, steps = 1.0, 1.5, 60
    x = langevin(_dead_net(), torch.zeros(64, 1, 16, 16), steps, eps, sigma, seed=2).double()
    a = 1 - eps**2 / (2 * sigma**2)
    expected = eps**2 * (1 - a ** (2 * steps)) / (1 - a**2)
    n = x.numel()
    assert abs(x.mean().item()) < 5 * expected**0.5 / n**0.5
    assert abs(x.var().item() / expected - 1) < 5 * (2 / n) ** 0.5


def test_chains_advanced_in_chunks_equal_one_batch():
    net = GenerativeConvNet.texture(1)
    x = torch.randn(5, 1, 36, 36) * 30
    whole = langevin(net, x, 3, 0.3, 1.0, seed=4, boundary="periodic")
    parts = [langevin(net, x[a:b], 3, 0.3, 1.0, seed=4, boundary="periodic", chain_start=a, total_chains=5)
             for a, b in ((0, 2), (2, 5))]
    assert torch.equal(torch.cat(parts), whole)
    # Without their place in the bank, two chunks would share noise: the first chain of each chunk
    # would get chain 0's noise.
    alone = langevin(net, x[2:5], 3, 0.3, 1.0, seed=4, boundary="periodic")
    assert not torch.equal(alone, whole[2:5])


def test_chain_start_outside_the_bank_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        langevin(_dead_net(), torch.zeros(3, 1, 8, 8), 1, 0.3, 1.0, chain_start=2, total_chains=4)


def test_temperature_scales_the_noise_variance_and_nothing_else():
    # With B = 0 the chain is x <- a x + eps sqrt(T) Z: the stationary variance is T times the model's,
    # and the same noise counters give exactly sqrt(T) times the excursion.
    eps, sigma, steps = 1.0, 1.0, 12  # a^24 = 6e-8: stationary
    runs = {t: langevin(_dead_net(), torch.zeros(64, 1, 16, 16), steps, eps, sigma, seed=3, backend="torch",
                        precision="float32", temperature=t).double() for t in (1.0, 4.0)}
    torch.testing.assert_close(runs[4.0], 2 * runs[1.0])
    a = 1 - eps**2 / (2 * sigma**2)
    n = runs[4.0].numel()
    assert abs(runs[4.0].var().item() / (4 * eps**2 / (1 - a**2)) - 1) < 5 * (2 / n) ** 0.5
    with pytest.raises(ValueError, match="temperature"):
        langevin(_dead_net(), torch.zeros(1, 1, 8, 8), 1, eps, sigma, temperature=0.0)


def test_steps_are_replayed_from_a_graph_by_default_only_for_small_banks_of_the_triton_kernels_on_a_gpu():
    # The rule itself, with no GPU: the recorded blocks' chains are tested in test_triton_kernels and, on a
    # GPU, test_cuda.
    from tritongcn.sampler import GRAPH_BLOCK, GRAPH_MAX_PIXELS, default_graph_steps
    small, large = (GRAPH_MAX_PIXELS // 4096, 3, 64, 64), (GRAPH_MAX_PIXELS // 4096 + 1, 1, 64, 64)
    assert default_graph_steps(small, "cuda", "triton") == GRAPH_BLOCK > 1
    assert default_graph_steps(small, torch.device("cuda", 1), "triton") == GRAPH_BLOCK
    assert default_graph_steps(large, "cuda", "triton") == 0
    assert default_graph_steps(small, "cuda", "torch") == 0
    assert default_graph_steps(small, "cpu", "triton") == 0


@pytest.mark.parametrize("graph_steps", [-1, 1.5, "10", "ten", [10]])
def test_a_graph_block_that_is_not_a_whole_number_is_refused(graph_steps):
    net = GenerativeConvNet(1, [LayerSpec(2, 3, 1, 1)])
    with pytest.raises(ValueError, match="graph_steps"):
        langevin(net, torch.zeros(1, 1, 4, 4), 1, 0.3, 1.0, graph_steps=graph_steps)
    with pytest.raises(ValueError, match="graph_steps"):  # by a bank when it is built, not at its first step
        ChainBank(net, 1, (1, 4, 4), graph_steps=graph_steps)
