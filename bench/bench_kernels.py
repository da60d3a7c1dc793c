"""The Triton kernels against their cuDNN / torch equivalents, and one whole Langevin step against autograd.

For the paper's texture net (random weights, biases of both signs) at each image size and chain count:

- each layer's `conv_relu_mask` against cuDNN conv2d + ReLU, in TFLOP/s;
- each layer's `masked_conv_transpose` against what autograd runs (ReLU backward, then cuDNN's
  backward-data convolution), in TFLOP/s;
- `langevin_update` against the torch expression with torch.randn, in GB/s of the 12 bytes per element
  the fused kernel must move (read x and grad, write x);
- one whole step (input gradient + update) against one step of the autograd loop, in chain-steps/s;
- the bytes kept between the bottom-up and the top-down pass: the bits against autograd's float activations
  (counted from the shapes) and the peak memory of one step of each (measured).

Peaks: a large matmul and a large copy measured on the card in the same run (the achievable ceiling), and
the datasheet figure where the card is known. fp32 on both sides with torch's own TF32 setting for cuDNN
convolutions, which the Triton convolutions follow. Appends one JSON line per configuration to
bench/results.jsonl and prints a table.

    python bench/bench_kernels.py                                  # GPU: 64/112/224 px, 16 to 4096 chains
    TRITON_INTERPRET=1 python bench/bench_kernels.py --smoke       # CPU: tiny shapes, checks the script
"""

import argparse
import datetime
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

import tritongcn
from tritongcn import GenerativeConvNet, LayerSpec
from tritongcn.kernels import (conv_output_shape, conv_relu_mask, langevin_update, mask_shape,
                               masked_conv_transpose)
from tritongcn.model import conv_flops

from tritongcn.profile import autograd_langevin, median_seconds

from bench_langevin import cpu_name

# Dense datasheet peaks (TF32 tensor-core TFLOP/s, fp32 CUDA-core TFLOP/s, DRAM TB/s), by name fragment.
DATASHEET = {
    "H100 80GB HBM3": (494.7, 66.9, 3.35), "H100 SXM": (494.7, 66.9, 3.35), "H100 PCIe": (378.0, 51.2, 2.0),
    "H100 NVL": (417.5, 60.0, 3.9), "H200": (494.7, 66.9, 4.8), "A100": (156.0, 19.5, 2.0),
}


def _datasheet(name):
    for fragment, peaks in DATASHEET.items():
        if fragment in name:
            return peaks
    return None


def _bench(fn, device, repeats):
    """Median seconds of fn: triton.testing.do_bench on a GPU, a perf_counter loop elsewhere."""
    if device.type == "cuda":
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    return median_seconds(fn, device, repeats)


def _peak_probes(device, smoke):
    """Achievable TFLOP/s (fp32 matmul under torch's TF32 setting) and GB/s (copy) on this device."""
    n = 256 if smoke else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = _bench(lambda: a @ b, device, 3)
    src = torch.empty(2**20 if smoke else 2**28, device=device)
    dst = torch.empty_like(src)
    t_copy = _bench(lambda: dst.copy_(src), device, 3)
    return 2 * n**3 / t / 1e12, 2 * src.numel() * 4 / t_copy / 1e9


def _layer_inputs(model, x):
    """The input of each active layer in a plain forward pass (what both sides start their pass from)."""
    inputs, h = [], x
    for spec, conv in zip(model.layers, model.active_convs()):
        inputs.append(h)
        h = torch.relu(F.conv2d(h, conv.weight, conv.bias, spec.stride, spec.padding))
    return inputs


def bench_config(model, n, size, device, repeats, backend):
    x = torch.randn(n, 3, size, size, device=device) * 50
    rows = []
    inputs = _layer_inputs(model, x)
    last = len(inputs) - 1
    masks_bytes = float_bytes = 0
    for i, (spec, conv, h) in enumerate(zip(model.layers, model.active_convs(), inputs)):
        w, b = conv.weight, conv.bias
        need = i < last
        y, mask = conv_relu_mask(h, w, b, spec.stride, spec.padding, need_output=need, backend=backend)
        flops = conv_flops(h.shape, w.shape, conv_output_shape(h.shape, w.shape, spec.stride, spec.padding))
        t_ours = _bench(lambda: conv_relu_mask(h, w, b, spec.stride, spec.padding, need_output=need,
                                               backend=backend), device, repeats)
        t_base = _bench(lambda: torch.relu(F.conv2d(h, w, b, spec.stride, spec.padding)), device, repeats)
        rows.append({"op": f"conv_relu_mask L{i + 1}", "flops": flops, "t_ours": t_ours, "t_base": t_base})

        pre = F.conv2d(h, w, b, spec.stride, spec.padding)
        relu_out = torch.relu(pre)
        g = None if i == last else torch.randn_like(relu_out)
        g_float = torch.ones_like(relu_out) if g is None else g
        t_ours = _bench(lambda: masked_conv_transpose(g, mask, w, spec.stride, spec.padding, h.shape,
                                                      backend=backend), device, repeats)
        t_base = _bench(lambda: torch.nn.grad.conv2d_input(
            h.shape, w, torch.ops.aten.threshold_backward(g_float, relu_out, 0), spec.stride, spec.padding),
            device, repeats)
        rows.append({"op": f"masked_conv_transpose L{i + 1}", "flops": flops, "t_ours": t_ours, "t_base": t_base})
        masks_bytes += mask.numel() * mask.element_size()
        float_bytes += relu_out.numel() * relu_out.element_size()  # autograd keeps each ReLU output
        assert tuple(mask.shape) == mask_shape(relu_out.shape)

    grad = torch.randn_like(x)
    out = torch.empty_like(x)
    t_ours = _bench(lambda: langevin_update(x, grad, 0.3, 1.0, seed=0, out=out, backend=backend), device, repeats)
    t_base = _bench(lambda: x - 0.045 * (x - grad) + 0.3 * torch.randn_like(x), device, repeats)
    rows.append({"op": "langevin_update", "bytes": 12 * x.numel(), "t_ours": t_ours, "t_base": t_base})

    chains = x.clone()

    def step_ours():
        g = model.grad_input(chains, backend=backend)
        langevin_update(chains, g, 0.3, 1.0, seed=0, out=chains, backend=backend)

    t_ours = _bench(step_ours, device, repeats)
    t_base = _bench(lambda: autograd_langevin(model, x, 1, 0.3, 1.0, seed=0), device, repeats)
    rows.append({"op": "whole Langevin step", "chain_steps": n, "t_ours": t_ours, "t_base": t_base})

    peak_ours = peak_base = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        for name, fn in (("ours", step_ours), ("base", lambda: autograd_langevin(model, x, 1, 0.3, 1.0, seed=0))):
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            fn()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated(device) - before
            peak_ours, peak_base = (peak, peak_base) if name == "ours" else (peak_ours, peak)
    memory = {"bits_bytes": masks_bytes, "float_activation_bytes": float_bytes,
              "step_peak_bytes_ours": peak_ours, "step_peak_bytes_autograd": peak_base}
    return rows, memory


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chains", type=int, nargs="+", default=[16, 256, 1024, 4096])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs off the GPU; the median is reported")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: check the script, not the speed")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.jsonl")))
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.smoke:
        args.chains, args.sizes, args.repeats = [2], [40], 1
    elif device.type != "cuda":
        parser.error("the Triton kernels run on a CUDA device (use --smoke with TRITON_INTERPRET=1 on a CPU)")

    gen = torch.Generator().manual_seed(0)
    if args.smoke:  # the texture net's shape with fewer channels, so the interpreter finishes in seconds
        model = GenerativeConvNet(3, [LayerSpec(33, 15, 3, 2), LayerSpec(12, 5, 1, 2), LayerSpec(6, 3, 1, 2)],
                                  generator=gen).to(device)
    else:
        model = GenerativeConvNet.texture(3, generator=gen).to(device)
    with torch.no_grad():
        for conv in model.convs:  # biases of both signs, as after learning, so the bits are mixed
            conv.bias.normal_(0.0, 1.0)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    tflops_probe, gbs_probe = _peak_probes(device, args.smoke)
    sheet = _datasheet(machine) if device.type == "cuda" else None
    tf32 = torch.backends.cudnn.allow_tf32
    print(f"{machine}: measured peaks {tflops_probe:.1f} TFLOP/s (fp32 matmul, TF32 {'on' if tf32 else 'off'}), "
          f"{gbs_probe:.0f} GB/s (copy)" + (f"; datasheet {sheet[0]} TF32 / {sheet[1]} fp32 TFLOP/s, "
                                            f"{sheet[2] * 1000:.0f} GB/s" if sheet else ""))
    header = f"{'chains':>6} {'size':>4}  {'op':<26} {'ours':>10} {'torch':>10} {'speed-up':>8}  ours vs peak"
    for n in args.chains:
        for size in args.sizes:
            try:
                rows, memory = bench_config(model, n, size, device, args.repeats, "triton")
            except torch.OutOfMemoryError:
                print(f"{n:>6} {size:>4}  out of memory, skipped")
                torch.cuda.empty_cache()
                continue
            print(header)
            for row in rows:
                speedup = row["t_base"] / row["t_ours"]
                if "flops" in row:
                    ours, base = row["flops"] / row["t_ours"] / 1e12, row["flops"] / row["t_base"] / 1e12
                    unit, share = "TFLOP/s", ours / tflops_probe
                elif "bytes" in row:
                    ours, base = row["bytes"] / row["t_ours"] / 1e9, row["bytes"] / row["t_base"] / 1e9
                    unit, share = "GB/s", ours / gbs_probe
                else:
                    ours, base = row["chain_steps"] / row["t_ours"], row["chain_steps"] / row["t_base"]
                    unit, share = "chain-steps/s", None
                row.update({"unit": unit, "ours": ours, "torch": base, "speedup": speedup, "share_of_probe": share})
                peak = f"{share:6.1%} of measured {unit}" if share is not None else ""
                print(f"{n:>6} {size:>4}  {row['op']:<26} {ours:>10.2f} {base:>10.2f} {speedup:>8.2f}  {peak}")
            ratio = memory["float_activation_bytes"] / memory["bits_bytes"]
            print(f"{'':>12}kept between passes: bits {memory['bits_bytes'] / n / 1e3:.1f} kB/chain, float "
                  f"activations {memory['float_activation_bytes'] / n / 1e3:.1f} kB/chain ({ratio:.1f}x)")
            record = {"bench": "kernels", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                      "machine": machine, "torch": torch.__version__, "tritongcn": tritongcn.__version__,
                      "device": str(device), "dtype": "float32", "tf32": tf32, "chains": n, "size": size,
                      "interpreter": bool(os.environ.get("TRITON_INTERPRET")),
                      "probe_tflops": tflops_probe, "probe_gbs": gbs_probe, "datasheet": sheet,
                      "rows": rows, "memory": memory}
            if not args.smoke:
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
