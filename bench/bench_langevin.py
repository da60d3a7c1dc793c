"""Chain-steps per second of tritongcn.langevin against the plain PyTorch autograd Langevin loop.

Every variant runs the paper's texture net with the same random weights, in the same process, on the same
chains: tritongcn in each precision asked for, the autograd loop a user would write (float32), and that loop
with `torch.compile(model.score)` (compiled once per shape in the warm-up run, which is not timed).
Prints a table and appends one JSON line per configuration to bench/results.jsonl.

    python bench/bench_langevin.py                    # CPU, 16 chains at 64, 112 and 224 px
    python bench/bench_langevin.py --chains 16 256 1024 --sizes 64
    python bench/bench_langevin.py --device cuda --chains 16 256 1024
"""

import argparse

import torch

from common import RESULTS, append_results, bench_model, machine_name
from tritongcn import langevin
from tritongcn.precision import resolve_precision
from tritongcn.profile import autograd_langevin, median_seconds


def variants(model, steps, precisions, compile_baseline):
    """name -> function(x) running `steps` Langevin steps; the first is the baseline of the ratios."""
    runs = {"autograd": lambda x: autograd_langevin(model, x, steps, 0.3, 1.0, seed=0)}
    if compile_baseline:
        torch._dynamo.reset()  # one fresh compilation per shape, never dynamo's recompile limit
        score = torch.compile(model.score, dynamic=False)
        runs["autograd+compile"] = lambda x: autograd_langevin(model, x, steps, 0.3, 1.0, seed=0, score=score)
    for precision in precisions:
        runs[f"tritongcn {precision}"] = (
            lambda x, p=precision: langevin(model, x, steps, 0.3, 1.0, seed=0, precision=p))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chains", type=int, nargs="+", default=[16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    parser.add_argument("--steps", type=int, default=5, help="Langevin steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--precisions", nargs="+", default=["float32", "auto"],
                        choices=["auto", "float32", "bfloat16"],
                        help="tritongcn's sampler precisions (the autograd loops stay float32); auto is "
                             "the default tritongcn.langevin uses on this machine")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd autograd loop")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    device = torch.device(args.device)
    model = bench_model(device)
    # Name each precision by what it runs as here ("auto" resolves per machine), once each.
    precisions = list(dict.fromkeys(resolve_precision(p, device) for p in args.precisions))
    default = resolve_precision("auto", device)
    names = ["autograd"] + ["autograd+compile"] * (not args.no_compile) + [f"tritongcn {p}" for p in precisions]
    print(f"machine: {machine_name(device)}; torch {torch.__version__}; tritongcn's default precision here: "
          f"{default}; chain-steps/s (ratio to the autograd loop)")
    print(f"{'chains':>6} {'size':>5} " + " ".join(f"{name:>24}" for name in names))
    for n in args.chains:
        for size in args.sizes:
            x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device) * 50
            rates = {}
            for name, run in variants(model, args.steps, precisions, not args.no_compile).items():
                try:
                    rates[name] = n * args.steps / median_seconds(lambda: run(x), device, args.repeats)
                except Exception as err:  # torch.compile needs a C++ compiler; report, do not stop
                    print(f"  {name} failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
            if "autograd" not in rates:
                continue
            base = rates["autograd"]
            print(f"{n:>6} {size:>5} " + " ".join(
                f"{rates[name]:>15.1f} ({rates[name] / base:4.2f}x)" if name in rates else f"{'-':>24}"
                for name in names))
            append_results(args.out, "langevin", [{
                "device": str(device), "default_precision": default, "chains": n, "size": size,
                "steps": args.steps, "repeats": args.repeats, "chain_steps_per_s": rates,
                "ratio_to_autograd": {k: v / base for k, v in rates.items()}}], device)


if __name__ == "__main__":
    main()
