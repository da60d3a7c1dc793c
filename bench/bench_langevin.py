"""Chain-steps per second of tritongcn.langevin against the plain PyTorch autograd Langevin loop.

Both run the paper's texture net with the same random weights, in the same process, on the same chains.
Prints a table and appends one JSON line per configuration to bench/results.jsonl.

    python bench/bench_langevin.py                    # CPU, 16 chains at 64, 112 and 224 px
    python bench/bench_langevin.py --device cuda --chains 16 256 1024
"""

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

import tritongcn
from tritongcn import GenerativeConvNet, langevin
from tritongcn.profile import autograd_langevin, median_seconds


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chains", type=int, nargs="+", default=[16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    parser.add_argument("--steps", type=int, default=5, help="Langevin steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="tritongcn's sampler precision (the autograd loop stays float32)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.jsonl")))
    args = parser.parse_args()

    device = torch.device(args.device)
    model = GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        for conv in model.convs:  # biases of both signs, as after learning, so the bits are mixed
            conv.bias.normal_(0.0, 1.0)
    machine = f"{_cpu_name()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    print(f"{'chains':>6} {'size':>5} {'tritongcn chain-steps/s':>24} {'autograd chain-steps/s':>23} {'ratio':>6}")
    for n in args.chains:
        for size in args.sizes:
            x = torch.randn(n, 3, size, size, device=device) * 50
            ours = lambda: langevin(model, x, args.steps, 0.3, 1.0, seed=0, precision=args.precision)  # noqa: E731
            base = lambda: autograd_langevin(model, x, args.steps, 0.3, 1.0, seed=0)  # noqa: E731
            t_ours = median_seconds(ours, device, args.repeats)  # each after one warm-up run
            t_base = median_seconds(base, device, args.repeats)
            rate_ours, rate_base = n * args.steps / t_ours, n * args.steps / t_base
            print(f"{n:>6} {size:>5} {rate_ours:>24.1f} {rate_base:>23.1f} {rate_ours / rate_base:>6.2f}")
            record = {"bench": "langevin", "date": datetime.datetime.now().isoformat(timespec="seconds"),
                      "machine": machine, "torch": torch.__version__, "tritongcn": tritongcn.__version__,
                      "device": str(device), "dtype": "float32", "precision": args.precision, "chains": n, "size": size,
                      "steps": args.steps, "repeats": args.repeats,
                      "tritongcn_chain_steps_per_s": rate_ours, "autograd_chain_steps_per_s": rate_base,
                      "ratio": rate_ours / rate_base}
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
