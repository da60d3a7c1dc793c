"""What every Triton launcher of the package shares: the interpreter switch, the dot precision, the block
shapes of each layer, and the weights laid out for the kernels once per weight update.

Block shapes are a fixed rule, not autotuned: a config's BLOCK_K sets the order in which a dot sums its
terms, so tuning would make chains differ from run to run and from chunk size to chunk size. The rule
depends on the layer (channels, kernel, dtype) only, never on the number of chains, so a chunked bank
computes every chain with the same arithmetic as one big batch.
"""

import os
import weakref

import torch


def interpreting() -> bool:
    """Whether Triton runs kernels on the CPU interpreter (TRITON_INTERPRET set to anything but 0 or empty)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 products as torch's own convolution on the same GPU computes them (TF32 if cuDNN may use it)."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and not interpreting():
        return "tf32"
    return "ieee"


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# Replaces the rule's values below, for benchmarks that compare block shapes (bench/gpu_check.py).
BLOCK_OVERRIDE: dict = {}


def gemm_blocks(columns: int, reduction_block: int, dtype: torch.dtype) -> dict:
    """Launch meta-parameters of an implicit GEMM with `columns` output columns (one block covers them
    all up to 128, so every input tile is gathered once) and a reduction walked `reduction_block` at a time.

    BLOCK_M is a multiple of 32 (a tile packs whole mask words). The interpreter gets small tiles and one
    warp: it runs every lane in NumPy, and its time grows with the tile.
    """
    block_n = min(128, max(16, next_power_of_2(columns)))
    if BLOCK_OVERRIDE:
        return {"BLOCK_M": 128, "BLOCK_N": block_n, "BLOCK_K": reduction_block, "num_warps": 4, "num_stages": 3,
                **BLOCK_OVERRIDE}
    if interpreting():
        return {"BLOCK_M": 32, "BLOCK_N": block_n, "BLOCK_K": reduction_block, "num_warps": 1, "num_stages": 1}
    # Two fp32 operand tiles of 128 x 64 take 64 KB of shared memory per pipeline stage: fewer stages there.
    stages = 3 if dtype == torch.bfloat16 or reduction_block <= 32 else 2
    return {"BLOCK_M": 128, "BLOCK_N": block_n, "BLOCK_K": reduction_block,
            "num_warps": 8 if block_n >= 128 else 4, "num_stages": stages}


def channel_block(channels: int, dtype: torch.dtype) -> int:
    """Channels summed per dot: a power of two of at least 16 (the tensor cores' K), at most 64 in bf16
    and 32 in fp32 (the same shared memory per stage)."""
    return min(64 if dtype == torch.bfloat16 else 32, max(16, next_power_of_2(channels)))


# A small channel count (the RGB input) is walked kernel row by kernel row, (channel, column) pairs together,
# instead of one dot per tap whose 3 of 16 lanes would do work.
ROWS_BELOW_CHANNELS = 16
ROW_BLOCK = 16


class LayoutCache:
    """Weights re-laid out for a kernel, kept while the source tensor lives and is not modified in place.

    Keyed by the tensor's identity and its version counter (bumped by every in-place update, such as an
    optimizer step): a Langevin run lays each layer's weights out once, not once per step.
    """

    def __init__(self):
        self._entries = {}

    def get(self, w: torch.Tensor, kind: str, make):
        key = (id(w), kind)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is w and entry[1] == w._version:
            return entry[2]
        laid_out = make(w)
        self._entries = {k: e for k, e in self._entries.items() if e[0]() is not None}  # forget dead sources
        self._entries[key] = (weakref.ref(w), w._version, laid_out)
        return laid_out


LAYOUTS = LayoutCache()


def strides4(t: torch.Tensor) -> tuple:
    """The four strides of an (N, C, H, W) tensor in elements, whatever its memory format."""
    return tuple(int(s) for s in t.stride())


def activation_format(channels: int) -> torch.memory_format:
    """Memory format of a float activation the kernels write: channels last when there are enough channels
    for the next kernel's loads along channels to be wide and contiguous."""
    return torch.channels_last if channels >= ROWS_BELOW_CHANNELS else torch.contiguous_format
