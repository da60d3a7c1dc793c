"""The GPU tier: the Triton kernels compiled for a CUDA GPU, not interpreted, against float64 torch in each
arithmetic they run (IEEE fp32, TF32, bf16). Skipped without one; run with
`TRITON_INTERPRET=0 python -m pytest -m cuda` (bench/gpu_check.sh does, before its benchmarks)."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import CONV_CASES, TF32, assert_close, tolerance
from tritongcn import ChainBank, GenerativeConvNet, LayerSpec
from tritongcn.kernels import (conv_output_shape, conv_relu_mask, langevin_update, masked_conv_transpose,
                               pack_mask, unpack_mask)
from tritongcn.kernels.launch import activation_format
from tritongcn.kernels.torus import torus_padding, wrap_pad
from tritongcn.profile import random_texture_net

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parent.parent
CASES = CONV_CASES[::5]  # every fifth awkward shape: each compiles kernels of its own
SMALL_TEXTURE_NET = [LayerSpec(7, 5, stride=3, padding=1), LayerSpec(9, 3, padding=1), LayerSpec(5, 3, padding=1)]
# name: (the dtype the kernels are given, TF32 on, the arithmetic conftest's rule is looked up by).
ARITHMETICS = {"ieee": (torch.float32, False, torch.float32), "tf32": (torch.float32, True, TF32),
               "bf16": (torch.bfloat16, False, torch.bfloat16)}
# (chains, channels, height, width, filters, kernel, stride, padding, periodic): the texture net's layers at
# 224 px, zero-padded and on the torus; then awkward ones: odd sides, filters past a mask word, one channel,
# kernels as large as the input, strides that do not divide the side.
REAL_LAYERS = [(3, 3, 224, 224, 100, 15, 3, 2, False), (3, 100, 75, 75, 64, 5, 1, 2, False),
               (3, 64, 75, 75, 30, 3, 1, 2, False), (3, 3, 222, 222, 100, 15, 3, 0, True),
               (3, 100, 74, 74, 64, 5, 1, 0, True), (3, 64, 74, 74, 30, 3, 1, 0, True)]
AWKWARD_LAYERS = [(1, 1, 5, 5, 1, 3, 1, 1, False), (5, 3, 17, 13, 33, 7, 3, 2, False),
                  (2, 5, 9, 31, 130, 4, 2, 3, False), (7, 3, 15, 15, 100, 15, 3, 0, False),
                  (3, 7, 12, 9, 5, 5, 3, 0, True), (2, 64, 11, 7, 30, 3, 1, 0, True),
                  (33, 3, 33, 30, 100, 15, 3, 0, True), (4, 100, 19, 23, 64, 5, 1, 2, False)]
# (need_output, bias) of conv_relu_mask and the upstream gradients of masked_conv_transpose; the first
# of each are the sampler's (see transpose_variant).
CONV_VARIANTS = [(True, True), (True, False), (False, True), (False, False)]
TRANSPOSE_VARIANTS = ["ones", "gated", "nchw"]


def layer_case(case, arith, every=False):
    n, c, h, w, k, ks, stride, pad, periodic = case
    where = "torus" if periodic else f"pad{pad}"
    return pytest.param(case, arith, every, id=f"{arith}-{n}x{c}x{h}x{w}-{k}x{ks}x{ks}-s{stride}-{where}")


# Each shape in one arithmetic, as each pair compiles kernels of its own: the real layers in the two the
# sampler runs on a GPU (TF32 with every variant, zero-padded; bf16 on the torus), the awkward ones in the
# three by turns. The whole-net B(I) test runs every real layer in every arithmetic.
LAYER_CASES = ([layer_case(case, "tf32", every=True) for case in REAL_LAYERS[:3]]
               + [layer_case(case, "bf16") for case in REAL_LAYERS[3:]]
               + [layer_case(case, arith) for case, arith in zip(AWKWARD_LAYERS, itertools.cycle(ARITHMETICS))])
BIG_BANK = (4096, 3, 224, 224, 100, 15, 3, 2, False)  # a layer-1 output of 2.24e9 elements, past 2^31
BIG_BANK_FREE_BYTES = 12 << 30  # its input, layer-1 output, gradient and result in bf16, the bits
# The noise's counters: past 2^32, so the 64-bit counter's high word is in play.
NOISE_SEED, NOISE_OFFSET = 3, 2**33 + 7


@pytest.fixture(autouse=True)
def _ieee_float32():
    """float32 products as IEEE, not TF32, so the float64 reference pins them to float32's rounding (a TF32
    test switches it on; this puts it back)."""
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



def use_arithmetic(arith):
    """Switch TF32 on or off as `arith` needs (the autouse fixture restores it); (the kernels' dtype, the
    arithmetic conftest's rule is looked up by)."""
    dtype, tf32_on, rule = ARITHMETICS[arith]
    torch.backends.cudnn.allow_tf32 = tf32_on  # the kernels' dot precision follows cuDNN's switch
    return dtype, rule


def rms(t):
    return t.double().square().mean().sqrt().item()


def layer_operands(case, dtype):
    """Input, weights and bias of one layer as the kernels take them (in `dtype`, so the float64 reference
    sees the same numbers): inputs of size 20, pre-activations too, biases of both signs."""
    n, c, h, w, k, ks = case[:6]
    x = torch.randn(n, c, h, w, device="cuda") * 20
    wt = torch.randn(k, c, ks, ks, device="cuda") / (c * ks * ks) ** 0.5
    return x.to(dtype), wt.to(dtype), (torch.randn(k, device="cuda") * 5).to(dtype)


def reference_pre(x64, w, b, stride, pad, periodic):
    """float64 pre-activation of one layer of the float64 input x64, on the torus or zero-padded."""
    b = None if b is None else b.double()
    if periodic:
        before, after = torus_padding(w.shape[-1], stride)
        return F.conv2d(wrap_pad(x64, before, after), w.double(), b, stride=stride)
    return F.conv2d(x64, w.double(), b, stride=stride, padding=pad)


def check_conv_relu_mask(x, wt, b, case, rule, variants, chains=slice(None)):
    """Each (need_output, bias) variant of conv_relu_mask against float64 on `chains`: the output within
    conftest's rule, the bits exact away from ties. Returns the first variant's bits."""
    n, c, h, w, k, ks, stride, pad, periodic = case
    x64, masks = x[chains].double(), []
    size = dict(reduce_dim=c * ks * ks, scale=rms(x[chains]) * rms(wt))
    for need_output, bias in variants:
        bias = b if bias else None
        pre = reference_pre(x64, wt, bias, stride, pad, periodic)
        y, mask = conv_relu_mask(x, wt, bias, stride, pad, need_output=need_output, periodic=periodic,
                                 backend="triton")
        clear = pre.abs() > tolerance(rule, **size)  # away from ties the bits are exact
        assert torch.equal(unpack_mask(mask[chains], pre.shape)[clear], (pre > 0)[clear])
        if need_output:
            assert_close(y[chains], pre.clamp_min(0), arithmetic=rule, **size)
        masks.append(mask)
    return masks[0]


def transpose_variant(label, g, mask, input_shape, chains):
    """One way masked_conv_transpose is called: (the upstream gradient, the kernel's options, the float64
    gradient on `chains` before the layer's bits, the bits of a layer below that gate the result or None).
    "ones": the texture net's top layer, its bits alone; "gated": below the top, as grad_input runs it,
    gated already and channels last, the result gated by the bits below; "nchw": gated by the kernel."""
    if label == "ones":
        return None, {}, 1.0, None
    if label == "nchw":
        return g, {}, g[chains].double(), None
    gated = (g * unpack_mask(mask, g.shape).to(g.dtype)).contiguous(memory_format=activation_format(g.shape[1]))
    below = torch.rand(input_shape, device=g.device) < 0.5
    return gated, {"g_gated": True, "gate_output": pack_mask(below)}, g[chains].double(), below[chains]


def check_masked_conv_transpose(x, wt, mask, case, rule, labels, chains=slice(None)):
    """Each upstream variant of masked_conv_transpose against float64 autograd on `chains` through the
    bits in `mask` (ties included), within conftest's rule."""
    n, c, h, w, k, ks, stride, pad, periodic = case
    x64 = x[chains].double().requires_grad_()
    pre = reference_pre(x64, wt, None, stride, pad, periodic)  # the bias has no part in the gradient
    gate = unpack_mask(mask[chains], pre.shape).double()
    g = torch.randn(conv_output_shape(x.shape, wt.shape, stride, pad, periodic), device="cuda", dtype=wt.dtype)
    for label in labels:
        upstream, options, g64, below = transpose_variant(label, g, mask, x.shape, chains)
        ours = masked_conv_transpose(upstream, mask, wt, stride, pad, x.shape, periodic=periodic,
                                     backend="triton", **options)
        (expected,) = torch.autograd.grad((gate * g64 * pre).sum(), x64, retain_graph=True)
        expected = expected if below is None else expected * below
        scale = rms(wt) * (1.0 if upstream is None else rms(g[chains]))
        assert_close(ours[chains], expected, reduce_dim=k * ks * ks, scale=scale, arithmetic=rule)


@pytest.mark.parametrize("case,arith,every", LAYER_CASES)
def test_layer_kernels_match_float64_in_each_arithmetic(case, arith, every):
    dtype, rule = use_arithmetic(arith)
    x, wt, b = layer_operands(case, dtype)
    mask = check_conv_relu_mask(x, wt, b, case, rule, CONV_VARIANTS if every else CONV_VARIANTS[:1])
    check_masked_conv_transpose(x, wt, mask, case, rule, TRANSPOSE_VARIANTS if every else TRANSPOSE_VARIANTS[:2])


@pytest.mark.big_memory
def test_a_layer_1_output_past_2_31_elements_is_right_for_its_last_chain():
    # 4096 chains of 224 px in bf16: an int32 offset into the output overflows before the last chain.
    free, _ = torch.cuda.mem_get_info()
    if free < BIG_BANK_FREE_BYTES:
        pytest.skip(f"needs {BIG_BANK_FREE_BYTES >> 30} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    x, wt, b = layer_operands(BIG_BANK, torch.bfloat16)
    n, c, h, w, k, ks, stride, pad, _ = BIG_BANK
    assert torch.Size(conv_output_shape(x.shape, wt.shape, stride, pad)).numel() > 2**31
    last = slice(n - 1, n)
    mask = check_conv_relu_mask(x, wt, b, BIG_BANK, torch.bfloat16, CONV_VARIANTS[:1], chains=last)
    check_masked_conv_transpose(x, wt, mask, BIG_BANK, torch.bfloat16, ["nchw"], chains=last)


def bits_kept(monkeypatch):
    """A list that fills with the packed bits of each conv_relu_mask call of `GenerativeConvNet.grad_input`."""
    import tritongcn.gradient

    masks, kernel = [], tritongcn.gradient.conv_relu_mask

    def keeping(*args, **kwargs):
        h, mask = kernel(*args, **kwargs)
        masks.append(mask)
        return h, mask

    monkeypatch.setattr(tritongcn.gradient, "conv_relu_mask", keeping)
    return masks


def layer_bits(mask, pre):
    """The bits of `pre`'s units in a mask of the kernels' channels (padded to a multiple of 16)."""
    return unpack_mask(mask, (pre.shape[0], mask.shape[1]) + tuple(pre.shape[2:]))[:, :pre.shape[1]]


def gated_deconvolution(net, x, masks, boundary, dtype):
    """float64 B(I) of the activation pattern in `masks` (each ReLU replaced by its bits, so B is the gated
    deconvolution of that pattern) with the weights in `dtype` as the kernels read them; and each layer's
    float64 pre-activation, given the bits below, for the bits' own check."""
    x64 = x.double().requires_grad_()
    h, pres = x64, []
    for spec, conv, mask in zip(net.layers, net.active_convs(), masks):
        periodic, pad = net.padding_of(spec, boundary)
        pre = reference_pre(h, conv.weight.to(dtype), conv.bias.to(dtype), spec.stride, pad, periodic)
        pres.append(pre.detach())
        h = pre * layer_bits(mask, pre).double()
    (expected,) = torch.autograd.grad(h.sum(), x64)
    return expected, pres


@pytest.mark.parametrize("arith", list(ARITHMETICS))
@pytest.mark.parametrize("boundary", ["zero", "periodic"])
def test_grad_input_of_the_texture_net_is_the_gated_deconvolution_of_its_bits(boundary, arith, monkeypatch):
    # B(I) as the sampler computes it (channels padded, gradients gated where produced) against the float64
    # gated deconvolution of the bits its own bottom-up pass kept: B depends on I only through them, and a
    # unit within rounding of its threshold may take either side without failing the test. Away from ties
    # (past one tolerance of the layer's largest pre-activation, as the layers below add their errors) each
    # bit is the sign of its float64 pre-activation.
    dtype, rule = use_arithmetic(arith)
    net = random_texture_net(device="cuda")
    x = (torch.randn(2, 3, 222, 222, device="cuda") * 30).to(dtype).float()  # 222: a multiple of the stride
    masks = bits_kept(monkeypatch)
    precision = "bfloat16" if dtype == torch.bfloat16 else "float32"
    ours = net.grad_input(x, backend="triton", boundary=boundary, precision=precision)
    expected, pres = gated_deconvolution(net, x, masks, boundary, dtype)
    for pre, mask in zip(pres, masks):
        clear = pre.abs() > tolerance(rule, scale=pre.abs().max())
        assert torch.equal(layer_bits(mask, pre)[clear], (pre > 0)[clear])
    assert_close(ours, expected, scale=expected.abs().max(), arithmetic=rule)


def kernel_noise(shape, device, seed=NOISE_SEED, offset=NOISE_OFFSET):
    """The noise the Langevin kernel adds at these counters (triton imported here, not to collect the tier)."""
    from tritongcn.kernels.langevin_update_triton import randn_triton

    return randn_triton(shape, seed=seed, offset=offset, device=device)


def test_in_kernel_noise_is_standard_normal_in_its_tails_and_uncorrelated():
    z = kernel_noise((50_000_000,), "cuda").double()
    se = z.numel() ** -0.5
    # Mean, variance, the share beyond 2 sd (0.0455) and the lag-1 correlation: 5 standard errors either way.
    assert abs(z.mean().item()) < 5 * se
    assert abs(z.var().item() - 1) < 5 * 2**0.5 * se
    assert abs((z.abs() > 2).double().mean().item() - 0.0455) < 5 * (0.0455 * 0.9545) ** 0.5 * se
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 5 * se


def test_in_kernel_noise_is_the_cpu_interpreters_for_the_same_counters(tmp_path):
    # The interpreter in a fresh process (this one runs compiled kernels): chains draw the same noise on
    # either machine. The GPU's fast logarithm, sine and cosine differ by float32 roundings of draws up to 5.
    code = ("import sys, torch; from tritongcn.kernels.langevin_update_triton import randn_triton; "
            f"torch.save(randn_triton((4096,), {NOISE_SEED}, {NOISE_OFFSET}, device='cpu'), sys.argv[1])")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "z.pt")], capture_output=True, text=True,
                          env=dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    gpu = kernel_noise((4096,), "cuda").cpu()
    assert_close(gpu, torch.load(tmp_path / "z.pt").double(), scale=5.0)


def test_langevin_update_adds_the_drift_and_the_kernels_own_noise():
    x = torch.randn(64, 3, 64, 64, device="cuda") * 30
    z = kernel_noise(x.shape, "cuda", seed=5, offset=11).double()
    for drift in (torch.zeros_like(x), torch.randn_like(x) * 3):  # the same noise whatever the drift
        moved = langevin_update(x, drift, step_size=0.3, sigma=2.0, seed=5, offset=11, backend="triton")
        expected = x.double() - 0.045 * (x.double() / 4 - drift.double()) + 0.3 * z
        assert_close(moved, expected, reduce_dim=3, scale=x.abs().max())
