import os

# Triton kernels run on the CPU through the interpreter in the tests; set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    """model.pt of a tiny `tritongcn learn` run, for the tests of what uses a learned model."""
    from click.testing import CliRunner
    from test_cli import TINY, _texture

    from tritongcn.cli import main

    folder = tmp_path_factory.mktemp("learned")
    image = _texture(folder / "tex.png")
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(folder / "run"), *TINY])
    assert result.exit_code == 0, result.output
    return folder / "run" / "model.pt"
