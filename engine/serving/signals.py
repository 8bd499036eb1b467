"""SIGTERM turned into an exception while a command-line job runs, so that it ends as an interruption does."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType


@contextlib.contextmanager
def sigterm_raises(make: Callable[[], BaseException]) -> Iterator[threading.Event]:
    """While the block runs, SIGTERM raises ``make()`` in the main thread (where the block's cleanup then runs);
    the event yielded says whether it came. Outside the main thread (which alone may set handlers) nothing is
    installed. The previous handler comes back afterwards (the caller may be a longer-lived process)."""
    terminated = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        terminated.set()
        raise make()

    if threading.current_thread() is not threading.main_thread():
        yield terminated
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interruptions_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while the block runs and delivered to their handlers when it ends: for a step
    that must not be cut in two (an input's outputs written and counted in the summary). Outside the main
    thread nothing changes (only the main thread receives Python's signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = {number: signal.signal(number, hold) for number in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for signum in dict.fromkeys(held):
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
