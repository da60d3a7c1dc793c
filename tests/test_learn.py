import math

import pytest
import torch

from conftest import TINY_CONFIG as TINY, stripes
from tritongcn import LearnConfig, Learner
from tritongcn.config import RELEASE, recipe
from tritongcn.chains import ChainBank
from tritongcn.learn import ReversalDamping, shading_plane
from tritongcn.evaluate import evaluate, portilla_simoncelli_available

def test_learning_is_deterministic_per_seed():
    def run(seed):
        learner = Learner(stripes(), LearnConfig(**TINY, seed=seed))
        records = list(learner.run())
        return records, learner

    (a, la), (b, lb), (c, _) = run(0), run(0), run(1)
    assert [r["gap"] for r in a] == [r["gap"] for r in b]
    assert torch.equal(la.life.x, lb.life.x)
    assert torch.equal(la.model.convs[0].weight, lb.model.convs[0].weight)
    assert [r["gap"] for r in a] != [r["gap"] for r in c]


def test_all_layers_learn_at_once_when_asked():
    learner = Learner(stripes(), LearnConfig(**TINY, grow_layers=False))
    initial = [conv.weight.clone() for conv in learner.model.convs]
    records = list(learner.run())
    assert [(r["layer"], r["iteration"]) for r in records] == [(2, 1), (2, 2), (2, 3)]
    assert not torch.equal(learner.model.convs[0].weight, initial[0])
    assert not torch.equal(learner.model.convs[1].weight, initial[1])
    assert torch.equal(learner.model.convs[2].weight, initial[2])  # beyond --layers 2
    assert all(len(r["active_obs"]) == 2 for r in records)


def test_layers_grow_one_at_a_time_by_default_and_the_weights_move():
    learner = Learner(stripes(), LearnConfig(**TINY))
    initial = [conv.weight.clone() for conv in learner.model.convs]
    records = list(learner.run())
    assert [(r["layer"], r["iteration"]) for r in records] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert learner.model.depth == 2
    assert not torch.equal(learner.model.convs[0].weight, initial[0])
    assert not torch.equal(learner.model.convs[1].weight, initial[1])
    assert torch.equal(learner.model.convs[2].weight, initial[2])  # never switched on
    assert all(math.isfinite(r["gap"]) and r["grad_norm"] > 0 for r in records)
    assert learner.life.steps_done == 6 * TINY["langevin_steps"]


def test_a_net_of_the_callers_own_is_learned_as_given():
    """`from_images(model=...)` learns the caller's net (a screen of other layer widths), not the config's."""
    from tritongcn.geometry import TEXTURE_LAYERS, LayerSpec
    from tritongcn.model import GenerativeConvNet
    specs = (*TEXTURE_LAYERS[:2], LayerSpec(7, 3, stride=1, padding=2))
    net = GenerativeConvNet(3, specs, generator=torch.Generator().manual_seed(0))  # built at full depth
    learner = Learner.from_images(stripes() + 128, LearnConfig(**{**TINY, "layers": 3}), model=net)
    assert learner.model is net and learner.model.layers == specs and net.depth == 1  # grown, as the config's
    initial = net.convs[2].weight.clone()
    records = list(learner.run())
    assert [r["layer"] for r in records][-1] == 3 and learner.model.depth == 3  # grown to the config's layers
    assert not torch.equal(net.convs[2].weight, initial)  # the caller's own layer 3 learned


def _lit_stripes():
    """Stripes under a light that falls off from left to right (60 grey levels) and top to bottom (20)."""
    images = stripes()
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return images + 128 + 30 * xs + 10 * ys


def test_the_shading_plane_is_fitted_to_the_known_pixels_only():
    h, w = 12, 17
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    plane = torch.stack([5 + 3 * xs - 2 * ys, -1 + 0.5 * ys]).unsqueeze(0)  # (1, 2, H, W)
    known = torch.ones(1, 1, h, w, dtype=torch.bool)
    known[..., 3:8, 4:10] = False
    scribbled = torch.where(known, plane, torch.full_like(plane, 1e4))
    torch.testing.assert_close(shading_plane(scribbled, known), plane, atol=1e-3, rtol=0)
    assert shading_plane(scribbled).sub(plane).abs().max() > 100  # the scribble counts when all is known


@pytest.mark.parametrize("flatten", [True, False])
def test_the_images_slope_is_learned_only_when_asked(flatten):
    images = _lit_stripes()
    learner = Learner.from_images(images, LearnConfig(**TINY, shading="flatten" if flatten else "keep"))
    torch.testing.assert_close(learner.mean, images.mean(dim=(0, 2, 3)))  # the colour samples get back
    slope = shading_plane(learner.data.images.cpu()).abs().amax()
    assert slope < 1e-3 if flatten else slope > 20
    if flatten:  # the texture itself is left as it was
        torch.testing.assert_close(learner.data.images.cpu(), stripes() - shading_plane(stripes()), atol=1e-3, rtol=0)


def test_flattening_takes_each_images_own_level_and_slope_out():
    lit = _lit_stripes()
    images = torch.cat([lit, 0.5 * lit + 10])  # a second, darker photo of the same texture
    learner = Learner.from_images(images, LearnConfig(**TINY, shading="flatten"))
    assert shading_plane(learner.data.images.cpu()).abs().amax() < 1e-3  # each image's plane, its own mean too
    torch.testing.assert_close(learner.mean, images.mean(dim=(0, 2, 3)))  # the colour added back to samples


@pytest.mark.parametrize("light,model,expected", [(30, "texture", "keep"), (150, "texture", "flatten"),
                                                  (150, "object", "keep")])
def test_auto_flattens_the_texture_photos_that_are_more_light_than_texture(light, model, expected):
    images = stripes()
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    images = images + 128 + light * xs
    learner = Learner.from_images(images, LearnConfig(**TINY, model=model))
    assert learner.config.shading == expected  # what was done is what the model file records
    # The slope's share of the variance about the mean colour: 30 grey levels across stripes of 60, 150.
    assert (learner.data.shading_share > 0.5) == (light == 150)


def test_model_files_from_before_the_setting_keep_their_shading():
    assert LearnConfig.from_dict({}).shading == "keep"  # learned before any flattening
    with pytest.raises(ValueError, match="shading must be one of"):
        LearnConfig(shading="flat").check()


@pytest.mark.parametrize("zero_mean", [True, False])
def test_first_layer_filters_stay_zero_mean_when_asked(zero_mean):
    learner = Learner(stripes(), LearnConfig(**TINY, zero_mean_filters=zero_mean))
    list(learner.run())
    means = learner.model.convs[0].weight.mean(dim=(1, 2, 3)).abs().max().item()
    assert (means < 1e-6) if zero_mean else (means > 1e-4)


def test_the_first_iteration_raises_the_observed_score_against_the_synthesized():
    # One SGD step along mean_obs df/dw - mean_syn df/dw, small enough to be linear, must widen the gap.
    config = LearnConfig(**{**TINY, "iterations": 1, "layers": 1}, lr=1e-7, weight_decay=0.0)
    learner = Learner(stripes(), config)
    gap_before = next(learner.run())["gap"]
    from tritongcn.learn import per_position_score
    obs = per_position_score(learner.model, learner.data.images, learner.config.data_boundary())
    syn = per_position_score(learner.model, learner.life.x, learner.config.chain_boundary())
    assert (obs - syn).item() > gap_before


@pytest.mark.parametrize("field,value", [("chains", 0), ("step_size", -1.0), ("sigma", float("nan")),
                                         ("lr", float("inf")), ("start", "everywhere"), ("precision", "half")])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Learner(stripes(), LearnConfig(**{**TINY, field: value}))


def test_an_image_too_small_for_the_top_layer_fails_at_once():
    small = stripes()[:, :, :30, :30]  # 30 px < the 33 px receptive field of three layers
    with pytest.raises(ValueError, match="receptive field"):
        Learner(small, LearnConfig(**{**TINY, "layers": 3}))
    Learner(small, LearnConfig(**{**TINY, "layers": 2}))  # 27 px fits


def test_non_finite_data_are_refused():
    bad = stripes()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Learner(bad, LearnConfig(**TINY))


def test_learning_rate_decays_by_cosine_after_its_start():
    config = LearnConfig(**dict(TINY, iterations=6), lr=0.01, lr_final=0.1, lr_decay_start=0.6, grow_layers=False)
    learner = Learner(stripes(), config)
    rates = [learner.update.optimizer.param_groups[0]["lr"] for _ in learner.run()]
    # Progress 0, 0.2, ..., 1: constant up to 0.6, then a cosine from 0.6 to 1 (halfway at 0.8).
    assert rates[:4] == pytest.approx([0.01] * 4)
    assert rates[4] == pytest.approx(0.0055) and rates[5] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="lr_decay_start"):
        LearnConfig(lr_decay_start=1.0).check()


def test_learning_rate_decays_by_cosine_within_each_grown_layer():
    config = LearnConfig(**dict(TINY, iterations=5), lr=0.01, lr_final=0.1, lr_decay_start=0.0, grow_layers=True)
    learner = Learner(stripes(), config)
    rates = []
    for _ in learner.run():
        rates.append([group["lr"] for group in learner.update.optimizer.param_groups])
    weights = [r[0] for r in rates]
    assert weights[0] == pytest.approx(0.01) and weights[4] == pytest.approx(0.001)
    assert weights[2] == pytest.approx(0.0055)  # halfway down the cosine
    assert weights[5:] == pytest.approx(weights[:5])  # the next layer starts again at lr
    assert all(bias == pytest.approx(2 * weight) for weight, bias in rates)
    with pytest.raises(ValueError, match="lr_final"):
        LearnConfig(lr_final=0).check()


def test_the_learner_records_the_precision_it_runs_in():
    from tritongcn.precision import resolve_precision
    learner = Learner(stripes(), LearnConfig(**TINY))  # precision "auto"
    assert learner.config.precision == resolve_precision("auto", "cpu") == learner.life.bank.precision
    assert learner.state_dict()["config"]["precision"] in ("float32", "bfloat16")
    assert Learner(stripes(), LearnConfig(**TINY, precision="float32")).life.bank.precision == "float32"


def test_contrastive_divergence_restarts_from_the_data_and_lowers_the_reconstruction_error():
    observed = torch.cat([stripes(0), stripes(1), stripes(2)])
    config = LearnConfig(**{**TINY, **recipe(cd_steps=1), "iterations": 25, "layers": 2}, cd_steps=1,
                         periodic=False)
    learner = Learner(observed, config)
    assert learner.model.depth == 2 and learner.config.total_iterations() == 25  # all layers at once
    assert len(learner.life) == 3  # one chain per training image
    records = list(learner.run())
    assert len(records) == 25 and all(r["layer"] == 2 for r in records)
    # The untrained net reconstructs almost nothing (B is tiny); CD learns to auto-encode the data.
    assert records[0]["reconstruction_error"] > 0.95
    assert records[-1]["reconstruction_error"] < 0.8
    # The chains took one step from the data at every iteration, with fresh noise each time.
    assert learner.life.steps_done == 25
    moved = (learner.life.x - learner.data.images).flatten(1).norm(dim=1) / learner.data.images.flatten(1).norm(dim=1)
    assert (moved < 0.1).all()
    with pytest.raises(ValueError, match="cd_steps"):
        Learner(observed, LearnConfig(**TINY, cd_steps=-1))


def test_the_object_model_grows_its_layers_and_top_filters_on_aligned_images():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 25), torch.linspace(-1, 1, 25), indexing="ij")
    blob = 200 * torch.exp(-(xx**2 + yy**2) * 3)  # aligned "objects": a centred blob with noise
    observed = (blob + 10 * torch.randn(6, 1, 25, 25, generator=g)).clamp(0, 255)
    config = LearnConfig(**{**TINY, **recipe("object"), "chains": 2, "iterations": 3, "layers": 3}, model="object")
    learner = Learner.from_images(observed, config)
    assert learner.model.top == "fc" and learner.life.x.shape == (2, 1, 25, 25)  # chains the images' size
    assert learner.config.chain_boundary() == learner.config.data_boundary() == "zero"
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
    # The texture net strides 3: periodic chains need multiples of it, and a sample is never smaller than
    # the data, so it holds as much texture as the training image does.
    config = LearnConfig(**{**TINY, "sample_size": 0, "image_size": image_size, "iterations": 1, "layers": 1})
    observed = stripes()[..., :image_size, :image_size]
    learner = Learner(observed, config)
    assert learner.config.sample_size == expected
    assert learner.state_dict()["config"]["sample_size"] == expected  # what `sample` draws at later
    assert learner.fresh_bank(2).x.shape == (2, 3, expected, expected)


@pytest.mark.parametrize("image_size,layers,expected", [(40, 1, 21), (40, 2, 27), (64, 3, 33), (224, 3, 114)])
def test_default_learning_chains_are_half_the_image_and_at_least_the_receptive_field(image_size, layers, expected):
    config = LearnConfig(image_size=image_size, chains=2, layers=layers)
    g = torch.Generator().manual_seed(0)
    learner = Learner(torch.randn(1, 1, image_size, image_size, generator=g) * 30, config)
    assert learner.config.chain_size == expected and learner.life.x.shape == (2, 1, expected, expected)


def test_a_layer_gone_silent_on_the_data_is_grown_again_with_half_the_step():
    learner = Learner(stripes(), LearnConfig(**{**TINY, "iterations": 20}, grow_layers=True))
    runs = learner.run()
    next(runs)
    next(runs)
    start = [p.clone() for p in learner.silent.layer_start]
    with torch.no_grad():  # what a too large step does: every unit of layer 1 off on the data
        learner.model.convs[0].bias.fill_(-1e6)
    record = next(runs)
    assert record["regrown"] == 1 and record["grad_norm"] == 0.0 and record["active_obs"] == [0.0]
    assert learner.update.layer_scale[:2] == [0.5, 1.0] and record["iteration"] == 3
    for p, before in zip(learner.model.active_parameters(), start):
        assert torch.equal(p, before)
    record = next(runs)  # learning goes on from there
    assert "regrown" not in record and record["grad_norm"] > 0 and record["active_obs"][0] > 0.1


def test_a_layer_that_keeps_going_silent_stops_learning_with_a_reason():
    from tritongcn.learn.guards import MAX_REGROWTHS, LearningFailed

    learner = Learner(stripes(), LearnConfig(**{**TINY, "iterations": 20}, grow_layers=True))
    runs = learner.run()
    next(runs)
    for _ in range(MAX_REGROWTHS):
        with torch.no_grad():
            learner.model.convs[0].bias.fill_(-1e6)
        assert next(runs)["regrown"] == 1
    with torch.no_grad():
        learner.model.convs[0].bias.fill_(-1e6)
    with pytest.raises(LearningFailed, match="went silent"):
        next(runs)


def test_the_runaway_guard_fires_on_a_climb_and_not_on_a_healthy_layer():
    from tritongcn.learn import RunawayGuard

    guard = RunawayGuard()
    healthy = [1000 * (1 + 0.2 * (i % 3)) + 10 * i for i in range(1, 200)]  # noisy, slowly rising
    assert not any(guard.ran_away(f) for f in healthy)
    guard.reset()
    climbing = [5000.0] * 40 + [5000.0 * 1.2 ** k for k in range(1, 20)]
    fired = [i for i, f in enumerate(climbing, 1) if guard.ran_away(f)]
    assert fired[0] == 44  # 5000 x 1.2^4, the first score past twice the median of the 20 before it
    guard.reset()
    early = [100.0] * 25 + [1e6]  # the first iterations of a layer swing: not judged
    assert not any(guard.ran_away(f) for f in early)
    guard.reset()
    creeping = [1000.0] * 60 + [1000.0 * 1.03 ** k for k in range(1, 60)]  # 1.8x per 20: no jump
    fired = [i for i, f in enumerate(creeping, 1) if guard.ran_away(f)]
    assert fired[0] == 98  # 1000 x 1.03^38, the first past three times the layer's early level


def test_a_runaway_goes_back_to_kept_weights_with_new_chains_and_ends_the_layer():
    from tritongcn.learn import RunawayGuard

    config = LearnConfig(**{**TINY, "iterations": 60, "finish_iterations": 40}, grow_layers=True)
    learner = Learner(stripes(), config)
    runs = learner.run()
    for _ in range(35):
        next(runs)
    kept_at, kept = learner.runaway.snapshots[0]
    assert kept_at == 10 and len(learner.runaway.snapshots) == RunawayGuard.KEPT  # at 10, 20 and 30
    steps_before = learner.life.bank.steps.clone()
    learner.runaway.ran_away = lambda f_obs: 5.0  # as if the data's score had climbed
    learner.runaway.recent = [1.0] * 21
    record = next(runs)
    assert record["runaway"] == 1 and record["from_iteration"] == 10 and record["grad_norm"] == 0.0
    assert record["iteration"] == 60 and record["skipped"] == 24  # layer 1 ends here
    for p, before in zip(learner.model.active_parameters(), kept):
        assert torch.equal(p, before)
    assert (learner.life.bank.steps > steps_before).all()  # every chain advanced from a new start
    assert learner.update.layer_scale == [1.0] * len(learner.update.layer_scale)
    del learner.runaway.ran_away  # the class's own judgement again
    record = next(runs)
    assert record["layer"] == 2 and record["iteration"] == 1 and "runaway" not in record
    for _ in range(40):  # into layer 2, which runs away too: the last layer, so the finish follows
        next(runs)
    learner.runaway.ran_away = lambda f_obs: 5.0
    learner.runaway.recent = [1.0] * 21
    record = next(runs)
    assert record["runaway"] == 2 and record["iteration"] == 60 and learner.schedule.finishing
    learner.runaway.recent = [1.0] * 21
    record = next(runs)  # and a runaway in the finish ends the run
    assert record["runaway"] == 2 and record["iteration"] == 100 and record["skipped"] == 39
    assert next(runs, None) is None


@pytest.mark.parametrize("settings,advice", [
    ({"temperature": 4.0}, "learning again with --shading flatten may avoid it"),  # already that hot
    ({"shading": "flatten"}, "learning again with --temperature 4 may avoid it"),
    ({"model": "object"}, "learning again with --temperature 4 may avoid it"),  # an object's shading is its own
    ({"cd_steps": 1}, "learning again with --temperature 4 may avoid it"),
    ({"shading": "flatten", "temperature": 4.0}, ""),  # nothing left to try
])
def test_a_runaway_is_told_the_levers_the_run_has_not_tried(settings, advice):
    from tritongcn.runs.learning import runaway_advice

    assert runaway_advice(LearnConfig(**settings)) == advice


def test_the_learning_watch_says_what_happened_once():
    from tritongcn.runs.learning import LearningWatch, runaway_advice

    watch = LearningWatch(iterations=60, runaway_advice=runaway_advice(LearnConfig()))
    calm = {"layer": 3, "iteration": 5, "gap": 1.0, "f_obs": 100.0}
    in_layer = watch({**calm, "iteration": 55, "runaway": 3, "from_iteration": 30, "growth": 3.1, "skipped": 5})
    assert in_layer == ["the training image's score ran away from the chains' in layer 3 (3.1 times its recent "
                        "level): back to the weights of its iteration 30, which end it (5 iterations skipped); "
                        "learning again with --shading flatten or --temperature 4 may avoid it"]
    [ended] = watch({**calm, "iteration": 62, "runaway": 3, "from_iteration": 30, "growth": 2.5, "skipped": 20})
    assert "in the finish" in ended and "which end it (20 iterations skipped);" in ended
    quiet = LearningWatch(iterations=60)  # no advice to give
    [said] = quiet({**calm, "iteration": 62, "runaway": 3, "from_iteration": 30, "growth": 2.5, "skipped": 20})
    assert said.endswith("which end it (20 iterations skipped)")
    [regrown] = watch({**calm, "regrown": 2, "step_scale": 0.5})
    assert regrown.startswith("layer 2 went silent") and "0.5 of the step" in regrown
    watch = LearningWatch(iterations=60)
    swinging = [watch({**calm, "gap": 50.0 * (-1) ** i}) for i in range(30)]
    assert [i for i, said in enumerate(swinging) if said] == [LearningWatch.WINDOW - 1]  # once, when seen
    assert "swings between -50 and +50" in swinging[LearningWatch.WINDOW - 1][0]


def test_chains_restart_on_a_staggered_schedule():
    config = LearnConfig(**{**TINY, "iterations": 12, "chains": 5}, lifetime=4, persistent_chains=1)
    learner = Learner(stripes(), config)
    restarted = []
    runs = learner.run()
    for _ in range(12):
        restarted.append(learner.life.due(learner.schedule))
        next(runs)
    # Chain 0 never restarts; chains 1..4 have phases 0..3, so chain g restarts first at iteration 5 - g,
    # then every 4 iterations.
    assert restarted[:6] == [[], [4], [3], [2], [1], [4]]
    assert all(0 not in r for r in restarted) and sum(map(len, restarted)) == 11


def test_a_learner_resumed_from_its_state_ends_where_an_uninterrupted_one_does():
    # Restarts and the learning rate schedule follow from the iteration count it saves.
    config = LearnConfig(**{**TINY, "iterations": 10, "chains": 4}, lifetime=3, persistent_chains=1,
                         precision="float32")
    straight = Learner(stripes(), config)
    list(straight.run())
    first = Learner(stripes(), config)
    runs = first.run()
    for _ in range(13):  # into the second layer, whose steps reversals have shrunk by then
        next(runs)
    # The saved state must include steps that reversals have shrunk, or it would not be tested.
    assert min(first.update.damping.scale.values()) < 1
    resumed = Learner(stripes(), config)
    resumed.load_state_dict(first.state_dict())
    list(resumed.run())
    assert torch.equal(resumed.life.x, straight.life.x)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


def test_a_tensor_whose_gradient_reverses_has_its_step_halved_and_regrown_while_it_keeps_its_direction():
    damping, p = ReversalDamping(), torch.nn.Parameter(torch.zeros(3))

    def scaled(gradient):
        """The step the rule gives this gradient, as a fraction of the rate."""
        p.grad = torch.tensor(gradient)
        damping.apply([("w", p)])
        assert torch.equal(p.grad, damping.scale["w"] * torch.tensor(gradient))
        return damping.scale["w"]

    assert scaled([2.0, 0.0, 0.0]) == 1.0  # nothing to compare with yet
    assert scaled([-2.0, 1.0, 0.0]) == 0.5  # points against the last one
    assert scaled([0.0, 0.0, 3.0]) == pytest.approx(0.6)  # orthogonal: not a reversal, so it grows
    assert scaled([0.0, 0.0, 0.0]) == pytest.approx(0.6)  # no direction: the step stays as it was
    for sign in [-1, 1] * 10:
        scaled([0.0, 0.0, sign * 1.0])
    assert damping.scale["w"] == ReversalDamping.FLOOR
    for _ in range(30):
        scaled([0.0, 0.0, 1.0])
    assert damping.scale["w"] == 1.0


def test_steps_are_damped_on_reversal_by_default_and_not_in_the_release_recipe_or_old_files():
    assert LearnConfig().damp_reversals and not LearnConfig(**RELEASE).damp_reversals
    saved_before_it_existed = {k: v for k, v in LearnConfig().to_dict().items() if k != "damp_reversals"}
    assert not LearnConfig.from_dict(saved_before_it_existed).damp_reversals


def _blobs(size: int, seed: int) -> torch.Tensor:
    """(1, 1, size, size) bright blobs with sharp edges on a dark ground, in [0, 255]: far from Gaussian,
    so random-phase noise with its spectrum (the Gaussian texture model) misses its look."""
    g = torch.Generator().manual_seed(seed)
    field = torch.nn.functional.avg_pool2d(torch.randn(1, 1, size + 4, size + 4, generator=g), 5, 1)
    return 40 + 170 * (field > 0.1).float() + 3 * torch.randn(1, 1, size, size, generator=g)


@pytest.mark.skipif(not portilla_simoncelli_available(), reason="ps_z needs plenoptic (pip install 'tritongcn[eval]')")
def test_new_chains_of_a_learned_model_score_clearly_better_than_random_phase_noise():
    # The model is the product: chains drawn afresh by its own sampler, none of them a learning chain,
    # must look more like the texture than the spectrum alone makes them (random-phase noise, which is
    # also where they start). ps_z, the Portilla-Simoncelli statistics, sees the blobs' sharp edges and
    # flat insides that a Gaussian field lacks. One layer keeps the run to seconds.
    texture = _blobs(64, 0)
    config = LearnConfig(image_size=64, chain_size=48, layers=1, iterations=100, sample_steps=100,
                         precision="float32")
    learner = Learner.from_images(texture, config)
    list(learner.run())
    bank = learner.fresh_bank(4, seed=3)
    bank.advance(config.sample_steps)
    samples = (bank.x + learner.mean.view(1, -1, 1, 1)).clamp(0, 255).round()
    figures = evaluate(texture[0], samples)
    assert figures["samples"]["ps_z"] < 0.7 * figures["random_phase"]["ps_z"], figures


def test_the_finish_restarts_the_learning_chains_as_new_samples():
    # The learning chains restart from the sampler's start every sample_steps = 10 steps (2 updates),
    # staggered, at the final rate.
    config = LearnConfig(**{**TINY, "layers": 1, "chains": 4, "finish_iterations": 4},
                         finish_langevin_steps=5, sample_steps=10, lr_final=0.1, lifetime=0, persistent_chains=4)
    learner = Learner(stripes(), config)
    restarted, steps, rates = [], [], []
    runs = learner.run()
    for _ in range(7):
        restarted.append(sorted(learner.life.due(learner.schedule)))
        before = learner.life.steps_done
        next(runs)
        steps.append(learner.life.steps_done - before)
        rates.append(learner.update.optimizer.param_groups[0]["lr"] / config.lr)
    assert steps == [2, 2, 2, 5, 5, 5, 5]
    # Persistent chains before the finish; in it, chains 0, 1 (phase 0) and 2, 3 (phase 1) take turns.
    assert restarted[:3] == [[], [], []] and restarted[3:] == [[2, 3], [0, 1], [2, 3], [0, 1]]
    assert rates[3:] == [pytest.approx(0.1)] * 4


def test_tempered_learning_chains_and_a_finish_at_the_models_temperature(monkeypatch):
    config = LearnConfig(**{**TINY, "layers": 1, "finish_iterations": 2}, temperature=4.0)
    learner = Learner(stripes(), config)
    temperatures, advance = [], ChainBank.advance
    monkeypatch.setattr(ChainBank, "advance", lambda bank, steps, progress=None, noise=True, temperature=1.0: (
        temperatures.append(temperature), advance(bank, steps, progress, noise, temperature)))
    list(learner.run())
    assert temperatures == [4.0] * 3 + [1.0] * 2  # 3 learning iterations, then the finish's new samples
    with pytest.raises(ValueError, match="temperature"):
        LearnConfig(temperature=-1.0).check()


def test_contrastive_divergence_and_the_release_have_no_finish():
    assert LearnConfig(**RELEASE).finish_updates() == 0
    assert LearnConfig(cd_steps=1).finish_updates() == 0
    saved_before_it_existed = {k: v for k, v in LearnConfig().to_dict().items() if k != "finish_iterations"}
    assert LearnConfig.from_dict(saved_before_it_existed).finish_iterations == 0


def test_a_learner_resumed_in_its_finish_ends_where_an_uninterrupted_one_does():
    config = LearnConfig(**{**TINY, "layers": 1, "chains": 3, "finish_iterations": 4},
                         finish_langevin_steps=3, sample_steps=6, precision="float32")
    straight = Learner(stripes(), config)
    list(straight.run())
    for done in (3, 5):  # at the finish's start; after 2 of its updates
        first = Learner(stripes(), config)
        runs = first.run()
        for _ in range(done):
            next(runs)
        resumed = Learner(stripes(), config)
        resumed.load_state_dict(first.state_dict())
        assert resumed.schedule.finishing and len(list(resumed.run())) == 7 - done
        assert torch.equal(resumed.life.x, straight.life.x)
        for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
            assert torch.equal(a, b)


def test_samples_worse_than_random_phase_noise_are_said_so_with_what_to_try():
    from tritongcn.runs.learning_report import samples_verdict

    figures = {"samples": {"patch_swd": 0.21, "ps_z": 3.0}, "random_phase": {"patch_swd": 0.15, "ps_z": 4.8}}
    warning = samples_verdict(figures)
    assert "patch_swd 0.210 against 0.150" in warning and "ps_z" not in warning
    assert "--seed" in warning and "--image-size" in warning
    figures["samples"]["patch_swd"] = 0.06  # the model learned the texture: nothing to say
    assert samples_verdict(figures) == ""
    figures["copy"] = {"copied": True}  # ... or redrew the photo, whatever its figures
    assert "redraw pieces of the training photo" in samples_verdict(figures)


def test_the_progress_estimate_weighs_each_iteration_by_its_depths_measured_step():
    from tritongcn.learn import Schedule

    config = LearnConfig(**{**TINY, "finish_iterations": 2}, finish_langevin_steps=5)
    # An update at depth d: its 2 Langevin steps and about one more for the weight gradient, plus about one
    # depth-1 step that every iteration pays; a finish update runs 5 steps at the last depth.
    assert Schedule(config).costs([1.0, 2.0]) == [4.0] * 3 + [7.0] * 3 + [13.0] * 2
    learner = Learner(stripes(), config)
    chains, depth = learner.life.x.clone(), learner.model.depth
    seconds = learner.life.step_seconds(config.layers)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert torch.equal(learner.life.x, chains) and learner.model.depth == depth  # measured, nothing moved
