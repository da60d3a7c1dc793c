import pytest
import torch

from conftest import assert_close
from tritongcn import GenerativeConvNet, LayerSpec
from tritongcn.chains import ChainBank, bytes_per_chain

SHAPE = (3, 12, 12)


def _net():
    net = GenerativeConvNet(3, [LayerSpec(8, 5, 2, 1), LayerSpec(6, 3, 1, 1)], init_std=0.05,
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.convs[0].bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return net


def _bank(net, chains=7, **kwargs):
    kwargs.setdefault("init", "noise")
    return ChainBank(net, chains, SHAPE, step_size=0.5, sigma=2.0, seed=3, **kwargs)


def test_bytes_per_chain_is_the_hand_count():
    net = _net()
    # Periodic 12x12: layer 1 (stride 2) gives 8 x 6 x 6, layer 2 gives 6 x 6 x 6.
    bits = 4 * (8 * 2 + 6 * 2)  # ceil(36 / 32) = 2 words per feature map
    in_flight = max(3 * 144 + 8 * 36, 8 * 36 + 6 * 36)
    assert bytes_per_chain(net, SHAPE, "periodic") == bits + 4 * (in_flight + 2 * 3 * 144)


def test_the_memory_budget_sets_the_chunk_size():
    net = _net()
    per_chain = bytes_per_chain(net, SHAPE, "periodic")
    assert _bank(net, memory_budget=3 * per_chain + 1).chunk_size == 3
    assert _bank(net, memory_budget=1).chunk_size == 1  # never zero
    assert _bank(net, memory_budget=10**12).chunk_size == 7


def test_chunks_give_the_chains_of_one_batch():
    net = _net()
    whole, chunked = _bank(net), _bank(net, memory_budget=3 * bytes_per_chain(net, SHAPE, "periodic"))
    assert chunked.chunk_size == 3
    whole.advance(4)
    chunked.advance(4)
    # Equal up to the last bits the convolution library's batch-size-dependent algorithms leave.
    assert_close(chunked.x, whole.x, scale=whole.x.abs().max())
    assert chunked.steps.tolist() == [4] * 7


def test_a_saved_bank_resumes_exactly():
    net = _net()
    straight = _bank(net)
    straight.advance(5)
    first = _bank(net)
    first.advance(2)
    state = first.state_dict()
    resumed = ChainBank.from_state(net, state)
    resumed.advance(3)
    assert torch.equal(resumed.x, straight.x)
    assert resumed.steps.tolist() == [5] * 7


def test_chains_are_deterministic_per_seed_and_differ_between_seeds():
    net = _net()
    a, b = _bank(net), _bank(net)
    c = ChainBank(net, 7, SHAPE, step_size=0.5, sigma=2.0, seed=4, init="noise")
    for bank in (a, b, c):
        bank.advance(2)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)


def test_shards_of_a_bank_are_the_bank():
    net = _net()
    whole = _bank(net)
    shards = [_bank(net, chains=b - a, first_chain=a, total_chains=7) for a, b in ((0, 4), (4, 7))]
    assert torch.equal(torch.cat([s.x for s in shards]), whole.x)  # the starting noise too
    whole.advance(3)
    for s in shards:
        s.advance(3)
    assert_close(torch.cat([s.x for s in shards]), whole.x, scale=whole.x.abs().max())


def test_starting_noise_is_normal_with_the_reference_sigma():
    z = ChainBank(_net(), 64, SHAPE, sigma=2.0, init="noise").x.double().flatten()
    assert abs(z.mean().item()) < 5 * 2.0 / z.numel() ** 0.5
    assert abs(z.std().item() - 2.0) < 0.05
    assert not ChainBank(_net(), 2, SHAPE, init="zero").x.any()


def test_chains_with_different_step_counts_advance_in_their_own_runs():
    net = _net()
    bank = _bank(net)
    bank.steps[2:5] = 10  # say these were resumed from a longer run
    assert list(bank._runs(bank.chunk_size)) == [(0, 2, 0), (2, 5, 10), (5, 7, 0)]
    bank.advance(1)
    assert bank.steps.tolist() == [1, 1, 11, 11, 11, 1, 1]


def test_stats_report_energy_gradient_norm_and_activity_per_chain():
    net = _net()
    bank = _bank(net)
    stats = bank.stats()
    assert all(v.shape == (7,) for v in stats.values())
    torch.testing.assert_close(stats["energy"], net.energy(bank.x, 2.0, "periodic"))
    grad = net.grad_input(bank.x, boundary="periodic", precision=bank.precision)
    torch.testing.assert_close(stats["grad_norm"], grad.flatten(1).norm(dim=1))
    assert ((stats["active"] > 0) & (stats["active"] < 1)).all()


def test_bad_banks_are_refused():
    net = _net()
    with pytest.raises(ValueError, match="at least one chain"):
        ChainBank(net, 0, SHAPE)
    with pytest.raises(ValueError, match="input channels"):
        ChainBank(net, 2, (1, 12, 12))
    with pytest.raises(ValueError, match="multiples"):
        ChainBank(net, 2, (3, 13, 12))
    with pytest.raises(ValueError, match="init"):
        ChainBank(net, 2, SHAPE, init="data")
    with pytest.raises(ValueError, match="do not fit"):
        ChainBank(net, 3, SHAPE, first_chain=2, total_chains=4)


def _seam_statistic(x):
    """Per chain: mean |difference| of horizontal neighbours across the seams of a 2x2 tiling, minus the same
    across interior column pairs; and the t-statistic of its mean over chains."""
    tiled = x.repeat(1, 1, 2, 2)
    w = x.shape[-1]
    diffs = (tiled[..., 1:] - tiled[..., :-1]).abs().mean(dim=(1, 2))  # (chains, 2w - 1)
    seam = diffs[:, w - 1]
    interior = torch.cat([diffs[:, : w - 1], diffs[:, w:]], dim=1).mean(dim=1)
    d = (seam - interior).double()
    return d.mean() / (d.std() / len(d) ** 0.5)


def test_periodic_samples_tile_without_a_seam():
    net = GenerativeConvNet(1, [LayerSpec(8, 5, 1, 0), LayerSpec(4, 3, 1, 0)], init_std=0.3,
                            generator=torch.Generator().manual_seed(2))
    bank = ChainBank(net, 48, (1, 16, 16), boundary="periodic", step_size=0.5, sigma=1.0, init="noise", seed=5)
    bank.advance(20)
    # On the torus every column pair, the seam's included, has the same distribution: no seam to find.
    assert abs(_seam_statistic(bank.x)) < 4
    # The statistic does find a seam where there is one: rows of a random walk do not wrap around.
    walks = torch.randn(48, 1, 16, 16, generator=torch.Generator().manual_seed(0)).cumsum(dim=-1)
    assert _seam_statistic(walks) > 4
