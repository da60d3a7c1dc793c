"""Learning the generative ConvNet by maximum likelihood (Algorithm 1 of the paper), as small parts:

- `schedule`: where a run is (layer, iteration, finish), its learning rate and the cost of each iteration;
- `data`: the observed images as learned (mean, known pixels, shading, the spectrum start) and their score;
- `life`: the learning chains and their life cycle (restarts, the finish's new samples, CD's restarts);
- `update`: the weight update (clip, per-layer step, reversal damping, zero-mean projection);
- `guards`: a silent layer, a runaway, a divergence, each answered by an action the learner applies;
- `learner`: `Learner`, which wires them into Algorithm 1.

A new model family reuses the parts it shares with this one and replaces the others.
"""

from .data import ObservedData, per_position_score, shading_plane
from .guards import LearningFailed, Regrow, Rescue, RunawayGuard, SilentLayerGuard
from .learner import Learner, build_model
from .life import LearningChains
from .schedule import Schedule, where
from .update import ReversalDamping, WeightUpdate

__all__ = ["Learner", "LearningChains", "LearningFailed", "ObservedData", "Regrow", "Rescue", "ReversalDamping",
           "RunawayGuard", "Schedule", "SilentLayerGuard", "WeightUpdate", "build_model", "per_position_score",
           "shading_plane", "where"]
