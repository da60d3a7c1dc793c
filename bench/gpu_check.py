"""What a GPU run measures of the Triton kernels, in one process, into one folder: timings and figures.

The kernels' correctness (every variant against float64 torch in IEEE fp32, TF32 and bf16, the bits, a
layer-1 output past 2^31 elements, the noise, the whole B(I)) is the test suite's cuda tier
(tests/test_cuda.py), which bench/gpu_check.sh runs first. This script's sections:

- step: one whole Langevin step against the autograd loop on cuDNN (same weights and chains, same process,
  interleaved, CUDA-event timing) at 16 / 256 / 1024 / 4096 chains of 64 px and 16 / 256 / 1024 of 224 px,
  fp32 (TF32 as torch's default) and bf16, with the first call's compile and tune time apart;
- profile: `tritongcn profile`'s per-kernel table at 1024 chains of 224 px;
- sample: a short `tritongcn learn` of the bundled brick, then a 4096-chain `tritongcn sample` of it, with
  peak GPU memory and chain-steps/s;
- blocks: each kernel of each layer with other block shapes than the rule's, against cuDNN;
- precision: the same short learn in float32 and bfloat16;
- graphs: small banks' steps launched one by one against blocks replayed from a CUDA graph.

    bench/gpu_check.sh                                       # on a CUDA machine; writes $OUT or bench/gpu_out
    TRITON_INTERPRET=1 python bench/gpu_check.py --smoke     # CPU: tiny shapes, checks the script

Prints a table per section and writes check.json (all figures) to --out. Exits 1 when a section fails
(the others still run).
"""

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import tritongcn
from tritongcn import LayerSpec
from tritongcn.kernels import conv_relu_mask, masked_conv_transpose
from tritongcn.geometry import TEXTURE_LAYERS
from tritongcn.profile import autograd_langevin

from common import bench_model

SMOKE_LAYERS = [LayerSpec(33, 7, 3, 2), LayerSpec(12, 5, 1, 2), LayerSpec(6, 3, 1, 2)]
STEP_CONFIGS = [(16, 64), (256, 64), (1024, 64), (4096, 64), (16, 224), (256, 224), (1024, 224)]
# Banks small enough to be bound by launches and Python, run GRAPH_CALL_STEPS steps per call in blocks of
# GRAPH_STEPS replayed from a CUDA graph (section_graphs).
GRAPH_CONFIGS = [(16, 64), (64, 64), (128, 64), (256, 64), (8, 114), (32, 112), (4, 224), (16, 224), (64, 224)]
GRAPH_CALL_STEPS, GRAPH_STEPS = 100, 10


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


def step_times(model, chains: int, size: int, precisions, repeats: int, device):
    """Seconds of each variant of one Langevin step of `chains` chains of `size` px, `repeats` times each
    after a warm-up, interleaved; and the seconds of our first call in each precision (compile and tune)."""
    from tritongcn.sampler import langevin

    x = torch.randn(chains, 3, size, size, device=device) * 30
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
    return times, first


def print_step_row(chains: int, size: int, rate: dict, first: dict) -> None:
    """A line of section_step's table: chain-steps/s of each variant, their ratios, the first calls' s."""
    def fmt(name):
        return f"{rate[name]:>10.0f}" if name in rate else f"{'-':>10}"

    def ratio(a, b):
        return f"{rate[a] / rate[b]:>6.2f}" if a in rate and b in rate else f"{'-':>6}"

    print(f"{chains:>6} {size:>4}  {fmt('ours float32')} {fmt('ours bfloat16')} {fmt('autograd')} "
          f"{fmt('autograd bf16')}  {ratio('ours float32', 'autograd')} {ratio('ours bfloat16', 'autograd bf16')} "
          f"{ratio('ours bfloat16', 'autograd'):>9}  {fmt('torch float32')} {fmt('torch bfloat16')}  "
          + ", ".join(f"{s:.1f}" for s in first.values()))


def section_step(device, args, out):
    """Whole Langevin steps (input gradient + update), ours against autograd, interleaved."""
    smoke, repeats = args.smoke, (1 if args.smoke else args.repeats)
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
        try:
            times, first = step_times(model, chains, size, precisions, repeats, device)
        except torch.OutOfMemoryError:
            print(f"{chains:>6} {size:>4}  out of memory, skipped")
            torch.cuda.empty_cache()
            continue
        except Exception as err:  # a kernel that does not compile: record it, try the other sizes
            print(f"{chains:>6} {size:>4}  {type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}")
            rows.append({"chains": chains, "size": size, "error": f"{type(err).__name__}: {str(err)[-2000:]}"})
            continue
        rate = {name: chains / sorted(t)[len(t) // 2] for name, t in times.items()}
        rows.append({"chains": chains, "size": size, "chain_steps_per_s": rate, "first_call_s": first})
        print_step_row(chains, size, rate, first)
        if device.type == "cuda":  # the chains went with step_times: their memory goes back before the next size
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


def bench_seconds(fn, device):
    """Seconds of one call of fn: triton's median over many calls on a GPU, one call elsewhere."""
    import triton.testing

    if device.type != "cuda":
        return event_seconds(fn, device)
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median") / 1e3


def candidate_ms(fn, candidates, device) -> dict:
    """ms of one call of fn (which launches our kernels) with each block shape in candidates, keyed by the
    shape's JSON; the exception's name for a shape that fails."""
    from tritongcn.kernels import launch

    times = {}
    for cand in candidates:
        launch.BLOCK_OVERRIDE = cand
        try:
            times[json.dumps(cand)] = 1e3 * bench_seconds(fn, device)
        except Exception as err:  # a shape the compiler refuses (shared memory)
            times[json.dumps(cand)] = type(err).__name__
        finally:
            launch.BLOCK_OVERRIDE = {}
    return times


def layer_block_rows(model, x, arithmetic, candidates, device) -> list:
    """section_blocks' rows of one arithmetic (name, dtype, TF32 on): each layer's forward and transpose,
    cuDNN's ms and ours with each candidate block shape, each printed as it comes."""
    from tritongcn.kernels import channel_alignment, launch

    name, dtype, tf32_on = arithmetic
    rows = []
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
                    "cudnn_ms": 1e3 * bench_seconds(lambda: torch.relu(F.conv2d(h_ref, w_ref, b_ref, spec.stride,
                                                                                spec.padding)), device)}
            line["ours_ms"] = candidate_ms(lambda: conv_relu_mask(h, w, b, spec.stride, spec.padding,
                                                                  backend="triton"), candidates, device)
            rows.append(line)
            line_t = {"arith": name, "layer": i + 1, "direction": "transpose",
                      "cudnn_ms": 1e3 * bench_seconds(lambda: torch.nn.grad.conv2d_input(
                          h_ref.shape, w_ref, torch.ops.aten.threshold_backward(g_ref, relu, 0), spec.stride,
                          spec.padding), device)}
            ins.append(h)
            h, mask = conv_relu_mask(h, w, b, spec.stride, spec.padding, backend="triton")
            masks.append(mask)
            h_ref = relu
            # The gradient arriving as grad_input makes it: gated already, channels last.
            g = torch.randn(h.shape, device=device, dtype=dtype).contiguous(
                memory_format=launch.activation_format(h.shape[1]))
            below = masks[i - 1] if i else None
            line_t["ours_ms"] = candidate_ms(lambda: masked_conv_transpose(
                g, mask, w, spec.stride, spec.padding, ins[i].shape, backend="triton", g_gated=True,
                gate_output=below), candidates, device)
            rows.append(line_t)
            for row in (line, line_t):
                print(f"{name} L{i + 1} {row['direction']:<9} cuDNN {row['cudnn_ms']:7.3f}  " + "  ".join(
                    f"{v:7.3f}" if isinstance(v, float) else v for v in row["ours_ms"].values()))
    return rows


def section_blocks(device, args, out):
    """Each kernel of each layer with other block shapes than the rule's ({}), against cuDNN, at 256 chains
    of 224 px: the data the rule in kernels/launch.py is chosen from. Our kernels run as grad_input runs
    them (channels padded, activations channels last, gradients gated where produced); cuDNN as autograd
    runs it (NCHW, the layer's own channels)."""
    smoke = args.smoke
    model = check_model(device, smoke)
    n, size = (2, 24) if smoke else (256, 224)
    candidates = BLOCK_CANDIDATES[:2 if smoke else 4 if args.quick else None]
    x = torch.randn(n, 3, size, size, device=device) * 30
    rows = []
    print(f"\n== block shapes: ms per call at {n} chains of {size} px (cuDNN first; {{}} is the rule) ==")
    for arithmetic in arithmetics(device)[1:] if device.type == "cuda" else arithmetics(device):
        rows += layer_block_rows(model, x, arithmetic, candidates, device)
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


SECTIONS = {"step": section_step, "profile": section_profile,
            "sample": section_sample, "blocks": section_blocks, "precision": section_precision,
            "graphs": section_graphs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).with_name("gpu_out")))
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU interpreter")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer block shapes")
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
        print(f"[{name}: {time.perf_counter() - start:.1f} s]")
        (out / "check.json").write_text(json.dumps(report, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
