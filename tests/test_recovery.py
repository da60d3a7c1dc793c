"""Nothing lost, nothing let in: checkpoints, resuming, interrupts, divergence, unsafe files, memory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import TINY, texture_file
from tritongcn import __version__
from tritongcn.cli import main
from tritongcn.checkpoints import load_checkpoint, save_checkpoint
from tritongcn.io import InputError

# Two layers, so that a resume can land inside the second one.
RUN = [*TINY, "--layers", "2", "--iterations", "4"]


def _learn(image, out, *args):
    return CliRunner().invoke(main, ["learn", str(image), "--out", str(out), *RUN, *args])


def _signal_at(monkeypatch, iteration: int, signum=signal.SIGTERM):
    """Send this process `signum` while the learner computes its `iteration`-th iteration (1-based, in all)."""
    from tritongcn.learn import Learner

    step, calls = Learner.step, []

    def step_and_signal(self):
        calls.append(1)
        if len(calls) == iteration:
            os.kill(os.getpid(), signum)
        return step(self)

    monkeypatch.setattr(Learner, "step", step_and_signal)


@pytest.mark.parametrize("extra, stop, saved_at", [
    ((), 6, (2, 2)),  # inside the second layer
    (("--finish", "4"), 11, (2, 7)),  # inside the finish

])
def test_an_interrupted_run_resumes_to_the_same_model(tmp_path, monkeypatch, extra, stop, saved_at):
    image = texture_file(tmp_path / "tex.png")
    straight = tmp_path / "straight"
    assert _learn(image, straight, *extra).exit_code == 0

    out = tmp_path / "split"
    with monkeypatch.context() as m:
        _signal_at(m, stop)
        result = _learn(image, out, *extra)
    assert result.exit_code == 130, result.output
    assert "SIGTERM" in result.output and "--resume" in result.output
    saved = load_checkpoint(out / "checkpoint.pt")
    assert (saved["layer"], saved["iteration"], len(saved["records"])) == (*saved_at, stop)
    assert not (out / "model.pt").exists()

    refused = _learn(image, out, *extra)
    assert refused.exit_code == 1 and "--resume" in refused.output
    result = _learn(image, out, "--resume")
    assert result.exit_code == 0, result.output
    assert not (out / "checkpoint.pt").exists()  # model.pt holds the finished state
    assert "after the resume (learning" in result.output and "in all)" in result.output

    a, b = load_checkpoint(straight / "model.pt"), load_checkpoint(out / "model.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["chains"], b["chains"])
    lines = lambda run: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert strip(lines(out)) == strip(lines(straight))


def test_resume_needs_a_checkpoint_and_the_same_images(tmp_path, monkeypatch):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    result = _learn(image, out, "--resume")
    assert result.exit_code == 1 and "nothing to resume" in result.output
    with monkeypatch.context() as m:
        _signal_at(m, 2)
        assert _learn(image, out).exit_code == 130
    other = texture_file(tmp_path / "other.png", size=56)
    result = _learn(other, out, "--resume")
    assert result.exit_code == 1 and "same images" in result.output
    result = _learn(image, out, "--overwrite")  # starting again drops the old checkpoint
    assert result.exit_code == 0 and not (out / "checkpoint.pt").exists()


def test_checkpoints_are_written_every_n_iterations(tmp_path, monkeypatch):
    import tritongcn.checkpoints

    written = []
    save = tritongcn.checkpoints.save_checkpoint
    monkeypatch.setattr(tritongcn.checkpoints, "save_checkpoint",
                        lambda state, path: (written.append((Path(path).name, state["layer"], state["iteration"])),
                                             save(state, path)))
    image = texture_file(tmp_path / "tex.png")
    assert _learn(image, tmp_path / "run", "--checkpoint-every", "3").exit_code == 0
    # 2 layers x 4 iterations: checkpoints after the 3rd and the 6th in all, then the finished model.
    assert written == [("checkpoint.pt", 1, 3), ("checkpoint.pt", 2, 2), ("model.pt", 2, 4)]


def test_sigint_to_a_real_process_saves_a_checkpoint_and_exits_130(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    # Slow enough iterations (many Langevin steps) that the run is still going when the signal comes.
    args = [sys.executable, "-m", "tritongcn", "learn", str(image), "--out", str(out), "--image-size", "40",
            "--sample-size", "36", "--chains", "2", "--layers", "1", "--iterations", "400",
            "--langevin-steps", "40", "--checkpoint-every", "100000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "SIGINT" in stderr
    saved = load_checkpoint(out / "checkpoint.pt")
    assert 2 <= len(saved["records"]) < 400 and saved["iteration"] == len(saved["records"])
    assert len(metrics.read_text().splitlines()) == len(saved["records"])


@pytest.mark.parametrize("chunk, saved_steps", [
    (None, [1, 1, 1]),  # the first segment is a single step of every chain; the signal ends the run after it
    (1, [1, 0, 0]),  # one chain at a time: the stop comes between chunks, in the middle of a step
])
def test_sampling_interrupted_by_a_signal_resumes_exactly(model_path, tmp_path, monkeypatch, chunk, saved_steps):
    import tritongcn.chains
    import tritongcn.runs.sampling

    def sample(out, *args):
        return CliRunner().invoke(main, ["sample", str(model_path), "--out", str(out), "--size", "36",
                                         "--chains", "3", "--steps", "6", "--init", "noise", *args])

    assert sample(tmp_path / "straight").exit_code == 0
    langevin, calls = tritongcn.chains.langevin, []

    def langevin_and_signal(*args, **kwargs):  # Ctrl-C while the first chunk of chains is stepped
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return langevin(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(tritongcn.chains, "langevin", langevin_and_signal)
        if chunk:
            m.setattr(tritongcn.runs.sampling, "_chunk", lambda *args: chunk)
        result = sample(tmp_path / "split")
    assert result.exit_code == 130 and "SIGINT" in result.output
    state = torch.load(tmp_path / "split" / "chains.pt", weights_only=True)
    assert state["steps"].tolist() == saved_steps
    assert sample(tmp_path / "split", "--resume").exit_code == 0
    straight = torch.load(tmp_path / "straight" / "chains.pt", weights_only=True)
    resumed = torch.load(tmp_path / "split" / "chains.pt", weights_only=True)
    assert torch.equal(straight["x"], resumed["x"]) and resumed["steps"].tolist() == [6, 6, 6]


def test_divergence_stops_within_an_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    image = texture_file(tmp_path / "tex.png")
    out = tmp_path / "run"
    # The chains stay inside the image range whatever the step; a learning rate of 1e30 throws the weights
    # out of the float range within a few iterations instead.
    result = CliRunner().invoke(main, ["learn", str(image), "--out", str(out), "--image-size", "40",
                                       "--sample-size", "36", "--chains", "2", "--iterations", "50",
                                       "--layers", "1", "--lr", "1e30", "--checkpoint-every", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "diverged" in errors[0] and "--lr" in errors[0], result.output
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(records) < 50
    saved = load_checkpoint(out / "checkpoint.pt")  # the iteration before the bad one, intact
    assert len(saved["records"]) == len(records) and torch.isfinite(saved["chains"]).all()
    assert "checkpoint.pt" in errors[0] and not (out / "model.pt").exists()


@pytest.mark.parametrize("poison", ["chains", "weights"])
def test_the_learner_names_what_diverged(poison):
    from tritongcn import LearnConfig, Learner
    from conftest import TINY_CONFIG as LEARN_TINY, stripes

    learner = Learner(stripes(), LearnConfig(**LEARN_TINY))
    learner.step()
    if poison == "chains":
        learner.life.x[1, 0, 3, 3] = float("nan")
    else:
        learner.model.convs[0].bias.data[0] = float("inf")
    with pytest.raises(FloatingPointError, match="chains diverged" if poison == "chains" else "diverged"):
        learner.step()


class _RunsCode:
    """A pickle that would create a file when loaded by a plain unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_model_file_crafted_to_run_code_does_not_run_it(tmp_path, model_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    state = torch.load(model_path, weights_only=True)
    state["config"] = _RunsCode(marker)
    torch.save(state, evil)
    with pytest.raises(InputError, match="other than tensors"):
        load_checkpoint(evil)
    result = CliRunner().invoke(main, ["sample", str(evil), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not marker.exists()


def test_truncated_foreign_tampered_and_newer_model_files_are_refused(tmp_path, model_path):
    state = torch.load(model_path, weights_only=True)
    data = model_path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save({**state, "layer": "three"}, tmp_path / "retyped.pt")
    torch.save({**state, "version": "99.0.0"}, tmp_path / "newer.pt")
    nan_weights = {**state["model"], "convs.0.bias": torch.full_like(state["model"]["convs.0.bias"], float("nan"))}
    torch.save({**state, "model": nan_weights}, tmp_path / "nan.pt")
    wrong_shape = {**state["model"], "convs.0.weight": torch.zeros(5, 3, 15, 15)}
    torch.save({**state, "model": wrong_shape}, tmp_path / "reshaped.pt")
    expected = {"cut.pt": "not a readable", "foreign.pt": "not a tritongcn model", "retyped.pt": "'layer'",
                "newer.pt": "newer than this", "nan.pt": "not finite", "reshaped.pt": "damaged model file"}
    for name, words in expected.items():
        result = CliRunner().invoke(main, ["sample", str(tmp_path / name), "--out", str(tmp_path / f"s-{name}")])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, name
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / f"s-{name}").exists()


def test_checkpoints_carry_the_version_and_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    good = {"config": {}, "model_config": {}, "model": {}, "optimizer": {}, "chains": torch.zeros(1),
            "layer": 1, "iteration": 0, "langevin_steps_done": 0, "seconds": 0.0, "mean": torch.zeros(1)}
    save_checkpoint(good, path)
    assert load_checkpoint(path)["version"] == __version__
    before = path.read_bytes()

    def dies_halfway(obj, f):
        Path(f).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**good, "layer": 2}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_chunk_that_runs_out_of_memory_is_halved_and_the_samples_stay_the_same(monkeypatch):
    import tritongcn.chains
    from tritongcn import ChainBank, GenerativeConvNet

    model = GenerativeConvNet.texture(3, generator=torch.Generator().manual_seed(0))
    model.depth = 1

    def bank(**kwargs):
        return ChainBank(model, 6, (3, 30, 30), init="noise", seed=3, precision="float32", **kwargs)

    expected = bank()
    expected.advance(2)
    langevin, sizes = tritongcn.chains.langevin, []

    def langevin_with_little_memory(model, x, *args, **kwargs):
        sizes.append(len(x))
        if len(x) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return langevin(model, x, *args, **kwargs)

    monkeypatch.setattr(tritongcn.chains, "langevin", langevin_with_little_memory)
    told = []
    halved = bank(notify=told.append)
    halved.advance(1)
    halved.advance(1)
    assert torch.equal(halved.x, expected.x) and halved.steps.tolist() == [2] * 6
    assert sizes == [6, 3, 3, 3, 3] and len(told) == 1 and "halving" in told[0]

    monkeypatch.setattr(tritongcn.chains, "langevin", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")))
    with pytest.warns(RuntimeWarning, match="halving"), pytest.raises(MemoryError, match="one chain"):
        bank().advance(1)
    monkeypatch.setattr(tritongcn.chains, "langevin", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("a bug, not memory")))
    with pytest.raises(RuntimeError, match="a bug"):
        bank().advance(1)


@pytest.mark.slow
def test_soak_ten_thousand_langevin_steps_stay_finite_in_flat_memory():
    import resource

    from tritongcn import ChainBank
    from tritongcn.profile import random_texture_net

    model = random_texture_net(1)
    bank = ChainBank(model, 2, (1, 24, 24), init="noise", seed=0, precision="float32")

    def rss_kib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() // 1024

    bank.advance(1000)  # allocator caches and kernels warmed up
    baseline = rss_kib()
    for _ in range(9):
        bank.advance(1000)
        assert torch.isfinite(bank.x).all()
    assert int(bank.steps[0]) == 10000
    grown = rss_kib() - baseline
    assert grown < 20 * 1024, f"resident memory grew {grown} KiB over 9000 steps"
    # The chains sit near the model's scale, not drifting off: the Gaussian reference holds them.
    assert bank.x.abs().max() < 1e3


def test_saved_chains_that_are_damaged_or_tampered_with_are_refused(model_path, tmp_path):
    out = tmp_path / "s"
    args = ["sample", str(model_path), "--out", str(out), "--size", "36", "--chains", "2", "--steps", "1"]
    assert CliRunner().invoke(main, args).exit_code == 0
    state = torch.load(out / "chains.pt", weights_only=True)
    assert state["version"] == __version__
    cases = {"retyped": {**state, "x": "pixels"}, "nan": {**state, "x": state["x"] * float("nan")},
             "newer": {**state, "version": "99.0"}}
    for name, bad in cases.items():
        torch.save(bad, out / "chains.pt")
        result = CliRunner().invoke(main, [*args, "--steps", "2", "--resume"])
        assert result.exit_code == 1 and "Traceback" not in result.output, (name, result.output)
        assert len(result.output.strip().splitlines()) == 1, (name, result.output)
