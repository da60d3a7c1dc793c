"""Progress lines for logs: what is done, and a time-left estimate that counts work, not items."""

import io

import pytest

from tritongcn import progress
from tritongcn.progress import Progress, format_seconds


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_left_counts_work_when_items_differ_in_cost(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    out = io.StringIO()
    # Two cheap items, then two that cost three times as much: after the cheap ones (1 s each), the
    # rest takes 6 s, not the 2 s an estimate by items would say.
    with Progress(4, "learning", file=out, every=0.0, costs=[1, 1, 3, 3]) as bar:
        clock.now = 2.0
        bar.update(2, "layer 1")
        assert bar.eta == pytest.approx(6.0)
        clock.now = 5.0
        bar.update(1, "layer 2")
        assert bar.eta == pytest.approx(3.0 * 5 / 5)  # 5 units of work in 5 s, 3 units left
        clock.now = 8.0
        bar.update(1, "layer 2")
    lines = out.getvalue().splitlines()
    assert lines[0] == "learning: 4 to do"
    assert lines[1] == "learning: 2/4 (50%), layer 1, 2 s so far, about 6 s left"
    assert lines[-1].startswith("learning: 4/4 (100%), layer 2, 8 s so far")
    with pytest.raises(ValueError, match="costs"):
        Progress(3, "x", costs=[1, 2])


def test_a_resumed_run_leaves_the_work_done_before_out_of_the_rate(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    with Progress(10, "learning", file=io.StringIO()) as bar:
        bar.skip(5)
        assert bar.eta is None
        clock.now = 1.0
        bar.update(1)
        assert bar.eta == pytest.approx(4.0)


@pytest.mark.parametrize("seconds,text", [(42.4, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_seconds_read_as_a_person_would_say_them(seconds, text):
    assert format_seconds(seconds) == text
