"""The sampler's precision policy: which names there are, what "auto" means where, and their dtypes.

The convolutions of the sampler run in float32 or bfloat16 (fp32 accumulation inside the convolution);
the chains and the Langevin update are float32 in every case. Kept free of a top-level torch import so
that the command line can list the choices instantly.
"""

PRECISION_CHOICES = ("auto", "float32", "bfloat16")
CONCRETE_PRECISIONS = ("float32", "bfloat16")  # what "auto" resolves to, and what the kernels take
AUTO_PRECISION = "auto: bfloat16 on CPUs with native bfloat16 (AMX, AVX512-BF16) and on CUDA GPUs, else float32."


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16)."""
    import torch

    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device, backend: str = "auto") -> str:
    """The sampler precision `precision` means on `device` with kernel `backend`.

    "auto" is "bfloat16" where bf16 operands with fp32 accumulation are the fast path and learn as well:
    the torch kernels on a CPU with native bfloat16 (3 to 4x faster than float32) and the Triton kernels on
    a GPU (1.7x faster than TF32 on an H200, where a default learn in bf16 made the texture and one in
    float32 ran away; bench/README.md). It is "float32" elsewhere: CPUs that would only emulate bfloat16,
    and the Triton interpreter. "float32" and "bfloat16" mean themselves, except that the Triton
    interpreter has no bfloat16 and refuses it.
    """
    import torch

    from .kernels import resolve_backend

    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    device = torch.device(device)
    concrete = resolve_backend(backend, device)
    if precision == "auto":
        native = (device.type == "cpu" and concrete == "torch" and cpu_has_native_bfloat16()
                  or device.type == "cuda" and concrete == "triton")
        return "bfloat16" if native else "float32"
    if precision == "bfloat16" and concrete == "triton" and device.type != "cuda":
        raise ValueError("the Triton interpreter (TRITON_INTERPRET=1) has no bfloat16: use precision "
                         "'float32' with backend 'triton' on the CPU, or backend 'torch'")
    return precision


def compute_dtype(precision: str):
    """The torch dtype of a resolved precision ("float32" or "bfloat16"). Refuses "auto": the bank, the
    learner and the profiler resolve it once (`resolve_precision`), not at every Langevin step."""
    import torch

    if precision not in CONCRETE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(CONCRETE_PRECISIONS)} here, got {precision!r}; "
                         "resolve 'auto' once with tritongcn.precision.resolve_precision")
    return getattr(torch, precision)
