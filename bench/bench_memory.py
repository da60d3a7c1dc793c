"""Peak memory per chain of a Langevin step: tritongcn against the autograd loop (and its compiled form).

Each measurement runs in a fresh process, so no allocator cache or freed pages of another run hide the cost.
The process builds the texture net and the chains, then runs `--steps` Langevin steps and reports how far
memory rose above what it held before the steps: on the CPU the peak resident set (VmHWM, reset through
/proc/self/clear_refs) against the resident set before; on a GPU torch's peak allocation against the
allocation before. Each variant runs at two chain counts and the per-chain figure is the slope between them,
so fixed costs (oneDNN's scratch space, compiled code, the weights) drop out. The chains themselves are
allocated before the baseline and are not counted: every variant keeps them.

    python bench/bench_memory.py                      # CPU: 32 and 96 chains of 112 px
    python bench/bench_memory.py --device cuda --chains 256 1024
"""

import argparse
import subprocess
import sys
from pathlib import Path

import torch

VARIANTS = ("autograd", "autograd+compile", "tritongcn float32", "tritongcn bfloat16")


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(variant: str, chains: int, size: int, steps: int, device: str) -> int:
    """Bytes by which memory rises above its level before `steps` steps of `variant` (run in this process)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_langevin import variants
    from common import bench_model

    device = torch.device(device)
    model = bench_model(device)
    x = torch.randn(chains, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device) * 50
    precisions = [variant.split()[1]] if variant.startswith("tritongcn") else []
    run = variants(model, steps, precisions, variant == "autograd+compile")[variant]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run(x)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = _vm_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    run(x)
    return (_vm_kib("VmHWM") - before) * 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chains", type=int, nargs=2, default=[32, 96], metavar=("FEW", "MANY"))
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.jsonl")))
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CHAINS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(measure(args.child[0], int(args.child[1]), args.size, args.steps, args.device))
        return

    from common import append_results, machine_name

    few, many = args.chains
    print(f"machine: {machine_name(torch.device(args.device))}; {args.size} px, {args.steps} steps; "
          f"memory above the chains, per chain (slope between {few} and {many} chains)")
    print(f"{'variant':>20} {'at ' + str(few):>12} {'at ' + str(many):>12} {'per chain':>12}")
    per_chain = {}
    for variant in args.variants:
        rises = []
        for n in (few, many):
            cmd = [sys.executable, __file__, "--child", variant, str(n), "--size", str(args.size),
                   "--steps", str(args.steps), "--device", args.device]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{variant:>20} failed: {done.stderr.strip().splitlines()[-1][:100]}")
                break
            rises.append(int(done.stdout.split()[-1]))
        else:
            per_chain[variant] = (rises[1] - rises[0]) / (many - few)
            print(f"{variant:>20} {rises[0] / 2**20:>9.1f} MiB {rises[1] / 2**20:>9.1f} MiB "
                  f"{per_chain[variant] / 2**20:>8.2f} MiB")
    if "autograd" in per_chain:
        for variant, value in per_chain.items():
            print(f"{variant:>20}: {per_chain['autograd'] / value:.1f}x less than autograd" if value > 0 else
                  f"{variant:>20}: no measurable growth with the number of chains")
    append_results(args.out, "memory", [{"device": args.device, "size": args.size, "steps": args.steps,
                                         "chains": [few, many], "bytes_per_chain": per_chain}], args.device)


if __name__ == "__main__":
    main()
