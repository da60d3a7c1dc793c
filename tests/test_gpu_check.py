"""The prepared GPU scripts on the CPU, so that they cannot rot between the GPU runs they exist for:
bench/gpu_check.py in its smoke mode (interpreter, tiny shapes), every section end to end, and
bench/gpu_screen.py with a tiny recipe."""

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
    assert {"step", "profile", "sample", "blocks", "precision", "graphs"} <= set(report)
    assert "correctness" not in report  # the cuda test tier's
    assert not any("error" in report[name] for name in ("sample", "profile", "precision")
                   if isinstance(report[name], dict))
    assert report["step"][0]["chain_steps_per_s"]["autograd"] > 0
    assert all(row["same_chains"] for row in report["graphs"])


def test_gpu_screen_runs_every_variant_and_brings_back_its_records(tmp_path):
    """bench/gpu_screen.py on the CPU with a tiny recipe: each texture x seed x variant runs once, its record
    names the variant and the replaced layer, and the samples' sheets are in the archive."""
    import tarfile
    from conftest import texture_file
    texture = texture_file(tmp_path / "tex.png", size=96)
    tiny = "--set image_size=96 iterations=2 finish_iterations=1 finish_langevin_steps=2 sample_steps=2"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_screen.py"), "--textures", str(texture),
                           "--seeds", "3", "--device", "cpu", "--workers", "2", "--threads", "1",
                           "--out", str(out), "--work", str(tmp_path / "work"),
                           "--variant", f"base={tiny}", "--variant", f"wide={tiny} --layer 1=16,5,1,2"],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "tuning.jsonl").read_text().splitlines()]
    assert sorted((r["variant"], r["settings"]["seed"]) for r in records) == [("base", 3), ("wide", 3)]
    assert all("error" not in r and r["eval"]["samples"]["patch_swd"] > 0 for r in records)
    assert all(("layers" in r) == (r["variant"] == "wide") for r in records)
    assert all(r["layers"][1]["out_channels"] == 16 for r in records if r["variant"] == "wide")
    with tarfile.open(out / "samples.tgz") as tar:
        assert sorted(tar.getnames()) == ["tex_s3_base.png", "tex_s3_wide.png"]
