"""Packing ReLU activation patterns into bits, and unpacking them.

Layout shared by every backend: for a pre-activation tensor of shape (N, K, H, W), the mask is an int32
tensor of shape (N, K, ceil(H * W / 32)) whose word [n, k, q] holds unit (n, k, p) in bit p - 32 q, with
p = h * W + w the unit's position in the row-major map. Packing along positions costs at most 31 unused
bits per feature map, whatever the number of channels, so the bits are 32x smaller than float32
activations (a packing along channels would waste 28 of every 128 bits of a 100-channel layer). The
implicit-GEMM convolution packs 32 neighbouring output positions of a channel into a word in its epilogue.

CPU tensors are packed and unpacked by NumPy's packbits/unpackbits (vectorised byte loops; about 100x
faster than the tensor arithmetic below, which was most of a bfloat16 Langevin step on the CPU). Bytes are
read as little-endian words whatever the host's byte order, so both paths give the same words.
"""

import numpy as np
import torch

BITS_PER_WORD = 32


def words_for(channels: int) -> int:
    """Number of int32 words needed to hold `channels` bits."""
    return (channels + BITS_PER_WORD - 1) // BITS_PER_WORD


def mask_shape(shape) -> tuple:
    """Shape of the packed mask for a pre-activation tensor of `shape` (N, K, H, W)."""
    n, k, h, w = shape
    return (n, k, words_for(h * w))


def _bit_values(device) -> torch.Tensor:
    # 1 << j for j = 0..31 as int32; 1 << 31 is -2**31, which is still the right bit pattern.
    return torch.bitwise_left_shift(torch.ones(BITS_PER_WORD, dtype=torch.int32, device=device),
                                     torch.arange(BITS_PER_WORD, dtype=torch.int32, device=device))


def pack_mask(active: torch.Tensor) -> torch.Tensor:
    """Pack a boolean (N, K, H, W) tensor into the int32 layout above."""
    if active.dim() != 4:
        raise ValueError(f"pack_mask expects a 4-d (N, K, H, W) tensor, got shape {tuple(active.shape)}")
    return _pack_numpy(active) if active.device.type == "cpu" else _pack_tensor(active)


def _pack_tensor(active: torch.Tensor) -> torch.Tensor:
    n, k, h, w = active.shape
    words = words_for(h * w)
    bits = active.reshape(n, k, h * w).to(torch.int32)
    pad = words * BITS_PER_WORD - h * w
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    bits = bits.view(n, k, words, BITS_PER_WORD) * _bit_values(active.device)
    # The bits are distinct powers of two (1 << 31 is -2**31 in int32), so their sum is their bitwise OR.
    return bits.sum(dim=3, dtype=torch.int32)


def _pack_numpy(active: torch.Tensor) -> torch.Tensor:
    n, k, h, w = active.shape
    words = words_for(h * w)
    # Byte j of a map holds positions 8j..8j+7, position 8j+i in bit i ("little" bit order).
    packed = np.packbits(active.reshape(n, k, h * w).numpy(), axis=-1, bitorder="little")
    if packed.shape[-1] != 4 * words:  # whole words: the unused high bits of the last one stay 0
        packed = np.pad(packed, ((0, 0), (0, 0), (0, 4 * words - packed.shape[-1])))
    # Four bytes make a word, the first in its low byte.
    return torch.from_numpy(np.ascontiguousarray(packed).view("<i4").astype(np.int32, copy=False))


def unpack_mask(mask: torch.Tensor, shape) -> torch.Tensor:
    """The boolean (N, K, H, W) activation pattern stored in `mask`: equal to (pre-activation > 0)."""
    shape = tuple(int(s) for s in shape)
    if mask.dtype != torch.int32 or tuple(mask.shape) != mask_shape(shape):
        raise ValueError(f"mask of dtype {mask.dtype} and shape {tuple(mask.shape)} does not hold "
                         f"bits for shape {shape}: expected int32 {mask_shape(shape)}")
    return _unpack_numpy(mask, shape) if mask.device.type == "cpu" else _unpack_tensor(mask, shape)


def _unpack_numpy(mask: torch.Tensor, shape) -> torch.Tensor:
    n, k, h, w = shape
    data = np.ascontiguousarray(mask.numpy()).astype("<i4", copy=False).view(np.uint8)
    bits = np.unpackbits(data, axis=-1, count=h * w, bitorder="little")  # 0 or 1 per unit, as uint8
    return torch.from_numpy(bits).view(torch.bool).view(n, k, h, w)


def _unpack_tensor(mask: torch.Tensor, shape) -> torch.Tensor:
    n, k, h, w = shape
    bits = torch.bitwise_and(mask.unsqueeze(3), _bit_values(mask.device)) != 0
    return bits.view(n, k, -1)[..., : h * w].view(n, k, h, w)
