"""The runs behind the commands, called from Python: no click, messages through a Reporter, RunError."""

import json

import pytest

from conftest import texture_file
from tritongcn.runs import LearnRun, ReconstructRun, Reporter, RunError, SampleRun, learn, reconstruct, sample

TINY = dict(image_size=40, sample_size=36, chains=3, iterations=2, langevin_steps=2, sample_steps=3,
            finish_iterations=0)


def _collect():
    said, warned = [], []
    return Reporter(say=said.append, warn=warned.append), said, warned


def test_learn_run_writes_the_model_and_speaks_through_its_reporter(tmp_path):
    report, said, _ = _collect()
    out = learn(LearnRun(texture_file(tmp_path / "tex.png"), tmp_path / "run", dict(TINY, layers=1)), report)
    assert out == tmp_path / "run" and (out / "model.pt").exists() and (out / "grid.png").exists()
    assert said[0].startswith("learning 3-channel 40 px texture") and said[-1].startswith("done in")


def test_a_setting_at_fault_is_named_and_nothing_is_written(tmp_path):
    report, said, warned = _collect()
    with pytest.raises(RunError) as caught:
        learn(LearnRun(texture_file(tmp_path / "tex.png"), tmp_path / "run", dict(TINY, sample_size=40)), report)
    assert caught.value.option == "--sample-size" and "(try 42)" in str(caught.value)
    assert not (tmp_path / "run").exists() and not said and not warned


def test_sample_run_returns_its_folder_and_reports_its_figures(model_path, tmp_path):
    report, said, _ = _collect()
    out = sample(SampleRun(model_path, chains=2, steps=2, out_dir=tmp_path / "s", precision="float32"), report)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["chains"] == 2 and stats["steps"] == 2 and len(list((out / "samples").iterdir())) == 2
    assert said[-1].startswith(f"2 samples in {out}")


def test_sample_run_refuses_a_damaged_model_file_with_a_run_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("not a model")
    with pytest.raises(RunError):
        sample(SampleRun(path, out_dir=tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_reconstruct_run_returns_what_it_wrote(model_path, tmp_path):
    report, said, _ = _collect()
    image = texture_file(tmp_path / "tex.png")
    result = reconstruct(ReconstructRun(model_path, (image,), tmp_path / "r"), report)
    assert result == json.loads((tmp_path / "r" / "reconstruct.json").read_text())
    assert len(result["images"]) == 1 and said[-1].startswith("mean reconstruction error")


def test_one_sample_is_one_sample(model_path, tmp_path):
    report, said, _ = _collect()
    sample(SampleRun(model_path, chains=1, steps=1, out_dir=tmp_path / "s", precision="float32"), report)
    assert said[-1].startswith("1 sample in ")
