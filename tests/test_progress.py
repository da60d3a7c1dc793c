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
    # Cheap items, then ones that cost three times as much: at 1 s per cheap one the rest is worth 3 s
    # per item, not the 1 s an estimate by items would say.
    with Progress(5, "learning", file=out, every=0.0, costs=[1, 1, 1, 3, 3]) as bar:
        clock.now = 1.0
        bar.update(1, "layer 1")
        clock.now = 2.0
        bar.update(1, "layer 1")
        assert bar.eta == pytest.approx(7.0)  # 1 unit in the 1 s since the first update, 7 units left
        clock.now = 3.0
        bar.update(1, "layer 1")
        clock.now = 6.0
        bar.update(1, "layer 2")
        clock.now = 9.0
        bar.update(1, "layer 2")
    lines = out.getvalue().splitlines()
    assert lines[0] == "learning: 5 to do"
    assert lines[1] == "learning: 1/5 (20%), layer 1, 1 s so far"  # no estimate from the first item alone
    assert lines[2] == "learning: 2/5 (40%), layer 1, 2 s so far, about 7 s left"
    assert lines[-1] == "learning: 5/5 (100%), layer 2, 9 s so far"  # once, not again at the end
    assert len(lines) == 6
    with pytest.raises(ValueError, match="costs"):
        Progress(3, "x", costs=[1, 2])


def test_the_first_updates_warm_up_does_not_make_the_estimate(monkeypatch):
    # The first update pays for allocations and kernel selection: 10 s here, against 1 s for the next.
    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    with Progress(100, "learning", file=io.StringIO()) as bar:
        clock.now = 10.0
        bar.update(1)
        assert bar.eta is None
        clock.now = 11.0
        bar.update(1)
        assert bar.eta == pytest.approx(98.0)  # not 98 x 5.5 s


def test_a_resumed_run_leaves_the_work_done_before_out_of_the_rate(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    with Progress(10, "learning", file=io.StringIO()) as bar:
        bar.skip(5)
        assert bar.eta is None
        clock.now = 3.0  # the first update after the resume warms up
        bar.update(1)
        assert bar.eta is None
        clock.now = 4.0
        bar.update(1)
        bar.skip(1)  # iterations a runaway skipped take no time
        assert bar.eta == pytest.approx(2.0)  # 1 s per item run here, 2 items left


@pytest.mark.parametrize("seconds,text", [(42.4, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_seconds_read_as_a_person_would_say_them(seconds, text):
    assert format_seconds(seconds) == text
