"""Two CPU processes under torchrun (gloo) against one process: same chains, same learned model."""

import json
import os
import subprocess
import sys

import torch
from click.testing import CliRunner
from conftest import TINY, texture_file
from conftest import run_sample, saved_chains

from tritongcn.cli import main


def _torchrun(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "tritongcn", *args], capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_two_processes_learn_the_single_process_model(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    # float32: the processes run one thread each and this one more, and bfloat16's coarser rounding of
    # differently ordered sums flips a few ReLU units near zero, which then drift apart over the run.
    args = [*TINY, "--precision", "float32"]
    one = CliRunner().invoke(main, ["learn", str(image), "--out", str(tmp_path / "one"), *args])
    assert one.exit_code == 0, one.output
    _torchrun("learn", str(image), "--out", str(tmp_path / "two"), *args)
    a = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    for name, weight in a["model"].items():
        torch.testing.assert_close(b["model"][name], weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b["chains"], a["chains"], atol=1e-3, rtol=1e-4)
    gaps = [[json.loads(line)["gap"] for line in open(tmp_path / run / "metrics.jsonl")] for run in ("one", "two")]
    assert len(gaps[0]) == len(gaps[1]) and all(abs(x - y) <= 1e-3 * max(1, abs(x)) for x, y in zip(*gaps))


def test_two_processes_under_torchrun_give_the_single_process_chains(model_path, tmp_path):
    args = ["sample", str(model_path), "--size", "36", "--chains", "4", "--steps", "3", "--init", "noise"]
    single = run_sample(model_path, tmp_path / "one", "--chains", "4", "--steps", "3", "--init", "noise")
    assert single.exit_code == 0, single.output
    _torchrun(*args, "--out", str(tmp_path / "two"))
    shards = [saved_chains(tmp_path / "two", f"chains.rank{r}.pt") for r in (0, 1)]
    assert [s["first_chain"] for s in shards] == [0, 2]
    torch.testing.assert_close(torch.cat([s["x"] for s in shards]), saved_chains(tmp_path / "one")["x"],
                               atol=1e-3, rtol=1e-4)
    assert sorted(p.name for p in (tmp_path / "two" / "samples").iterdir()) == [f"{i:05d}.png" for i in range(4)]
    stats = json.loads((tmp_path / "two" / "stats.json").read_text())
    assert stats["processes"] == 2 and len(stats["per_chain"]["energy"]) == 4
    # Each process resumes its own shard.
    _torchrun("sample", str(model_path), "--size", "36", "--chains", "4", "--steps", "5", "--resume",
              "--out", str(tmp_path / "two"))
    assert [saved_chains(tmp_path / "two", f"chains.rank{r}.pt")["steps"].tolist() for r in (0, 1)] == [[5, 5], [5, 5]]
