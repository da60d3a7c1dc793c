"""Progress of long work, for a person at a terminal and for a log file alike."""

import sys
import time

import click


def format_seconds(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """click's progress bar on a terminal; elsewhere (a log, a pipe, CI) one plain line every `every`
    seconds and a last one at the end, each with what is done, the caller's text, the time so far and
    an estimate of the time left. `costs`, one positive number per item, makes the bar and the estimate
    count work instead of items, when items differ in cost (a learning iteration at depth 3 costs 2.5
    times one at depth 1). `file=None` draws to standard output; pass an io.StringIO to silence it (the
    other processes under torchrun).

    The estimate is the rate of work since the end of this run's first update, which it leaves out: that
    one pays the warm-up (allocations, kernel selection), several times a later one's cost, and from it
    alone a four-minute run looked like an hour. Work done before a resume is not counted in the rate."""

    def __init__(self, total: int, label: str, file=None, every: float = 15.0, costs=None):
        self.total, self.label, self.every = max(int(total), 1), label, every
        if costs is not None and len(costs) != total:
            raise ValueError(f"{len(costs)} costs for {total} items")
        # Work units per item, integers for click's bar; the cheapest item is 100 units.
        cheapest = min(costs) if costs else 1
        self.units = [max(1, round(100 * c / cheapest)) for c in costs] if costs else None
        self.file = file
        self.done, self.text = 0, ""
        self.work, self.skipped_work = 0, 0  # work units done, and those of them skipped (not run here)
        stream = file if file is not None else sys.stdout
        self.terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.bar = None
        self.start = self.last_line = time.perf_counter()
        self.mark = None  # (time, work) at the end of this run's first update: where the rate is measured from
        self.shown_done = False  # whether a plain line already said that everything is done

    def __enter__(self) -> "Progress":
        if self.terminal:
            self.bar = click.progressbar(length=self._work(0, self.total), label=self.label, show_eta=False,
                                         item_show_func=lambda text: text, file=self.file).__enter__()
        else:
            click.echo(f"{self.label}: {self.total} to do", file=self.file)
        self.start = self.last_line = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif exc[0] is None and self.done > 0 and not self.shown_done:
            self._line()

    def skip(self, n: int) -> None:
        """Count `n` items as done without running them here (done before a resume, or skipped), out of the
        rate estimate."""
        work = self._work(self.done, self.done + n)
        self.done, self.work = self.done + n, self.work + work
        self.skipped_work += work
        if self.bar is not None:
            self.bar.update(work)

    def update(self, n: int, text: str = "") -> None:
        work = self._work(self.done, self.done + n)
        self.done, self.work, self.text = self.done + n, self.work + work, text
        if self.mark is None:
            self.mark = (time.perf_counter(), self.work - self.skipped_work)
        if self.bar is not None:
            eta = self.eta
            self.bar.update(work, text + (f", about {format_seconds(eta)} left" if eta is not None else ""))
        elif time.perf_counter() - self.last_line >= self.every or self.done >= self.total:
            self._line()

    def _work(self, start: int, stop: int) -> int:
        """Work units of items start .. stop - 1."""
        return sum(self.units[start:stop]) if self.units else stop - start

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate of work since this run's first update (None until one more is done)."""
        run = self.work - self.skipped_work  # work run here
        if self.mark is None or run <= self.mark[1] or self.done >= self.total:
            return None
        since, work = self.mark
        return (time.perf_counter() - since) / (run - work) * (self._work(0, self.total) - self.work)

    def _line(self) -> None:
        self.last_line, self.shown_done = time.perf_counter(), self.done >= self.total
        eta = self.eta
        left = f", about {format_seconds(eta)} left" if eta is not None else ""
        text = f" {self.text}," if self.text else ""
        click.echo(f"{self.label}: {self.done}/{self.total} ({self.done / self.total:.0%}),{text} "
                   f"{format_seconds(time.perf_counter() - self.start)} so far{left}", file=self.file)
