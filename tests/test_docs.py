"""The documentation's Python examples run as pasted, and its relative links lead somewhere.

Every ```python block of README.md and docs/python.md runs in a fresh interpreter, in a folder that holds a
copy of examples/ and a tiny model at runs/brick/model.pt (a seconds-long `tritongcn learn` of the bundled
brick, where the README's first command writes a real one). The examples then run as written, only
faster: the tiny model's Langevin steps and sizes are few and small. The one example that learns a model
itself gets the tiny settings, and the expansion a smaller canvas, by the substitutions below, which the
test checks are still there to make.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = [ROOT / "README.md", ROOT / "docs" / "python.md"]
LINKED = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "TUNING.md"]

# (text in an example, what the test runs instead), to keep the file under a minute on two cores: a full
# learning run takes minutes, the tiny one seconds; a smaller canvas to expand onto.
SUBSTITUTIONS = [
    ('settings={"seed": 1}',
     'settings={"seed": 1, "image_size": 40, "sample_size": 36, "chains": 3, "iterations": 2, '
     '"langevin_steps": 2, "sample_steps": 3, "finish_iterations": 0}'),
    ("canvas(image, 448, 448)", "canvas(image, 256, 256)"),
]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks():
    for path in DOCUMENTED:
        for number, code in enumerate(BLOCK.findall(path.read_text()), 1):
            yield pytest.param(code, id=f"{path.relative_to(ROOT)}-{number}")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A folder with examples/ and runs/brick/model.pt, as after the README's first command."""
    from tritongcn.cli import main

    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "examples", folder / "examples")
    result = CliRunner().invoke(main, ["learn", str(folder / "examples" / "brick.png"),
                                       "--out", str(folder / "runs" / "brick"), *TINY])
    assert result.exit_code == 0, result.output
    return folder


def test_every_substitution_applies():
    code = "".join(BLOCK.findall("".join(path.read_text() for path in DOCUMENTED)))
    for old, _ in SUBSTITUTIONS:
        assert old in code, f"no example holds {old!r} any more: update SUBSTITUTIONS"


@pytest.mark.parametrize("code", list(python_blocks()))
def test_python_example_runs_pasted_alone(code, workdir, tmp_path):
    for old, new in SUBSTITUTIONS:
        code = code.replace(old, new)
    here = tmp_path / "cwd"
    shutil.copytree(workdir, here)  # each example in its own copy: none sees another's files
    result = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an address on the web
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: no heading of {linked.name} has the anchor #{anchor}"
