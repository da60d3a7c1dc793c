import math

import pytest
import torch

from tritongcn import LearnConfig, Learner

TINY = dict(image_size=40, sample_size=36, chains=2, langevin_steps=2, iterations=3, layers=2)


def _observed(seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    stripes = 60 * torch.sin(xx * 0.8 + yy * 0.3) + 20 * torch.randn(40, 40, generator=g)
    return torch.stack([stripes, 0.8 * stripes, -stripes]).unsqueeze(0)


def test_learning_is_deterministic_per_seed():
    def run(seed):
        learner = Learner(_observed(), LearnConfig(**TINY, seed=seed))
        records = list(learner.run())
        return records, learner

    (a, la), (b, lb), (c, _) = run(0), run(0), run(1)
    assert [r["gap"] for r in a] == [r["gap"] for r in b]
    assert torch.equal(la.chains, lb.chains)
    assert torch.equal(la.model.convs[0].weight, lb.model.convs[0].weight)
    assert [r["gap"] for r in a] != [r["gap"] for r in c]


def test_layers_grow_and_the_weights_move():
    learner = Learner(_observed(), LearnConfig(**TINY))
    initial = [conv.weight.clone() for conv in learner.model.convs]
    records = list(learner.run())
    assert [(r["layer"], r["iteration"]) for r in records] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert learner.model.depth == 2
    assert not torch.equal(learner.model.convs[0].weight, initial[0])
    assert not torch.equal(learner.model.convs[1].weight, initial[1])
    assert torch.equal(learner.model.convs[2].weight, initial[2])  # never switched on
    assert all(math.isfinite(r["gap"]) and r["grad_norm"] > 0 for r in records)
    assert learner.langevin_steps_done == 6 * TINY["langevin_steps"]


@pytest.mark.parametrize("zero_mean", [True, False])
def test_first_layer_filters_stay_zero_mean_when_asked(zero_mean):
    learner = Learner(_observed(), LearnConfig(**TINY, zero_mean_filters=zero_mean))
    list(learner.run())
    means = learner.model.convs[0].weight.mean(dim=(1, 2, 3)).abs().max().item()
    assert (means < 1e-6) if zero_mean else (means > 1e-4)


def test_the_first_iteration_raises_the_observed_score_against_the_synthesized():
    # One SGD step along mean_obs df/dw - mean_syn df/dw, small enough to be linear, must widen the gap.
    config = LearnConfig(**{**TINY, "iterations": 1, "layers": 1}, lr=1e-7, weight_decay=0.0)
    learner = Learner(_observed(), config)
    gap_before = next(learner.run())["gap"]
    from tritongcn.learn import per_position_score
    obs = per_position_score(learner.model, learner.observed, learner.data_boundary)
    syn = per_position_score(learner.model, learner.chains, learner.chain_boundary)
    assert (obs - syn).item() > gap_before


@pytest.mark.parametrize("field,value", [("chains", 0), ("step_size", -1.0), ("sigma", float("nan")),
                                         ("lr", float("inf")), ("optimizer", "lbfgs"), ("precision", "half")])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Learner(_observed(), LearnConfig(**{**TINY, field: value}))


def test_an_image_too_small_for_the_top_layer_fails_at_once():
    small = _observed()[:, :, :30, :30]  # 30 px < the 33 px receptive field of three layers
    with pytest.raises(ValueError, match="receptive field"):
        Learner(small, LearnConfig(**{**TINY, "layers": 3}))
    Learner(small, LearnConfig(**{**TINY, "layers": 2}))  # 27 px fits


def test_non_finite_data_are_refused():
    bad = _observed()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Learner(bad, LearnConfig(**TINY))


def test_learning_rate_decays_by_cosine_within_each_layer():
    learner = Learner(_observed(), LearnConfig(**dict(TINY, iterations=5), lr=0.01, lr_final=0.1))
    rates = []
    for _ in learner.run():
        rates.append([group["lr"] for group in learner.optimizer.param_groups])
    weights = [r[0] for r in rates]
    assert weights[0] == pytest.approx(0.01) and weights[4] == pytest.approx(0.001)
    assert weights[2] == pytest.approx(0.0055)  # halfway down the cosine
    assert weights[5:] == pytest.approx(weights[:5])  # the next layer starts again at lr
    assert all(bias == pytest.approx(2 * weight) for weight, bias in rates)
    with pytest.raises(ValueError, match="lr_final"):
        LearnConfig(lr_final=0).check()


def test_the_learner_records_the_precision_it_runs_in():
    from tritongcn.model import resolve_precision
    learner = Learner(_observed(), LearnConfig(**TINY))  # precision "auto"
    assert learner.config.precision == resolve_precision("auto", "cpu") == learner.bank.precision
    assert learner.state_dict()["config"]["precision"] in ("float32", "bfloat16")
    assert Learner(_observed(), LearnConfig(**TINY, precision="float32")).bank.precision == "float32"


def test_contrastive_divergence_restarts_from_the_data_and_lowers_the_reconstruction_error():
    observed = torch.cat([_observed(0), _observed(1), _observed(2)])
    config = LearnConfig(**{**TINY, "iterations": 25, "layers": 2}, cd_steps=1, periodic=False)
    learner = Learner(observed, config)
    assert learner.model.depth == 2 and learner.total_iterations == 25  # all layers at once
    assert len(learner.bank) == 3  # one chain per training image
    records = list(learner.run())
    assert len(records) == 25 and all(r["layer"] == 2 for r in records)
    # The untrained net reconstructs almost nothing (B is tiny); CD learns to auto-encode the data.
    assert records[0]["reconstruction_error"] > 0.95
    assert records[-1]["reconstruction_error"] < 0.8
    # The chains took one step from the data at every iteration, with fresh noise each time.
    assert learner.langevin_steps_done == 25
    moved = (learner.chains - learner.observed).flatten(1).norm(dim=1) / learner.observed.flatten(1).norm(dim=1)
    assert (moved < 0.1).all()
    with pytest.raises(ValueError, match="cd_steps"):
        Learner(observed, LearnConfig(**TINY, cd_steps=-1))


def test_the_object_model_grows_its_layers_and_top_filters_on_aligned_images():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 25), torch.linspace(-1, 1, 25), indexing="ij")
    blob = 200 * torch.exp(-(xx**2 + yy**2) * 3)  # aligned "objects": a centred blob with noise
    observed = (blob + 10 * torch.randn(6, 1, 25, 25, generator=g)).clamp(0, 255)
    learner = Learner.from_images(observed, LearnConfig(**{**TINY, "layers": 3}, model="object"))
    assert learner.model.top == "fc" and learner.chains.shape == (2, 1, 25, 25)  # chains the images' size
    assert learner.chain_boundary == learner.data_boundary == "zero"
    fc_before = [w.detach().clone() for w in learner.model.fc_weights]
    records = list(learner.run())
    assert [r["layer"] for r in records] == [1] * 3 + [2] * 3 + [3] * 3
    # Each depth learned its own top filter.
    assert all(not torch.equal(a, b) for a, b in zip(fc_before, learner.model.fc_weights))
    assert learner.state_dict()["model_config"]["top"] == "fc"
    with pytest.raises(ValueError, match="square"):
        Learner(torch.zeros(2, 1, 25, 27), LearnConfig(**TINY, model="object"))


@pytest.mark.parametrize("image_size,expected", [(40, 42), (39, 39)])
def test_default_sample_size_is_the_training_images_rounded_up_to_the_stride(image_size, expected):
    # The texture net strides 3: periodic chains need multiples of it, and the torus is never smaller than
    # the data, so the chains hold as much texture as the training image does.
    config = LearnConfig(**{**TINY, "sample_size": 0, "image_size": image_size, "iterations": 1, "layers": 1})
    observed = _observed()[..., :image_size, :image_size]
    learner = Learner(observed, config)
    assert learner.config.sample_size == expected
    assert tuple(learner.chains.shape) == (2, 3, expected, expected)
    assert learner.state_dict()["config"]["sample_size"] == expected  # what `sample` draws at later


def test_a_layer_gone_silent_on_the_data_is_grown_again_with_half_the_step():
    learner = Learner(_observed(), LearnConfig(**{**TINY, "iterations": 20}))
    runs = learner.run()
    next(runs)
    next(runs)
    start = [p.clone() for p in learner.layer_start]
    with torch.no_grad():  # what a too large step does: every unit of layer 1 off on the data
        learner.model.convs[0].bias.fill_(-1e6)
    record = next(runs)
    assert record["regrown"] == 1 and record["grad_norm"] == 0.0 and record["active_obs"] == [0.0]
    assert learner.step_scale[:2] == [0.5, 1.0] and record["iteration"] == 3
    for p, before in zip(learner.model.active_parameters(), start):
        assert torch.equal(p, before)
    record = next(runs)  # learning goes on from there
    assert "regrown" not in record and record["grad_norm"] > 0 and record["active_obs"][0] > 0.1
