"""What a user hears of a learning run: its recipe in a line, what happened while it learned (a silent
layer, a runaway, a swinging gap) and, at the end, what its new samples' figures mean."""

from ..config import LearnConfig
from ..copycheck import copy_line
from .common import Reporter

# What the progress line's gap is, said once when learning starts.
GAP_MEANING = ("gap: the training image's score per position minus the chains'; it swings around 0 while the "
               "chains keep up with the model, and stays large while they lag behind it")


def settings_line(config: LearnConfig) -> str:
    """The recipe of a run in one line."""
    how = "layers grown one at a time" if config.grows() else "all layers at once"
    if config.cd_steps:
        chains = f"{config.cd_steps}-step contrastive divergence"
    else:
        chains = (f"{config.chains} chains of {config.chain_size} px from {config.start}, "
                  f"{config.langevin_steps} Langevin steps of {config.step_size:g} per update"
                  + (f" at temperature {config.temperature:g}" if config.temperature != 1 else ""))
    optimizer = "sgd" + (" (steps halved on reversal)" if config.damp_reversals else "")
    updates = config.finish_updates()
    finish = f"; then {updates} updates on new chains, {config.finish_langevin_steps} steps each" if updates else ""
    shading = "; the images' shading flattened" if config.shading == "flatten" else ""
    return (f"{config.layers} layers ({how}), {config.iterations} iterations, {optimizer} lr "
            f"{config.lr:g}, {chains}{finish}{shading}")


# Learning chains this hot learned the bundled wood, its shading kept, without the runaway it had at 1
# (docs/troubleshooting.md); flattened, it had none either.
HOTTER = 4


def runaway_advice(config: LearnConfig) -> str:
    """The `learn` options a run of `config` has not tried that kept the bundled wood from running away."""
    flattenable = config.texture_chains() and config.shading != "flatten"
    levers = (["--shading flatten"] if flattenable else []) + (
        [f"--temperature {HOTTER}"] if config.temperature < HOTTER else [])
    return f"learning again with {' or '.join(levers)} may avoid it" if levers else ""


class LearningWatch:
    """What a user should hear of while learning runs: a layer regrown after going silent, a runaway rescued
    (`learn.RunawayGuard`), and a gap that swings from sign to sign at every iteration (the step is too large
    for the layer). Each once."""

    WINDOW = 12  # iterations looked at for a swing

    def __init__(self, iterations: int, runaway_advice: str = ""):
        self.iterations = iterations  # per layer: past them, the finish
        self.runaway_advice = runaway_advice  # what a runaway's warning ends with, if anything
        self.gaps, self.warned = [], set()

    def __call__(self, record) -> list:
        warnings = []
        if "runaway" in record:
            what = "the finish" if record.get("finishing", record["iteration"] > self.iterations) else \
                f"layer {record['runaway']}"
            warnings.append(f"the training image's score ran away from the chains' in {what} ({record['growth']:g} "
                            f"times its recent level): back to the weights of its iteration "
                            f"{record['from_iteration']}, which end it ({record['skipped']} iterations skipped)"
                            + (f"; {self.runaway_advice}" if self.runaway_advice else ""))
        if "regrown" in record:
            warnings.append(f"layer {record['regrown']} went silent on the training image (no unit active) and "
                            f"is learned again from its first weights at {record['step_scale']:g} of the step")
        self.gaps = (self.gaps + [(record["gap"], record["f_obs"])])[-self.WINDOW:]
        gaps = [g for g, _ in self.gaps]
        flips = sum(a * b < 0 for a, b in zip(gaps, gaps[1:]))
        scale = sum(abs(f) for _, f in self.gaps) / len(self.gaps)
        swing = sum(abs(g) for g in gaps) / len(gaps)
        layer = record["layer"]
        if len(gaps) == self.WINDOW and flips == self.WINDOW - 1 and swing > 0.05 * scale and layer not in self.warned:
            self.warned.add(layer)
            warnings.append(f"the gap swings between {min(gaps):+.3g} and {max(gaps):+.3g} from one iteration to "
                            f"the next (layer {layer}): the step is too large for it; a smaller --lr may learn "
                            "better")
        return warnings


def evaluate_run(out_dir, training, samples, chains, report: Reporter) -> None:
    """Score the samples (and the learning chains, when given) against the training image into eval.json
    (see `tritongcn eval`)."""
    from ..evaluate import SMALLEST_CROP, evaluate, evaluation_steps, largest_crop, portilla_simoncelli_available
    from ..io import save_json
    from ..progress import Progress

    others = {} if chains is None else {"learning_chains": chains.round()}
    if min(largest_crop(training.shape, s.shape) for s in [samples, *others.values()]) < SMALLEST_CROP:
        report.say(f"no eval.json: samples or training image too small for {SMALLEST_CROP} px crops")
        return
    has_ps = portilla_simoncelli_available()
    with Progress(evaluation_steps(len(others)), "scoring the samples") as bar:
        result = evaluate(training, samples.round(), use_ps=has_ps, others=others,
                          progress=lambda name: bar.update(1, name.replace("_", " ")))
    save_json(result, out_dir / "eval.json", indent=2)
    for name in ("samples", *others):
        figures = ", ".join(f"{k} {result[name][k]:.3f}" for k in result[name])
        report.say(f"eval, {name.replace('_', ' ')}: {figures}")
    references = ", ".join(f"{k} {result['real_crops'][k]:.3f} / {result['random_phase'][k]:.3f}"
                           for k in result["samples"])
    report.say(f"eval, real crops / random-phase noise: {references} (lower is better)")
    if not has_ps:
        report.say(f"(ps_z {result['ps_z']})")
    if isinstance(result["copy"], dict):
        report.say(f"eval, {copy_line(result['copy'])}")
    warning = samples_verdict(result)
    if warning:
        report.warn(f"warning: {warning}")


def samples_verdict(result: dict) -> str:
    """A warning when the new samples are the photo redrawn (the copy check), or when they score worse than
    random-phase noise with the image's spectrum (what the chains start from) by any figure: the model did
    not learn the texture; '' otherwise."""
    if isinstance(result.get("copy"), dict) and result["copy"]["copied"]:
        return ("the new samples redraw pieces of the training photo (the copy check above): the model learned "
                "the photo, not its texture. A larger --image-size, or a model whose units see less of the "
                "image, learns the texture instead")
    worse = [k for k in result["samples"] if result["samples"][k] > result["random_phase"][k]]
    if not worse:
        return ""
    figures = ", ".join(f"{k} {result['samples'][k]:.3f} against {result['random_phase'][k]:.3f}" for k in worse)
    return (f"the new samples score worse than random-phase noise with the image's spectrum ({figures}): the "
            "model did not learn this texture. Try another --seed, --quality high, or a smaller --image-size "
            "if the texture's elements are larger than the 33 px the net sees (docs/troubleshooting.md)")
