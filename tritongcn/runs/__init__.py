"""The package's long jobs, each a function of its settings: `learn`, `sample`, `reconstruct`, `complete`
and `expand`.

They own their loops, checks, outputs and progress display, and raise `RunError` with a one-line message
when they cannot go on (and `Stopped` after saving when Ctrl-C or SIGTERM asks them to). `cli.py` only maps
options onto the settings and these errors onto messages and exit codes; Python code calls them alike:

    from tritongcn.runs import LearnRun, learn
    learn(LearnRun(Path("texture.png"), settings={"iterations": 100}))
"""

from .common import Reporter, RunError, Stopped
from .completion import CompleteRun, ExpandRun, FillSettings, complete, expand
from .learning import LearnRun, learn
from .reconstruction import ReconstructRun, reconstruct
from .sampling import SampleRun, sample

__all__ = ["CompleteRun", "ExpandRun", "FillSettings", "LearnRun", "ReconstructRun", "Reporter", "RunError",
           "SampleRun", "Stopped", "complete", "expand", "learn", "reconstruct", "sample"]
