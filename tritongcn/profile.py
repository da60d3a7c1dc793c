"""Where a Langevin step spends its time: one row per kernel call site, against the machine's peak.

Each call site of a step (every layer's `conv_relu_mask` and `masked_conv_transpose`, then
`langevin_update`) is timed over K steps after a warm-up. FLOPs are counted from the shapes (2 N K Ho Wo C
kh kw per convolution); the peak is measured once by a matmul probe in the same precision, and the
elementwise update's bytes (read x and B, write x) against a copy probe. The autograd loop a user would
write runs on the same weights and chains for the summary's comparison.
"""

import contextlib
import time
from collections import OrderedDict

import torch

from .chains import bits_bytes_per_chain
from .geometry import TEXTURE_LAYERS
from .kernels import langevin_update
from .model import GenerativeConvNet
from .precision import compute_dtype


def random_texture_net(in_channels: int = 3, layers=TEXTURE_LAYERS, device=None) -> GenerativeConvNet:
    """The net `tritongcn profile` and the benchmarks time without a model: the texture net (or a net of
    `layers`) with the release's random weights (seed 0) and biases of both signs drawn from N(0, 1), each
    layer's the first numbers of seed 1, so the bits are mixed as after learning and every figure repeats."""
    net = GenerativeConvNet(in_channels, layers, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    return net if device is None else net.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SiteTimer:
    """Context-manager factory for `GenerativeConvNet.grad_input(record=...)`: seconds, calls and FLOPs
    per call site."""

    def __init__(self, device):
        self.device = device
        self.sites = OrderedDict()
        self.enabled = True

    @contextlib.contextmanager
    def __call__(self, site, flops=0, nbytes=0):
        if not self.enabled:
            yield
            return
        _sync(self.device)
        start = time.perf_counter()
        yield
        _sync(self.device)
        row = self.sites.setdefault(site, {"seconds": 0.0, "calls": 0, "flops": 0, "bytes": 0})
        row["seconds"] += time.perf_counter() - start
        row["calls"] += 1
        row["flops"] += flops
        row["bytes"] += nbytes


def median_seconds(fn, device, repeats=3):
    """Median wall seconds of `fn` over `repeats` runs after one warm-up run (synchronised on a GPU)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_probes(device, precision="float32"):
    """(GFLOP/s of a square matmul in the sampler's precision, GB/s of a large copy) measured here."""
    n = 2048
    dtype = compute_dtype(precision)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    # The matmul in the arithmetic the convolutions it is compared with use: TF32 where cuDNN may use it.
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        gflops = 2 * n**3 / median_seconds(lambda: a @ b, device) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    src = torch.empty(1 << 25, device=device)
    dst = torch.empty_like(src)
    gbs = 2 * src.numel() * 4 / median_seconds(lambda: dst.copy_(src), device) / 1e9
    return gflops, gbs


def autograd_saved_bytes_per_chain(model, x, sigma, boundary):
    """Bytes of the tensors autograd saves for dE/dI per chain (weights excluded), counted with hooks."""
    weights = {p.data_ptr() for p in model.parameters()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.data_ptr(), t.numel())
        if t.data_ptr() not in weights and key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    x = x.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        energy = x.pow(2).sum() / (2 * sigma**2) - model.score(x, boundary).sum()
    torch.autograd.grad(energy, x)
    return total / x.shape[0]


def autograd_langevin(model, x, steps, step_size, sigma, boundary="zero", seed=0, score=None):
    """The loop a user would write: autograd for dE/dI, torch.randn for the noise.

    `score(x, boundary)` defaults to `model.score`; pass `torch.compile(model.score)` for the compiled
    variant (autograd then runs the compiled forward and backward graphs).
    """
    score = score or model.score
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x = x.detach().clone()
    for _ in range(steps):
        x.requires_grad_(True)
        energy = x.pow(2).sum() / (2 * sigma**2) - score(x, boundary).sum()
        (grad,) = torch.autograd.grad(energy, x)  # dE/dI = I / sigma^2 - df/dI
        with torch.no_grad():
            x = x - 0.5 * step_size**2 * grad + step_size * torch.randn(x.shape, generator=gen, device=x.device)
    return x.detach()


def profile_steps(model, x, steps, step_size=0.3, sigma=1.0, boundary="zero", backend="auto",
                  precision="float32", warmup=1, trace=None, compare=True):
    """Time `steps` Langevin steps of the chains `x` per call site; returns a report dict."""
    device = x.device
    timer = SiteTimer(device)
    x = x.detach().clone()
    numel = x.numel()

    def step(t):
        grad = model.grad_input(x, backend=backend, boundary=boundary, precision=precision, record=timer)
        with timer("langevin_update", nbytes=3 * numel * x.element_size()):
            langevin_update(x, grad, step_size, sigma, seed=0, offset=t * numel, out=x, backend=backend)

    with torch.no_grad():
        timer.enabled = False
        for t in range(warmup):
            step(t)
        timer.enabled = True
        _sync(device)
        start = time.perf_counter()
        for t in range(warmup, warmup + steps):
            step(t)
        _sync(device)
        seconds = time.perf_counter() - start
        if trace:
            timer.enabled = False
            with torch.profiler.profile() as prof:
                step(warmup + steps)
            prof.export_chrome_trace(str(trace))
    chains = x.shape[0]
    report = {"chains": chains, "steps": steps, "seconds": seconds, "chain_steps_per_s": chains * steps / seconds,
              "sites": {site: dict(row, seconds_per_step=row["seconds"] / steps, flops_per_step=row["flops"] / steps,
                                   bytes_per_step=row["bytes"] / steps)
                        for site, row in timer.sites.items()},
              "bits_bytes_per_chain": bits_bytes_per_chain(model, x.shape[1:], boundary)}
    if compare:
        report.update(_compare_with_autograd(model, x, steps, step, warmup, step_size, sigma, boundary, timer))
    return report


COMPARE_ROUNDS = 3  # alternating rounds of both loops: the ratio's spread shows how steady the machine was


def _compare_with_autograd(model, x, steps, step, first_step, step_size, sigma, boundary, timer) -> dict:
    """Chain-steps/s of our step (without the per-site timers' synchronisations) and of the autograd loop,
    in COMPARE_ROUNDS alternating rounds of `steps` steps each after a warm-up of the autograd loop: the
    medians, and the smallest and largest of the rounds' ratios."""
    device, chains = x.device, x.shape[0]
    autograd_langevin(model, x, 1, step_size, sigma, boundary)
    ours, theirs = [], []
    timer.enabled = False
    t = first_step
    for _ in range(COMPARE_ROUNDS):
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(steps):
                step(t)
                t += 1
        _sync(device)
        ours.append(chains * steps / (time.perf_counter() - start))
        start = time.perf_counter()
        autograd_langevin(model, x, steps, step_size, sigma, boundary)
        _sync(device)
        theirs.append(chains * steps / (time.perf_counter() - start))
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    median = COMPARE_ROUNDS // 2
    return {"compared_chain_steps_per_s": sorted(ours)[median], "autograd_chain_steps_per_s": sorted(theirs)[median],
            "speedup_range": (ratios[0], ratios[-1]), "compare_rounds": COMPARE_ROUNDS,
            "autograd_saved_bytes_per_chain": autograd_saved_bytes_per_chain(model, x[:1], sigma, boundary)}


def report_lines(report, gflops_peak, gbs_peak) -> list:
    """`profile_steps`'s report as the table `tritongcn profile` prints: one row per call site with its
    time, share of the step, FLOPs and share of the measured peak, then the summary against autograd."""
    step_seconds = report["seconds"] / report["steps"]
    lines = [f"{'call site':<26}{'ms/step':>10}{'share':>8}{'GFLOP':>9}{'GFLOP/s':>10}{'of peak':>9}{'GB/s':>8}"]
    for site, row in report["sites"].items():
        ms = row["seconds_per_step"] * 1e3
        share = row["seconds_per_step"] / step_seconds
        if row["flops"]:
            rate = row["flops_per_step"] / row["seconds_per_step"] / 1e9
            figures = f"{row['flops_per_step'] / 1e9:>9.2f}{rate:>10.1f}{rate / gflops_peak:>9.1%}{'':>8}"
        else:
            gbs = row["bytes_per_step"] / row["seconds_per_step"] / 1e9
            figures = f"{'':>9}{'':>10}{gbs / gbs_peak:>9.1%}{gbs:>8.1f}"
        lines.append(f"{site:<26}{ms:>10.2f}{share:>8.1%}{figures}")
    other = step_seconds - sum(r["seconds_per_step"] for r in report["sites"].values())
    lines.append(f"{'(between the kernels)':<26}{other * 1e3:>10.2f}{other / step_seconds:>8.1%}")
    summary = f"tritongcn {report['chain_steps_per_s']:.1f} chain-steps/s (timed per call site)"
    if "autograd_chain_steps_per_s" in report:
        ours, theirs = report["compared_chain_steps_per_s"], report["autograd_chain_steps_per_s"]
        low, high = report["speedup_range"]
        summary = (f"tritongcn {ours:.1f} chain-steps/s, autograd loop {theirs:.1f}: {ours / theirs:.2f}x "
                   f"(medians of {report['compare_rounds']} alternating rounds; the rounds' ratios "
                   f"{low:.2f}x to {high:.2f}x)")
    lines.append(summary)
    held = f"held per chain between the passes: bits {report['bits_bytes_per_chain'] / 1e3:.1f} kB"
    if "autograd_saved_bytes_per_chain" in report:
        saved = report["autograd_saved_bytes_per_chain"]
        held += f", autograd's saved tensors {saved / 1e3:.1f} kB ({saved / report['bits_bytes_per_chain']:.1f}x)"
    lines.append(held)
    return lines
