import json
import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import run_sample, saved_chains
from tritongcn.cli import main


def test_sample_writes_pngs_grid_gif_stats_and_chains(model_path, tmp_path):
    out = tmp_path / "s"
    result = run_sample(model_path, out, "--chains", "5", "--steps", "4", "--gif", "2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    assert Image.open(out / "samples" / "00000.png").size == (36, 36)
    assert Image.open(out / "grid.png").size[0] > 3 * 36
    gif = Image.open(out / "evolution.gif")
    assert gif.n_frames == 5  # the start and one frame per step
    stats = json.loads((out / "stats.json").read_text())
    assert stats["steps"] == 4 and len(stats["per_chain"]["energy"]) == 5
    assert all(0 <= a <= 1 for a in stats["per_chain"]["active"])
    state = saved_chains(out)
    assert state["steps"].tolist() == [4] * 5 and state["x"].shape == (5, 3, 36, 36)


def test_resume_continues_exactly(model_path, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_sample(model_path, straight, "--chains", "3", "--steps", "6", "--init", "noise").exit_code == 0
    assert run_sample(model_path, split, "--chains", "3", "--steps", "2", "--init", "noise").exit_code == 0
    refused = run_sample(model_path, split, "--chains", "3", "--steps", "6")
    assert refused.exit_code != 0 and "--resume" in refused.output
    result = run_sample(model_path, split, "--chains", "3", "--steps", "6", "--resume")
    assert result.exit_code == 0, result.output
    assert torch.equal(saved_chains(split)["x"], saved_chains(straight)["x"])
    assert saved_chains(split)["steps"].tolist() == [6, 6, 6]
    # A resumed bank keeps the precision it ran in, and says so when asked for another.
    ran_in = saved_chains(split)["precision"]
    other = "float32" if ran_in == "bfloat16" else "bfloat16"
    result = run_sample(model_path, split, "--chains", "3", "--steps", "7", "--resume", "--precision", other)
    assert result.exit_code == 0 and f"resuming in {ran_in}" in result.output
    assert saved_chains(split)["precision"] == ran_in


def test_save_every_saves_the_chains_during_the_run(model_path, tmp_path, monkeypatch):
    import tritongcn.runs.sampling as sampling

    saved_at, save = [], sampling._save_bank
    monkeypatch.setattr(sampling, "_save_bank", lambda bank, path: (saved_at.append(bank.steps.tolist()),
                                                                      save(bank, path)))
    assert run_sample(model_path, tmp_path / "s", "--chains", "2", "--steps", "5", "--save-every", "2").exit_code == 0
    assert saved_at == [[2, 2], [4, 4], [5, 5]]  # every 2 steps, then at the end
    assert saved_chains(tmp_path / "s")["steps"].tolist() == [5, 5]
    saved_at.clear()
    assert run_sample(model_path, tmp_path / "t", "--chains", "2", "--steps", "5").exit_code == 0
    assert saved_at == [[5, 5]]


def test_seed_decides_the_samples(model_path, tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run_sample(model_path, tmp_path / name, "--chains", "2", "--steps", "2", "--seed", str(seed),
                       "--init", "noise").exit_code == 0
        runs[name] = saved_chains(tmp_path / name)["x"]
    assert torch.equal(runs["a"], runs["b"]) and not torch.equal(runs["a"], runs["c"])


def test_npz_format_and_memory_budget(model_path, tmp_path):
    out = tmp_path / "s"
    result = run_sample(model_path, out, "--chains", "4", "--steps", "2", "--format", "npz", "--memory-budget", "300k")
    assert result.exit_code == 0, result.output
    data = np.load(out / "samples.npz")
    assert data["samples"].shape == (4, 36, 36, 3) and data["samples"].dtype == np.uint8
    # The budget sets the chunk of chains advanced at once; without one, the 4 chains go together.
    assert json.loads((out / "stats.json").read_text())["chunk_size"] < 4
    assert run_sample(model_path, tmp_path / "t", "--chains", "4", "--steps", "1").exit_code == 0
    assert json.loads((tmp_path / "t" / "stats.json").read_text())["chunk_size"] == 4


def test_bad_sample_requests_are_refused(model_path, tmp_path):
    assert "no such model file" in run_sample(tmp_path / "missing.pt", tmp_path / "s").output
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert "not a readable tritongcn model" in run_sample(tmp_path / "junk.pt", tmp_path / "s").output
    assert "nothing to resume" in run_sample(model_path, tmp_path / "s", "--resume").output
    assert "2G" in run_sample(model_path, tmp_path / "s", "--memory-budget", "lots").output
    assert run_sample(model_path, tmp_path / "s2", "--chains", "2", "--steps", "1").exit_code == 0
    mismatch = run_sample(model_path, tmp_path / "s2", "--chains", "3", "--steps", "2", "--resume")
    assert mismatch.exit_code != 0 and "same --chains" in mismatch.output


def test_periodic_sizes_are_rounded_to_the_stride(model_path, tmp_path):
    result = CliRunner().invoke(main, ["sample", str(model_path), "--out", str(tmp_path / "s"), "--size", "37",
                                       "--chains", "1", "--steps", "1"])
    assert result.exit_code == 0, result.output
    # Up, the one rounding of every side (config.stride_multiple): never smaller than asked.
    assert "sampling at 39 px" in result.output
    with Image.open(tmp_path / "s" / "samples" / "00000.png") as im:
        assert im.size == (39, 39)


def test_samples_start_where_the_models_learning_chains_started(model_path, tmp_path):
    state = torch.load(model_path, weights_only=True)
    assert state["config"]["start"] == "spectrum" and state["config"]["sample_steps"] == 3
    out = tmp_path / "s"
    result = run_sample(model_path, out, "--chains", "2")
    assert result.exit_code == 0 and "from spectrum" in result.output
    assert json.loads((out / "stats.json").read_text())["steps"] == 3  # the model's own default
    # A model file without the training image's spectrum (tritongcn before 0.2.0) samples from where its
    # learning chains started (the mean image, before the setting existed), from white noise with a note
    # where its config says the spectrum, and refuses the spectrum start asked for by name.
    del state["start_kernel"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    result = run_sample(old, tmp_path / "n", "--chains", "2", "--steps", "1")
    assert result.exit_code == 0 and "from noise" in result.output and "no spectrum" in result.output
    result = run_sample(old, tmp_path / "o2", "--chains", "2", "--init", "spectrum")
    assert result.exit_code == 2 and "no spectrum" in result.output and "--init" in result.output
    del state["config"]["start"]
    torch.save(state, old)
    result = run_sample(old, tmp_path / "o", "--chains", "2", "--steps", "1")
    assert result.exit_code == 0 and "from zero" in result.output


def test_sample_keeps_out_of_a_learn_folder_and_does_not_mix_with_earlier_samples(model_path, tmp_path):
    into_learn = run_sample(model_path, model_path.parent, "--chains", "1", "--steps", "1")
    assert into_learn.exit_code == 1 and "learned model (model.pt)" in into_learn.output
    assert not (model_path.parent / "stats.json").exists()
    assert run_sample(model_path, tmp_path / "s", "--chains", "1", "--steps", "1").exit_code == 0
    again = run_sample(model_path, tmp_path / "s", "--chains", "1", "--steps", "1")
    assert again.exit_code == 1 and "already holds" in again.output
    assert run_sample(model_path, tmp_path / "s", "--chains", "1", "--steps", "1", "--overwrite").exit_code == 0


def test_sampling_a_checkpoint_of_a_run_still_learning_says_so(model_path, tmp_path):
    from tritongcn.checkpoints import load_checkpoint, save_checkpoint

    state = load_checkpoint(model_path)
    save_checkpoint({**state, "iteration": 1}, tmp_path / "checkpoint.pt")
    result = run_sample(tmp_path / "checkpoint.pt", tmp_path / "s", "--chains", "1", "--steps", "1")
    assert result.exit_code == 0 and "a model still learning" in result.output
    # Past the last layer's iterations but inside the finish: still learning too.
    in_finish = {**state, "config": {**state["config"], "finish_iterations": 2},
                 "iteration": state["config"]["iterations"] + 1}
    save_checkpoint(in_finish, tmp_path / "in_finish.pt")
    result = run_sample(tmp_path / "in_finish.pt", tmp_path / "s3", "--chains", "1", "--steps", "1")
    assert result.exit_code == 0 and "a model still learning" in result.output
    assert "still learning" not in run_sample(model_path, tmp_path / "s2", "--chains", "1", "--steps", "1").output


def test_samples_run_at_the_sigma_the_model_was_learned_with(tmp_path):
    from conftest import TINY, texture_file

    out = tmp_path / "run"
    learned = CliRunner().invoke(main, ["learn", str(texture_file(tmp_path / "tex.png")), "--out", str(out), *TINY,
                                        "--layers", "1", "--sigma", "2"])
    assert learned.exit_code == 0, learned.output
    assert torch.load(out / "model.pt", weights_only=True)["model_config"]["sigma"] == 2.0
    assert run_sample(out / "model.pt", tmp_path / "s", "--chains", "1", "--steps", "1").exit_code == 0
    assert saved_chains(tmp_path / "s")["sigma"] == 2.0


def test_animation_frames_are_at_most_512_px_across():
    # 8 chains of 330 px made a 17 MB evolution.gif at full size.
    from types import SimpleNamespace

    from tritongcn.runs.sampling import GIF_WIDTH, _frame

    bank = SimpleNamespace(x=torch.rand(8, 3, 330, 330) * 255)
    frame = _frame(bank, torch.zeros(1, 3, 1, 1), 8)
    assert frame.size == (GIF_WIDTH, GIF_WIDTH) == (512, 512)  # a 3 x 3 sheet of 330 px chains, shrunk
    small = _frame(SimpleNamespace(x=torch.rand(2, 3, 36, 36) * 255), torch.zeros(1, 3, 1, 1), 2)
    assert small.width < GIF_WIDTH  # small sheets keep their pixels
