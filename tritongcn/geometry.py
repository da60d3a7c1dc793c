"""Layer geometry: the layer specs of the paper's nets, what a stack of them sees and how it strides, and the
one rule for which image sides a net can score. Free of torch, so the command line checks sizes instantly."""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerSpec:
    out_channels: int  # number of filters
    kernel_size: int  # square kernels, as in the paper
    stride: int = 1
    padding: int = 0  # zero padding on every side

    def __post_init__(self):
        if min(self.out_channels, self.kernel_size, self.stride) < 1 or self.padding < 0:
            raise ValueError(f"a layer needs out_channels, kernel_size, stride >= 1 and padding >= 0: {self}")


# The paper's texture net with the MatConvNet release's padding (frame_config.m, add_bottom_filters.m).
TEXTURE_LAYERS = (
    LayerSpec(100, 15, stride=3, padding=2),
    LayerSpec(64, 5, stride=1, padding=2),
    LayerSpec(30, 3, stride=1, padding=2),
)
# The texture net with a fourth layer of our own (`learn --layers 4`): 30 filters of 5x5 over the third
# layer's 30 maps widen what a top unit sees from 33 to 45 px, for structures larger than the paper's net
# sees, like rose's flower heads and their spacing (measured in bench/TUNING.md: better on some seeds, a
# collapse of new chains on another). `GenerativeConvNet.texture` holds it only when asked for.
DEEPER_TEXTURE_LAYERS = TEXTURE_LAYERS + (LayerSpec(30, 5, stride=1, padding=2),)
# The paper's object net (Experiment 2), topped by one fully connected filter over the whole map.
OBJECT_LAYERS = (
    LayerSpec(100, 7, stride=2),
    LayerSpec(64, 5),
    LayerSpec(20, 3),
)
BOUNDARIES = ("zero", "valid", "periodic")


def receptive_field(layers) -> int:
    """Side in pixels of the input window one unit of the last of `layers` sees."""
    size, jump = 1, 1
    for spec in layers:
        size += (spec.kernel_size - 1) * jump
        jump *= spec.stride
    return size


def total_stride(layers) -> int:
    """Product of the strides: periodic images need sides that are multiples of it."""
    return math.prod(spec.stride for spec in layers)


def size_problem(height: int, width: int, layers, boundary: str) -> str | None:
    """Why images of height x width cannot be scored by `layers` under `boundary`, or None if they can:
    on the torus the sides must be multiples of the total stride; without padding ("valid") at least one
    unit's window must fit inside the image. Zero padding takes any size."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    if boundary == "periodic":
        step = total_stride(layers)
        if height % step or width % step:
            return f"periodic images need sides that are multiples of {step}, got {height}x{width}"
    elif boundary == "valid" and min(height, width) < receptive_field(layers):
        return (f"a {height}x{width} image has no unit whose window fits inside it "
                f"(receptive field {receptive_field(layers)} px)")
    return None


def conv_flops(input_shape, w_shape, output_shape) -> int:
    """Multiply-adds x 2 of a convolution (or its transposed pass): 2 N K Ho Wo C kh kw."""
    n, k, ho, wo = output_shape
    _, c, kh, kw = w_shape
    return 2 * n * k * ho * wo * c * kh * kw
