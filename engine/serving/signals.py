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
