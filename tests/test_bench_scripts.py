"""Bench scripts that no GPU run exercises, run on the CPU at tiny sizes so that they cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import texture_file

ROOT = Path(__file__).resolve().parent.parent


def test_the_pyramid_prototype_learns_every_scale_and_scores_its_fresh_samples(tmp_path):
    texture = texture_file(tmp_path / "tex.png", size=64)
    out = tmp_path / "records.jsonl"
    args = ["--size", "64", "--coarsest", "32", "--scales", "2", "--widths", "8,8", "--iterations", "2",
            "--steps", "2", "--chains", "2", "--bank", "2", "--crop", "40", "--tag", "tiny",
            "--out", str(out), "--sheets", str(tmp_path)]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "pyramid_prototype.py"), str(texture), *args],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT / "bench", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["sizes"] == [32, 64] and record["tag"] == "tiny" and record["bench"] == "pyramid_prototype"
    assert record["eval"]["samples"]["patch_swd"] > 0
    assert record["per_scale"]["64"]["samples"] == record["eval"]["samples"]  # 32 px is too small to score
    assert (tmp_path / "pyramid_tex_tiny_s0.png").exists()
