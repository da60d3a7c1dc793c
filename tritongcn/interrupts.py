"""Ctrl-C and SIGTERM as a request to stop at the next safe point, where the work can be saved.

A long run killed mid-update would lose everything since its last checkpoint, or leave a half-written
one. Inside `stop_requests()` the first SIGINT or SIGTERM only raises a flag; the loop looks at it between
iterations (or chunks of Langevin steps), saves a resumable state and exits with 130, the shell's code for
an interrupted command. A second signal stops at once (KeyboardInterrupt): the atomic writes keep the
last checkpoint whole either way.
"""

import contextlib
import signal
import threading

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


class StopRequest:
    """Set by the first SIGINT or SIGTERM inside `stop_requests()`; `signal_name` says which."""

    def __init__(self):
        self.signal_name = None

    def __bool__(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def stop_requests():
    """Yield a `StopRequest` that SIGINT and SIGTERM set, restoring the previous handlers on exit.

    Outside the main thread signals cannot be caught: the request then simply never comes.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request:  # asked twice: the user means now
            raise KeyboardInterrupt
        request.signal_name = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
