"""The GPU tier: the Triton kernels compiled for a CUDA GPU, not interpreted. Skipped without one; run with
`TRITON_INTERPRET=0 python -m pytest -m cuda` (bench/gpu_check.sh does, before its benchmarks)."""

import pytest
import torch
import torch.nn.functional as F

from conftest import CONV_CASES, assert_close, tolerance
from tritongcn import ChainBank, GenerativeConvNet, LayerSpec
from tritongcn.kernels import conv_relu_mask, langevin_update, masked_conv_transpose, unpack_mask

pytestmark = pytest.mark.cuda
CASES = CONV_CASES[::5]  # every fifth awkward shape: each compiles kernels of its own
SMALL_TEXTURE_NET = [LayerSpec(7, 5, stride=3, padding=1), LayerSpec(9, 3, padding=1), LayerSpec(5, 3, padding=1)]


@pytest.fixture(autouse=True)
def _ieee_float32():
    """float32 products as IEEE, not TF32, so the float64 reference pins them to float32's rounding."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("n,c,h,w,k,ks,stride,pad", CASES)
def test_compiled_kernels_match_float64_references(n, c, h, w, k, ks, stride, pad):
    x, wt, b = (torch.randn(n, c, h, w, device="cuda"), torch.randn(k, c, ks, ks, device="cuda"),
                torch.randn(k, device="cuda"))
    y, mask = conv_relu_mask(x, wt, b, stride, pad, backend="triton")
    pre = F.conv2d(x.double(), wt.double(), b.double(), stride=stride, padding=pad)
    assert_close(y, pre.clamp_min(0), reduce_dim=c * ks * ks)
    clear = pre.abs() > tolerance(torch.float32, c * ks * ks)  # away from ties the bits are exact
    assert torch.equal(unpack_mask(mask, pre.shape)[clear], (pre > 0)[clear])
    g = torch.randn(pre.shape, device="cuda")
    ours = masked_conv_transpose(g, mask, wt, stride, pad, x.shape, backend="triton")
    x64 = x.double().requires_grad_()
    relu = torch.relu(F.conv2d(x64, wt.double(), b.double(), stride=stride, padding=pad))
    (expected,) = torch.autograd.grad((g.double() * relu).sum(), x64)
    assert_close(ours, expected, reduce_dim=k * ks * ks)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_chains_on_the_gpu_repeat_with_the_seed_and_ignore_the_chunk_size(precision):
    net = GenerativeConvNet(3, SMALL_TEXTURE_NET, init_std=0.1, generator=torch.Generator().manual_seed(4)).cuda()

    def run(budget):
        bank = ChainBank(net, 5, (3, 18, 15), backend="triton", init="noise", seed=2, precision=precision,
                         memory_budget=budget, device="cuda")
        bank.advance(3)
        return bank

    whole, again, chunked = run(1 << 30), run(1 << 30), run(1)
    assert chunked.chunk_size == 1
    assert torch.equal(whole.x, again.x) and torch.equal(whole.x, chunked.x)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_steps_replayed_from_a_cuda_graph_give_the_same_chains(precision, monkeypatch):
    # 7 steps in recorded blocks of 3: two replays of one graph and one plain step, then a call of 6 steps
    # (a new recording, the counters continued); the texture net at a real chain size, with a learned
    # model's bounds. Replays are counted, so a path that never records cannot pass.
    replays = []
    replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda graph: (replays.append(1), replay(graph))[1])
    net = GenerativeConvNet.texture(3).cuda()
    mean = torch.tensor([120.0, 110.0, 100.0])
    banks = [ChainBank(net, 6, (3, 63, 63), backend="triton", init="noise", seed=3, precision=precision,
                       device="cuda", mean=mean, graph_steps=k) for k in (0, 3)]
    for bank in banks:
        bank.advance(7)
        bank.advance(6)
    assert len(replays) == 4
    assert torch.equal(banks[0].x, banks[1].x)


def test_graph_replays_hold_known_pixels_and_follow_each_chunks_counters(monkeypatch):
    # The object net (its top filter expanded inside the recording), known pixels, no noise at the end, and
    # a bank advanced one chain at a time, each chunk's recording with its own place in the bank.
    net = GenerativeConvNet.object(1, 25, generator=torch.Generator().manual_seed(2)).cuda()
    values = torch.full((1, 1, 25, 25), 10.0)
    mask = torch.zeros(1, 1, 25, 25, dtype=torch.bool)
    mask[..., :8] = True
    banks = [ChainBank(net, 3, (1, 25, 25), boundary="zero", backend="triton", init="noise", seed=1,
                       device="cuda", precision="float32", known=(values, mask), memory_budget=budget,
                       graph_steps=k) for k, budget in ((0, 1 << 30), (2, 1))]
    assert banks[1].chunk_size == 1
    for bank in banks:
        bank.advance(4)
        bank.advance(4, noise=False)
    assert torch.equal(banks[0].x, banks[1].x)
    assert torch.equal(banks[1].x[:, :, :, :8], torch.full((3, 1, 25, 8), 10.0, device="cuda"))


def test_in_kernel_noise_is_standard_normal_and_independent_of_the_drift():
    x = torch.zeros(64, 3, 64, 64, device="cuda")
    z = langevin_update(x, torch.zeros_like(x), step_size=1.0, sigma=1.0, seed=5, backend="triton")
    n = z.numel()
    # Mean and variance of 786432 draws: 5 standard errors either way.
    assert abs(z.mean().item()) < 5 / n ** 0.5
    assert abs(z.var().item() - 1) < 5 * (2 / n) ** 0.5
    assert abs((z > 0).float().mean().item() - 0.5) < 5 * 0.5 / n ** 0.5
    drift = torch.full_like(x, 3.0)
    moved = langevin_update(x, drift, step_size=1.0, sigma=1.0, seed=5, backend="triton")
    assert_close(moved - z, torch.full_like(x, 1.5).double(), scale=3.0)  # the same noise, the drift added
