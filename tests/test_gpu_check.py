"""bench/gpu_check.py, the prepared GPU check, in its CPU smoke mode (interpreter, tiny shapes): every
section runs end to end, so the script cannot rot between the GPU runs it exists for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_runs_every_section(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "check.json").read_text())
    assert {"correctness", "step", "profile", "sample", "blocks", "precision", "graphs"} <= set(report)
    assert all(row["ok"] for row in report["correctness"])
    assert not any("error" in report[name] for name in ("sample", "profile", "precision")
                   if isinstance(report[name], dict))
    assert report["step"][0]["chain_steps_per_s"]["autograd"] > 0
    assert all(row["same_chains"] for row in report["graphs"])
