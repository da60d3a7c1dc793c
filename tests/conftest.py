"""What the tests share: the interpreter switch, a seed, tiny runs and the images they learn from."""

import itertools
import os

# Triton kernels run on the CPU through the interpreter in the tests; set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

# Seconds-long `learn` runs for the command-line tests; the finish has tests of its own.
TINY = ["--image-size", "40", "--sample-size", "36", "--chains", "3", "--iterations", "2",
        "--langevin-steps", "2", "--sample-steps", "3", "--finish", "0"]
# The same scale as LearnConfig settings, for the tests of the Learner itself.
TINY_CONFIG = dict(image_size=40, sample_size=36, chains=2, langevin_steps=2, iterations=3, layers=2,
                   finish_iterations=0)

# Awkward convolution shapes (batch, channels, height, width, filters, kernel, stride, padding) for the
# kernels of both backends: 1 and 3 input channels, odd and non-square images, strides 1 to 3, paddings
# 0 to 2, chain counts and output channels that are not powers of two (33 spills into a second mask word).
CONV_CASES = [
    (n, c, h, w, k, ks, stride, pad)
    for (n, c), (h, w), (k, ks), stride, pad in itertools.product(
        [(1, 1), (3, 3)], [(5, 5), (9, 7)], [(5, 3), (33, 2)], [1, 2, 3], [0, 1, 2])
    if h + 2 * pad >= ks
]


# The arithmetic of float32 products on a GPU's tensor cores when TF32 is on (torch's default for
# convolutions): float32 tensors, so an arithmetic of its own rather than a dtype.
TF32 = "tf32"
# The size of one rounding in each arithmetic the tests compare in, and what tolerances grow from. TF32's
# tensor cores cut both float32 operands to 10 mantissa bits, which a float64 reference cannot mimic; its
# ||error|| / ||ref|| reached 8.1e-4 on an H200, and 3e-3 keeps the rule past 7 such deviations.
RESOLUTION = {torch.float64: 1e-10, torch.float32: 1e-5, TF32: 3e-3, torch.bfloat16: 8e-3}


def tolerance(arithmetic, reduce_dim=1, scale=1.0):
    """The absolute error of a sum of `reduce_dim` products of size `scale` in `arithmetic` (a dtype, or
    TF32; see assert_close)."""
    return 2 * RESOLUTION[arithmetic] * float(scale) * reduce_dim ** 0.5


def assert_close(actual, expected, reduce_dim=1, scale=1.0, arithmetic=None):
    """`actual` as close to `expected` (a float64 reference, or another backend's answer) as its arithmetic
    allows (`actual`'s dtype unless named: TF32 for float32 tensors from tensor cores), after FlagGems'
    `gems_assert_close`: each output sums `reduce_dim` products of numbers of size `scale`, and their
    roundings add up like a random walk, so the absolute tolerance grows as sqrt(reduce_dim). The one rule
    for every kernel and gradient comparison in the suite."""
    arithmetic = actual.dtype if arithmetic is None else arithmetic
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=RESOLUTION[arithmetic],
                               atol=tolerance(arithmetic, reduce_dim, scale))


def texture_file(path, size=48, colour=True):
    """A striped texture with noise written to `path`, so that no test reads files it did not write."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 128 + 60 * np.sin(xx * 0.8 + yy * 0.3) + rng.normal(0, 20, (size, size))
    if colour:
        arr = np.stack([base, base * 0.8, 255 - base], axis=2)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").save(path)
    else:
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "L").save(path)
    return path


def stripes(seed=0):
    """A (1, 3, 40, 40) mean-free striped texture with noise, as the Learner takes observed images."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    wave = 60 * torch.sin(xx * 0.8 + yy * 0.3) + 20 * torch.randn(40, 40, generator=g)
    return torch.stack([wave, 0.8 * wave, -wave]).unsqueeze(0)


def run_sample(model_path, out, *args):
    """`tritongcn sample MODEL --out OUT --size 36 ARGS...` through click's runner."""
    from tritongcn.cli import main

    return CliRunner().invoke(main, ["sample", str(model_path), "--out", str(out), "--size", "36", *args])


def saved_chains(out, name="chains.pt"):
    return torch.load(out / name, weights_only=True)


def pytest_collection_modifyitems(config, items):
    """The `cuda` tier runs only on a CUDA GPU with the Triton kernels compiled, not interpreted."""
    from tritongcn.kernels.launch import interpreting

    if torch.cuda.is_available() and not interpreting():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and TRITON_INTERPRET=0 (bench/gpu_check.sh runs this tier)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _auto_precision_as_on_a_bfloat16_cpu(monkeypatch):
    """Precision "auto" resolves as on a CPU with native bfloat16 (AMX or AVX512-BF16), whichever CPU runs
    the suite, so that no result depends on the host: a test that means a precision names it, and the
    tests of "auto" itself patch this again."""
    import tritongcn.precision

    monkeypatch.setattr(tritongcn.precision, "cpu_has_native_bfloat16", lambda: True)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    """model.pt of a tiny `tritongcn learn` run, for the tests of what uses a learned model."""
    from tritongcn.cli import main

    folder = tmp_path_factory.mktemp("learned")
    image = texture_file(folder / "tex.png")
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(folder / "run"), *TINY])
    assert result.exit_code == 0, result.output
    return folder / "run" / "model.pt"
