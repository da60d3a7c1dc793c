"""Everything a GPU run must show about the Triton kernels, in one process, into one folder.

1. correctness: every kernel variant against float64 torch, at the texture net's real shapes and awkward
   ones, in IEEE fp32, TF32 and bf16, each with its own tolerance on ||out - ref|| / ||ref||; the bits exact
   away from ties; a bank whose layer-1 output passes 2^31 elements; the noise's statistics, and the same
   noise from the CPU interpreter; and B(I) of the whole net as the sampler computes it against the float64
   gated deconvolution of the bits it kept (and, shown, against float64 autograd of the score);
2. step: one whole Langevin step against the autograd loop on cuDNN (same weights and chains, same process,
   interleaved, CUDA-event timing) at 16 / 256 / 1024 / 4096 chains of 64 px and 16 / 256 / 1024 of 224 px,
   fp32 (TF32 as torch's default) and bf16, with the first call's compile and tune time apart;
3. sample: a short `tritongcn learn` of the bundled brick, then a 4096-chain `tritongcn sample` of it, with
   peak GPU memory and chain-steps/s;
4. profile: `tritongcn profile`'s per-kernel table at 1024 chains of 224 px.

    bench/gpu_check.sh                                       # on a CUDA machine; writes $OUT or bench/gpu_out
    TRITON_INTERPRET=1 python bench/gpu_check.py --smoke     # CPU: tiny shapes, checks the script

Prints a table per section and writes check.json (all figures) to --out. Exits 1 when a correctness check
fails (the timings still run).
"""

import argparse
import contextlib
import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import tritongcn
from tritongcn import LayerSpec
from tritongcn.kernels import conv_relu_mask, langevin_update, masked_conv_transpose, pack_mask, unpack_mask
from tritongcn.kernels.launch import activation_format
from tritongcn.kernels.torus import torus_padding, wrap_pad
from tritongcn.geometry import TEXTURE_LAYERS
from tritongcn.profile import autograd_langevin

from common import bench_model

# ||out - ref|| / ||ref|| allowed per arithmetic: fp32 lands far under it, TF32 near 3e-4, bf16 operands
# between 1e-3 and 1e-2.
TOLERANCE = {"ieee": 1e-5, "tf32": 3e-3, "bf16": 2e-2}
# (chains, channels, height, width, filters, kernel, stride, padding, periodic): the texture net's layers at
# 224 px (zero padding and torus), then awkward ones: odd sides, filters past a mask word, one channel,
# kernels as large as the input, strides that do not divide the side.
REAL_CASES = [(3, 3, 224, 224, 100, 15, 3, 2, False), (3, 100, 75, 75, 64, 5, 1, 2, False),
              (3, 64, 75, 75, 30, 3, 1, 2, False), (3, 3, 222, 222, 100, 15, 3, 0, True),
              (3, 100, 74, 74, 64, 5, 1, 0, True), (3, 64, 74, 74, 30, 3, 1, 0, True)]
AWKWARD_CASES = [(1, 1, 5, 5, 1, 3, 1, 1, False), (5, 3, 17, 13, 33, 7, 3, 2, False),
                 (2, 5, 9, 31, 130, 4, 2, 3, False), (7, 3, 15, 15, 100, 15, 3, 0, False),
                 (3, 7, 12, 9, 5, 5, 3, 0, True), (2, 64, 11, 7, 30, 3, 1, 0, True),
                 (33, 3, 33, 30, 100, 15, 3, 0, True), (4, 100, 19, 23, 64, 5, 1, 2, False)]
SMOKE_LAYERS = [LayerSpec(33, 7, 3, 2), LayerSpec(12, 5, 1, 2), LayerSpec(6, 3, 1, 2)]
SMOKE_CASES = [(2, 3, 12, 12, 33, 7, 3, 2, False), (2, 5, 9, 6, 7, 3, 1, 0, True), (1, 1, 5, 5, 1, 3, 1, 1, False)]
STEP_CONFIGS = [(16, 64), (256, 64), (1024, 64), (4096, 64), (16, 224), (256, 224), (1024, 224)]
# Banks small enough to be bound by launches and Python, run GRAPH_CALL_STEPS steps per call in blocks of
# GRAPH_STEPS replayed from a CUDA graph (section_graphs).
GRAPH_CONFIGS = [(16, 64), (64, 64), (128, 64), (256, 64), (8, 114), (32, 112), (4, 224), (16, 224), (64, 224)]
GRAPH_CALL_STEPS, GRAPH_STEPS = 100, 10


def rel_error(out, ref):
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return math.inf
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def tf32(enabled):
    """torch's TF32 switch for convolutions (which the Triton kernels follow) and matmuls."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def arithmetics(device):
    """(name, dtype, TF32 on) of each arithmetic the kernels run on this device."""
    if device.type != "cuda":  # the interpreter: IEEE fp32 only
        return [("ieee", torch.float32, False)]
    return [("ieee", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)]


def reference_pre(x64, w, b, stride, pad, periodic):
    """float64 pre-activation of one layer of the float64 input x64, on the torus or zero-padded."""
    if periodic:
        before, after = torus_padding(w.shape[-1], stride)
        return F.conv2d(wrap_pad(x64, before, after), w.double(), b.double(), stride=stride)
    return F.conv2d(x64, w.double(), b.double(), stride=stride, padding=pad)


def reference_layer(x, w, b, stride, pad, periodic):
    """float64 pre-activation of one layer, with x64 (requires grad) for the transposed pass."""
    x64 = x.double().requires_grad_()
    return x64, reference_pre(x64, w, b, stride, pad, periodic)


def check_layer(case, device, name, dtype, tf32_on, gen, quick=False):
    """Every variant of both kernels for one layer shape, in one arithmetic: a list of result rows."""
    n, c, h, w_, k, ks, stride, pad, periodic = case
    x = torch.randn(n, c, h, w_, device=device, generator=gen) * 20
    wt = torch.randn(k, c, ks, ks, device=device, generator=gen) / (c * ks * ks) ** 0.5
    b = torch.randn(k, device=device, generator=gen) * 5
    x64, pre = reference_layer(x, wt, b, stride, pad, periodic)
    pre_det = pre.detach()
    tol = TOLERANCE[name]
    rows = []
    # Every epilogue variant in the default arithmetic (TF32 on a GPU, IEEE in the interpreter), the plain
    # one in the others: each variant is a kernel of its own to compile.
    default = name == ("tf32" if device.type == "cuda" else "ieee")
    variants = [(True, b), (True, None), (False, b), (False, None)] if default else [(True, b)]
    if quick:  # the two grad_input runs
        variants = [(True, b), (False, b)]
    with tf32(tf32_on):
        for need_output, bias in variants:
            ref = pre_det if bias is not None else pre_det - b.double().view(1, -1, 1, 1)
            y, mask = conv_relu_mask(x.to(dtype), wt.to(dtype), None if bias is None else bias.to(dtype),
                                     stride, pad, need_output=need_output, periodic=periodic, backend="triton")
            bits = unpack_mask(mask, ref.shape)
            clear = ref.abs() > 8 * tol * ref.abs().max()  # away from ties the bits are exact
            wrong_bits = int((bits[clear] != (ref > 0)[clear]).sum())
            err = rel_error(y, ref.clamp_min(0)) if need_output else 0.0
            rows.append({"kernel": "conv_relu_mask", "case": case, "arith": name, "need_output": need_output,
                         "bias": bias is not None, "rel_error": err, "wrong_bits": wrong_bits,
                         "ok": err <= tol and wrong_bits == 0})
        _, mask = conv_relu_mask(x.to(dtype), wt.to(dtype), b.to(dtype), stride, pad, periodic=periodic,
                                 backend="triton")
        gate = unpack_mask(mask, pre.shape).double()  # the bits the kernel reads, ties included
        g = torch.randn(pre.shape, device=device, generator=gen)
        below = torch.rand(x.shape, device=device, generator=gen) < 0.5  # bits of a layer below
        # As grad_input runs it: the top layer from its bits alone; below it, a gradient already gated (and
        # channels last, as the kernels write it), gated in turn by the bits of the layer below.
        variants = [("ones", None, False, None), ("g gated, gate_output", g * gate.to(g.dtype), True, below)]
        if default and not quick:
            variants.append(("g (NCHW, gated in the wrapper)", g, False, None))
        for label, upstream, g_gated, gate_below in variants:
            weight = gate if upstream is None else gate * upstream.double()
            (expected,) = torch.autograd.grad((weight * pre).sum(), x64, retain_graph=True)
            if gate_below is not None:
                expected = expected * gate_below
            if upstream is not None:
                upstream = upstream.to(dtype)
                if g_gated:
                    upstream = upstream.contiguous(memory_format=activation_format(upstream.shape[1]))
            ours = masked_conv_transpose(upstream, mask, wt.to(dtype), stride, pad, input_shape=x.shape,
                                         periodic=periodic, backend="triton", g_gated=g_gated,
                                         gate_output=None if gate_below is None else pack_mask(gate_below))
            err = rel_error(ours, expected)
            rows.append({"kernel": "masked_conv_transpose", "case": case, "arith": name, "gradient": label,
                         "rel_error": err, "ok": err <= tol})
    return rows


def grad_input_with_bits(model, x, boundary, precision):
    """`model.grad_input` as the sampler runs it, and the packed bits each layer's conv_relu_mask kept."""
    import tritongcn.model as model_module

    masks, kernel = [], model_module.conv_relu_mask

    def keeping_bits(*args, **kwargs):
        h, mask = kernel(*args, **kwargs)
        masks.append(mask)
        return h, mask

    model_module.conv_relu_mask = keeping_bits
    try:
        ours = model.grad_input(x, backend="triton", boundary=boundary, precision=precision)
    finally:
        model_module.conv_relu_mask = kernel
    return ours, masks


def gated_reference(model, x, masks, boundary, dtype, tol):
    """float64 B(I) for the activation pattern in `masks`: each ReLU replaced by its bits, so B is the
    gated deconvolution of that pattern, the weights rounded to `dtype` as the kernels read them. Also, per
    layer, the units whose bit differs from the sign of their float64 pre-activation (given the bits below):
    all of them, and those away from ties (|pre| > 8 tol max|pre|), which must be none."""
    x64 = x.double().requires_grad_()
    h, flips, wrong = x64, [], []
    for spec, conv, mask in zip(model.layers, model.active_convs(), masks):
        periodic, pad = model._padding(spec, boundary)
        pre = reference_pre(h, conv.weight.to(dtype), conv.bias.to(dtype), spec.stride, pad, periodic)
        shape = (pre.shape[0], mask.shape[1]) + tuple(pre.shape[2:])  # the kernels' channels, padded
        bits = unpack_mask(mask, shape)[:, :pre.shape[1]]
        exact = pre.detach()
        differ = bits != (exact > 0)
        flips.append(int(differ.sum()))
        wrong.append(int(differ[exact.abs() > 8 * tol * exact.abs().max()].sum()))
        h = pre * bits.double()
    (expected,) = torch.autograd.grad(h.sum(), x64)
    return expected, flips, wrong


def check_grad_input(device, smoke):
    """`grad_input` as the sampler runs it (channels padded, gated where produced), for the texture net with
    random weights, zero padding and the torus, against the float64 gated deconvolution of the bits its own
    bottom-up pass kept (the single kernels' tolerance), with no bit wrong away from ties. Its distance to
    autograd of the float64 score is shown too, not judged: a unit within rounding of its threshold may
    take the other side there (a flip) and move B by a whole filter's worth."""
    model = check_model(device, smoke)
    ref_model = copy.deepcopy(model).double()
    size = 24 if smoke else 222  # a multiple of the stride, for the torus
    x = torch.randn(2, 3, size, size, device=device) * 30
    rows = []
    for boundary in ("zero", "periodic"):
        x64 = x.double().requires_grad_()
        (exact,) = torch.autograd.grad(ref_model.score(x64, boundary).sum(), x64)
        for name, dtype, tf32_on in arithmetics(device):
            with tf32(tf32_on):
                precision = "bfloat16" if dtype == torch.bfloat16 else "float32"
                ours, masks = grad_input_with_bits(model, x, boundary, precision)
            gated, flips, wrong = gated_reference(model, x, masks, boundary, dtype, TOLERANCE[name])
            err = rel_error(ours, gated)
            rows.append({"kernel": "grad_input", "boundary": boundary, "arith": name, "rel_error": err,
                         "rel_error_float64_score": rel_error(ours, exact), "flips_per_layer": flips,
                         "wrong_bits_per_layer": wrong, "ok": err <= TOLERANCE[name] and not any(wrong)})
    return rows


def check_big_bank(device, smoke):
    """A layer-1 output past 2^31 elements (4096 chains of 224 px): the last chain against torch alone."""
    n, size = (2, 24) if smoke else (4096, 224)
    gen = torch.Generator(device=device).manual_seed(5)
    x = torch.randn(n, 3, size, size, device=device, generator=gen, dtype=torch.bfloat16) * 20
    wt = (torch.randn(100, 3, 15, 15, device=device, generator=gen) / 15 / 3**0.5).bfloat16()
    b = torch.randn(100, device=device, generator=gen).bfloat16()
    y, mask = conv_relu_mask(x, wt, b, 3, 2, backend="triton")
    elements = y.numel()
    last = slice(n - 1, n)
    pre = F.conv2d(x[last].double(), wt.double(), b.double(), stride=3, padding=2)
    err_y = rel_error(y[last], pre.clamp_min(0))
    clear = pre.abs() > 0.1 * pre.abs().max()
    wrong = int((unpack_mask(mask[last], pre.shape)[clear] != (pre > 0)[clear]).sum())
    g = torch.randn(y.shape, device=device, generator=gen, dtype=torch.bfloat16)
    del y
    gx = masked_conv_transpose(g, mask, wt, 3, 2, input_shape=x.shape, backend="triton")
    x64 = x[last].double().requires_grad_()
    pre = F.conv2d(x64, wt.double(), b.double(), stride=3, padding=2)
    gate = unpack_mask(mask[last], pre.shape).double()
    (expected,) = torch.autograd.grad((gate * g[last].double() * pre).sum(), x64)
    err_gx = rel_error(gx[last], expected)
    ok = err_y <= TOLERANCE["bf16"] and err_gx <= TOLERANCE["bf16"] and wrong == 0
    return {"kernel": "big bank (bf16)", "chains": n, "layer1_elements": elements, "past_2^31": elements > 2**31,
            "rel_error_y": err_y, "rel_error_gx": err_gx, "wrong_bits": wrong, "ok": ok}


def check_noise(device, smoke):
    """Moments, tails and lag-1 correlation of the kernel's noise; the CPU interpreter's noise equal to it."""
    from tritongcn.kernels.langevin_update_triton import randn_triton

    numel = 20_000 if smoke else 50_000_000
    z = randn_triton((numel,), seed=3, offset=2**33 + 7, device=device).double()
    se = numel ** -0.5
    tail = (z.abs() > 2).double().mean().item()
    corr = torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()
    row = {"kernel": "noise", "numel": numel, "mean": z.mean().item(), "var": z.var().item(), "tail2": tail,
           "lag1_corr": corr}
    ok = (abs(row["mean"]) < 5 * se and abs(row["var"] - 1) < 5 * 2**0.5 * se
          and abs(tail - 0.0455) < 5 * (0.0455 * 0.9545) ** 0.5 * se and abs(corr) < 5 * se)
    if device.type == "cuda":  # the same counters through the interpreter on the CPU, in a fresh process
        code = ("import torch; from tritongcn.kernels.langevin_update_triton import randn_triton; "
                "torch.save(randn_triton((4096,), seed=3, offset=2**33 + 7, device='cpu'), 'cpu_noise.pt')")
        env = dict(os.environ, TRITON_INTERPRET="1")
        with contextlib.suppress(FileNotFoundError):
            os.remove("cpu_noise.pt")
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if done.returncode == 0:
            cpu = torch.load("cpu_noise.pt")
            os.remove("cpu_noise.pt")
            row["cpu_max_abs_diff"] = (cpu.double() - z[:4096].cpu()).abs().max().item()
            ok = ok and row["cpu_max_abs_diff"] < 1e-4
        else:
            row["cpu_error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            ok = False
    x = torch.randn(3, 3, 40, 40, device=device)
    grad = torch.randn_like(x)
    new = langevin_update(x, grad, 0.3, 2.0, seed=7, offset=11, backend="triton")
    zz = randn_triton(x.shape, seed=7, offset=11, device=device)
    expected = x.double() - 0.045 * (x.double() / 4 - grad.double()) + 0.3 * zz.double()
    row["update_rel_error"] = rel_error(new, expected)
    row["ok"] = ok and row["update_rel_error"] < 1e-6
    return row


def section_correctness(device, args, out):
    """Every kernel and B(I) against float64, the big bank, the noise: a list of result rows."""
    smoke, quick = args.smoke, args.quick
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for name, dtype, tf32_on in arithmetics(device):
        cases = SMOKE_CASES if smoke else REAL_CASES + AWKWARD_CASES
        if quick and not smoke:  # fewer kernels to compile: the real shapes in TF32 and bf16, three awkward
            cases = REAL_CASES[:3] if name == "ieee" else REAL_CASES + (AWKWARD_CASES[1:4] if name == "tf32" else [])
        for case in cases:
            try:
                rows += check_layer(case, device, name, dtype, tf32_on, gen, quick and not smoke)
            except Exception as err:  # a kernel that does not compile or launch: record it, go on
                rows.append({"kernel": "layer", "case": case, "arith": name, "ok": False,
                             "error": f"{type(err).__name__}: {str(err)[:2000]}"})
    for check in [check_grad_input] + ([check_big_bank] if device.type == "cuda" else []) + [check_noise]:
        try:
            result = check(device, smoke)
            rows += result if isinstance(result, list) else [result]
        except Exception as err:
            rows.append({"kernel": check.__name__, "ok": False, "error": f"{type(err).__name__}: {err}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    worst = {}
    for row in rows:
        key = (row["kernel"], row.get("arith", ""))
        worst.setdefault(key, [0.0, 0, True])
        worst[key][0] = max(worst[key][0], row.get("rel_error", row.get("rel_error_gx", 0.0)))
        worst[key][1] += 1
        worst[key][2] &= row["ok"]
    print("\n== correctness (||out - ref|| / ||ref|| against float64 torch; worst case per kernel) ==")
    for (kernel, arith), (err, count, ok) in worst.items():
        print(f"{kernel:<24} {arith:<5} {count:>4} checks  worst {err:9.2e}  {'ok' if ok else 'FAILED'}")
    for row in rows:
        if row["kernel"] == "grad_input" and "flips_per_layer" in row:
            print(f"  B(I) {row['boundary']:<8} {row['arith']:<4}: against the gated reference {row['rel_error']:.2e}, "
                  f"against the float64 score {row['rel_error_float64_score']:.2e}; bits on the other side of "
                  f"float64's per layer {row['flips_per_layer']}, away from ties {row['wrong_bits_per_layer']}")
    for row in rows:
        if not row["ok"]:
            print("  failed:", row)
    return rows


def event_seconds(fn, device):
    """Seconds of one call of fn: CUDA events on a GPU, a synchronised clock elsewhere."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def check_model(device, smoke):
    """bench_model's texture net; in the smoke mode its shape with fewer channels, for the interpreter."""
    return bench_model(device, SMOKE_LAYERS if smoke else TEXTURE_LAYERS)


def section_step(device, args, out):
    """Whole Langevin steps (input gradient + update), ours against autograd, interleaved."""
    smoke, repeats = args.smoke, (1 if args.smoke else args.repeats)
    from tritongcn.sampler import langevin

    model = check_model(device, smoke)
    configs = [(2, 18)] if smoke else STEP_CONFIGS
    precisions = ["float32"] if smoke else ["float32", "bfloat16"]
    rows = []
    print("\n== one Langevin step (chain-steps/s; autograd = the plain loop on cuDNN, fp32 under torch's TF32 "
          "default; bf16 autograd under autocast) ==")
    print(f"{'chains':>6} {'px':>4}  {'ours fp32':>10} {'ours bf16':>10} {'autograd':>10} {'ag bf16':>10}  "
          f"{'fp32 x':>6} {'bf16 x':>6} {'bf16/ag32':>9}  {'torch fp32':>10} {'torch bf16':>10}  "
          "first call s (fp32, bf16)")
    for chains, size in configs:
        x = torch.randn(chains, 3, size, size, device=device) * 30
        try:
            runs, first = {}, {}
            for precision in precisions:
                def ours(precision=precision):
                    langevin(model, x, 1, 0.3, 1.0, seed=0, backend="triton", precision=precision)
                start = time.perf_counter()
                ours()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                first[precision] = time.perf_counter() - start
                runs[f"ours {precision}"] = ours
            for precision in precisions:  # the torch backend: cuDNN convolutions and the bits
                runs[f"torch {precision}"] = lambda p=precision: langevin(model, x, 1, 0.3, 1.0, seed=0,
                                                                          backend="torch", precision=p)
            runs["autograd"] = lambda: autograd_langevin(model, x, 1, 0.3, 1.0)
            if device.type == "cuda":
                def autograd_bf16():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        autograd_langevin(model, x, 1, 0.3, 1.0)
                runs["autograd bf16"] = autograd_bf16
            for fn in runs.values():  # warm-up: cuDNN's algorithm search, allocator
                fn()
            times = {name: [] for name in runs}
            for _ in range(repeats):  # interleaved, so drifting clocks hit every variant alike
                for name, fn in runs.items():
                    times[name].append(event_seconds(fn, device))
        except torch.OutOfMemoryError:
            print(f"{chains:>6} {size:>4}  out of memory, skipped")
            torch.cuda.empty_cache()
            continue
        except Exception as err:  # a kernel that does not compile: record it, try the other sizes
            print(f"{chains:>6} {size:>4}  {type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}")
            rows.append({"chains": chains, "size": size, "error": f"{type(err).__name__}: {str(err)[-2000:]}"})
            continue
        rate = {name: chains / sorted(t)[len(t) // 2] for name, t in times.items()}
        row = {"chains": chains, "size": size, "chain_steps_per_s": rate, "first_call_s": first}
        rows.append(row)

        def fmt(name):
            return f"{rate[name]:>10.0f}" if name in rate else f"{'-':>10}"

        def ratio(a, b):
            return f"{rate[a] / rate[b]:>6.2f}" if a in rate and b in rate else f"{'-':>6}"

        print(f"{chains:>6} {size:>4}  {fmt('ours float32')} {fmt('ours bfloat16')} {fmt('autograd')} "
              f"{fmt('autograd bf16')}  {ratio('ours float32', 'autograd')} {ratio('ours bfloat16', 'autograd bf16')} "
              f"{ratio('ours bfloat16', 'autograd'):>9}  {fmt('torch float32')} {fmt('torch bfloat16')}  "
              + ", ".join(f"{s:.1f}" for s in first.values()))
        x = None  # frees the chains before the next size (the closures above hold the name, not the tensor)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _cli(args):
    """Run a tritongcn command in this process (so its peak memory can be read); its output is shown."""
    from click.testing import CliRunner

    from tritongcn.cli import main

    result = CliRunner().invoke(main, args, catch_exceptions=True)
    print(result.output.rstrip())
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


# A learn the interpreter's machine gets through in seconds (the smoke mode): tiny images, few iterations,
# in float32.
SMOKE_LEARN = ["--image-size", "40", "--sample-size", "36", "--chains", "3", "--iterations", "2",
               "--langevin-steps", "2", "--sample-steps", "3", "--precision", "float32"]


def learn_brick(run: Path, device, options) -> float:
    """`tritongcn learn` of the bundled brick into `run` with `options`; its wall seconds."""
    brick = Path(__file__).resolve().parent.parent / "examples" / "brick.png"
    start = time.perf_counter()
    _cli(["learn", str(brick), "--out", str(run), "--overwrite", "--device", str(device), *options])
    return time.perf_counter() - start


def section_sample(device, args, out):
    """A short learn of the bundled brick on this device, then many chains of its model."""
    smoke = args.smoke
    run = out / "learn_bfloat16"  # the precision section's model, when it ran
    learn_s = 0.0
    if not (run / "model.pt").exists():
        run = out / "learn"
        print("\n== learn (short) ==")
        learn_s = learn_brick(run, device, SMOKE_LEARN if smoke else ["--iterations", "30", "--sample-steps", "30"])
    chains, steps = (4, 2) if smoke else (4096, 20)
    sample_args = ["sample", str(run / "model.pt"), "--chains", str(chains), "--steps", str(steps),
                   "--format", "npz", "--out", str(out / "samples"), "--overwrite", "--device", str(device)]
    if smoke:  # the interpreter would take minutes over the texture net: the torch path checks the script
        sample_args += ["--backend", "torch", "--precision", "float32", "--size", "24"]
    print(f"\n== sample: {chains} chains, {steps} steps ==")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    _cli(sample_args)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    row = {"learn_seconds": learn_s, "chains": chains, "steps": steps, "sample_seconds": seconds,
           "chain_steps_per_s": chains * steps / seconds, "peak_gpu_bytes": peak}
    print(f"sample: {seconds:.1f} s wall (model load, start, steps, writing), {row['chain_steps_per_s']:.0f} "
          f"chain-steps/s" + (f", peak GPU memory {peak / 2**30:.2f} GiB" if peak else ""))
    return row


def section_profile(device, args, out):
    """`tritongcn profile` in each precision at 1024 chains of 224 px."""
    smoke = args.smoke
    chains, size = (2, 24) if smoke else (1024, 224)
    for precision in ["float32"] if smoke else ["float32", "bfloat16"]:
        print(f"\n== profile: {chains} chains of {size} px, {precision} ==")
        cli_args = ["profile", "--chains", str(chains), "--size", str(size), "--steps", "3", "--device",
                    str(device), "--backend", "torch" if smoke else "triton", "--precision", precision]
        _cli(cli_args + (["--no-compare"] if smoke else []))
    return {"chains": chains, "size": size}


def section_precision(device, args, out):
    """The same short learn of the bundled brick in float32 and bfloat16: do bf16 kernels learn as well?"""
    rows = {}
    for precision in ("float32", "bfloat16"):
        run = out / f"learn_{precision}"
        print(f"\n== learn, {precision} ==")
        # The smoke mode checks the script only: float32 both times (SMOKE_LEARN's last option wins).
        options = ["--precision", precision] + (SMOKE_LEARN if args.smoke else [])
        rows[precision] = {"seconds": learn_brick(run, device, options)}
        if (run / "eval.json").exists():
            rows[precision]["eval"] = json.loads((run / "eval.json").read_text())
    return rows


# Block shapes against the rule's ({}): BLOCK_M, warps, pipeline stages.
BLOCK_CANDIDATES = [{}] + [{"BLOCK_M": m, "num_warps": w, "num_stages": s}
                           for m, w, s in [(64, 4, 3), (128, 4, 3), (128, 8, 3), (128, 4, 4), (256, 8, 3), (64, 4, 5)]]


def section_blocks(device, args, out):
    """Each kernel of each layer with other block shapes than the rule's ({}), against cuDNN, at 256 chains
    of 224 px: the data the rule in kernels/launch.py is chosen from. Our kernels run as grad_input runs
    them (channels padded, activations channels last, gradients gated where produced); cuDNN as autograd
    runs it (NCHW, the layer's own channels)."""
    import triton.testing

    from tritongcn.kernels import channel_alignment, launch

    smoke = args.smoke
    model = check_model(device, smoke)
    n, size = (2, 24) if smoke else (256, 224)
    candidates = BLOCK_CANDIDATES[:2 if smoke else 4 if args.quick else None]
    x = torch.randn(n, 3, size, size, device=device) * 30

    def bench(fn):
        if device.type != "cuda":
            return event_seconds(fn, device)
        return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median") / 1e3

    def timed_candidates(fn):
        times = {}
        for cand in candidates:
            launch.BLOCK_OVERRIDE = cand
            try:
                times[json.dumps(cand)] = 1e3 * bench(fn)
            except Exception as err:  # a shape the compiler refuses (shared memory)
                times[json.dumps(cand)] = type(err).__name__
            finally:
                launch.BLOCK_OVERRIDE = {}
        return times

    rows = []
    print(f"\n== block shapes: ms per call at {n} chains of {size} px (cuDNN first; {{}} is the rule) ==")
    for name, dtype, tf32_on in arithmetics(device)[1:] if device.type == "cuda" else arithmetics(device):
        with tf32(tf32_on):
            weights = model.kernel_weights(dtype, channel_alignment("triton", device))
            h_ref, h, ins, masks = x.to(dtype), x, [], []
            for i, (spec, conv) in enumerate(zip(model.layers, model.convs)):
                w_ref, b_ref = conv.weight.to(dtype), conv.bias.to(dtype)
                w, b = weights[i]
                pre = F.conv2d(h_ref, w_ref, b_ref, spec.stride, spec.padding)
                relu = torch.relu(pre)
                g_ref = torch.randn_like(relu)
                line = {"arith": name, "layer": i + 1, "direction": "forward",
                        "cudnn_ms": 1e3 * bench(lambda: torch.relu(F.conv2d(h_ref, w_ref, b_ref, spec.stride,
                                                                            spec.padding)))}
                line["ours_ms"] = timed_candidates(lambda: conv_relu_mask(h, w, b, spec.stride, spec.padding,
                                                                          backend="triton"))
                rows.append(line)
                line_t = {"arith": name, "layer": i + 1, "direction": "transpose",
                          "cudnn_ms": 1e3 * bench(lambda: torch.nn.grad.conv2d_input(
                              h_ref.shape, w_ref, torch.ops.aten.threshold_backward(g_ref, relu, 0), spec.stride,
                              spec.padding))}
                ins.append(h)
                h, mask = conv_relu_mask(h, w, b, spec.stride, spec.padding, backend="triton")
                masks.append(mask)
                h_ref = relu
                # The gradient arriving as grad_input makes it: gated already, channels last.
                g = torch.randn(h.shape, device=device, dtype=dtype).contiguous(
                    memory_format=launch.activation_format(h.shape[1]))
                below = masks[i - 1] if i else None
                line_t["ours_ms"] = timed_candidates(lambda: masked_conv_transpose(
                    g, mask, w, spec.stride, spec.padding, ins[i].shape, backend="triton", g_gated=True,
                    gate_output=below))
                rows.append(line_t)
                for row in (line, line_t):
                    print(f"{name} L{i + 1} {row['direction']:<9} cuDNN {row['cudnn_ms']:7.3f}  " + "  ".join(
                        f"{v:7.3f}" if isinstance(v, float) else v for v in row["ours_ms"].values()))
    print("candidates:", "  ".join(json.dumps(c) for c in candidates))
    return rows


def section_graphs(device, args, out):
    """Small banks: GRAPH_CALL_STEPS steps per `langevin` call, each step launched from Python against
    blocks of GRAPH_STEPS steps replayed from one CUDA graph (recorded once per call, its warm-up block and
    recording included), interleaved; the chains must come out the same."""
    from tritongcn.sampler import langevin

    model = check_model(device, args.smoke)
    configs = [(2, 18)] if args.smoke else GRAPH_CONFIGS
    precisions = ["float32"] if args.smoke else ["float32", "bfloat16"]
    steps, block = (2, 2) if args.smoke else (GRAPH_CALL_STEPS, GRAPH_STEPS)
    repeats = 1 if args.smoke else max(3, args.repeats // 3)
    rows = []
    print(f"\n== steps launched one by one against blocks of {block} replayed from a CUDA graph "
          f"({steps} steps per call; chain-steps/s) ==")
    print(f"{'chains':>6} {'px':>4} {'precision':>9}  {'plain':>10} {'graph':>10} {'x':>6}  same chains")
    for chains, size in configs:
        x = torch.randn(chains, 3, size, size, device=device) * 30
        for precision in precisions:
            def run(k, precision=precision):
                return langevin(model, x, steps, 1.0, 1.0, seed=0, backend="triton", precision=precision,
                                graph_steps=k)
            try:
                chains_after, times = {}, {0: [], block: []}
                # A first untimed round compiles the kernels and lays out the weights (not in the smoke mode).
                for round_ in range(repeats + (0 if args.smoke else 1)):
                    for k in times:
                        seconds = event_seconds(lambda k=k: chains_after.__setitem__(k, run(k)), device)
                        if round_ or args.smoke:
                            times[k].append(seconds)
                same = torch.equal(chains_after[0], chains_after[block])
            except Exception as err:  # recorded here, and the other sizes still run
                print(f"{chains:>6} {size:>4} {precision:>9}  {type(err).__name__}: {str(err).strip()[:200]}")
                rows.append({"chains": chains, "size": size, "precision": precision,
                             "error": f"{type(err).__name__}: {str(err)[-2000:]}", "same_chains": False})
                continue
            rate = {k: chains * steps / sorted(t)[len(t) // 2] for k, t in times.items()}
            rows.append({"chains": chains, "size": size, "precision": precision, "steps_per_call": steps,
                         "graph_steps": block, "plain_chain_steps_per_s": rate[0],
                         "graph_chain_steps_per_s": rate[block], "same_chains": same})
            print(f"{chains:>6} {size:>4} {precision:>9}  {rate[0]:>10.0f} {rate[block]:>10.0f} "
                  f"{rate[block] / rate[0]:>6.2f}  {same}")
        x = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not all(row["same_chains"] for row in rows):
        raise AssertionError("chains replayed from a CUDA graph differ from the plain loop's")
    return rows


SECTIONS = {"correctness": section_correctness, "step": section_step, "profile": section_profile,
            "sample": section_sample, "blocks": section_blocks, "precision": section_precision,
            "graphs": section_graphs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).with_name("gpu_out")))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU interpreter")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer correctness cases and block shapes")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per variant (interleaved)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type != "cuda" and not args.smoke:
        parser.error("no CUDA device: run with --smoke under TRITON_INTERPRET=1 to check the script")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import triton

    report = {"tritongcn": tritongcn.__version__, "torch": torch.__version__, "triton": triton.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)",
              "smoke": args.smoke}
    print(f"{report['device']}: torch {torch.__version__}, triton {triton.__version__}")
    failed = False
    for name in args.sections:
        start = time.perf_counter()
        try:
            result = SECTIONS[name](device, args, out)
        except Exception as err:  # one broken section must not hide the others' figures
            import traceback
            traceback.print_exc()
            result, failed = {"error": f"{type(err).__name__}: {err}"}, True
        report[name] = result
        if name == "correctness" and not all(row["ok"] for row in result if isinstance(row, dict)):
            failed = True
        print(f"[{name}: {time.perf_counter() - start:.1f} s]")
        (out / "check.json").write_text(json.dumps(report, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
