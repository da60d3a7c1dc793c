"""A large chain bank: thousands of chains advanced in memory-sized chunks, and the memory per chain.

Advances a `ChainBank` of the paper's texture net (random weights, biases of both signs) and reports
chain-steps/s, the chunk size its memory budget gave and the process's peak resident memory. Then, on one
chunk of chains, the bytes held per chain between the bottom-up and the top-down pass: the packed bits
tritongcn keeps (counted from the mask layout) against the tensors autograd saves for its backward pass
(counted with saved-tensor hooks on a real step). Appends a JSON line to
bench/results.jsonl.

    python bench/bench_bank.py                                   # 4096 chains of 64x64 RGB, 100 steps
    python bench/bench_bank.py --chains 256 --steps 10           # a quick look
"""

import argparse
import resource
import time

import torch

from tritongcn.chains import ChainBank, bits_bytes_per_chain
from tritongcn.profile import autograd_saved_bytes_per_chain, random_texture_net

from common import RESULTS, append_results, machine_name


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--boundary", default="zero", choices=["zero", "periodic"],
                        help="zero: the release's padding (64 px is not a multiple of the stride 3 the torus needs)")
    parser.add_argument("--memory-budget", type=float, default=1.0, help="GiB for work in flight")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    device = torch.device(args.device)
    model = random_texture_net(device=device)
    bank = ChainBank(model, args.chains, (3, args.size, args.size), boundary=args.boundary, init="noise",
                     memory_budget=int(args.memory_budget * 2**30), device=device)
    start = time.perf_counter()
    bank.advance(args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rate = args.chains * args.steps / seconds
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    chunk = bank.x[: min(bank.chunk_size, 64)]
    ours = bits_bytes_per_chain(model, chunk.shape[1:], args.boundary)
    autograd = autograd_saved_bytes_per_chain(model, chunk, bank.sigma, args.boundary)
    print(f"{machine_name(device)}: {args.chains} chains of {args.size} px, {args.steps} "
          f"steps in {seconds:.1f} s = {rate:.0f} chain-steps/s (chunks of {bank.chunk_size}); peak RSS "
          f"{peak_rss / 2**30:.2f} GiB")
    print(f"held per chain between the passes: bits {ours / 1e3:.1f} kB, autograd's saved tensors "
          f"{autograd / 1e3:.1f} kB ({autograd / ours:.1f}x)")
    append_results(args.out, "bank", [{
              "threads": torch.get_num_threads(), "device": str(device), "chains": args.chains, "size": args.size, "steps": args.steps,
              "boundary": args.boundary, "memory_budget_gib": args.memory_budget, "chunk": bank.chunk_size,
              "seconds": seconds, "chain_steps_per_s": rate, "peak_rss_bytes": peak_rss,
              "bits_bytes_per_chain": ours, "autograd_saved_bytes_per_chain": autograd}], device)


if __name__ == "__main__":
    main()
