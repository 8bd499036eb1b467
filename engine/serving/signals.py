"""Signals and command-line jobs: SIGTERM turned into an exception while a job runs, so that it ends as an
interruption does; Ctrl-C and SIGTERM held back during a step that must not be cut in two."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any


def _handlers_settable(*numbers: int) -> bool:
    """Whether this thread may replace these signals' handlers and put them back: only the main thread sets
    Python's handlers, and a handler set outside Python (``signal.getsignal`` gives ``None``) cannot be put back."""
    return threading.current_thread() is threading.main_thread() and all(
        signal.getsignal(number) is not None for number in numbers)


@contextlib.contextmanager
def sigterm_raises(make: Callable[[], BaseException]) -> Iterator[threading.Event]:
    """While the block runs, SIGTERM raises ``make()`` in the main thread (where the block's cleanup then runs);
    the event yielded says whether it came. Outside the main thread (which alone may set handlers) nothing is
    installed. The previous handler comes back afterwards (the caller may be a longer-lived process)."""
    terminated = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        terminated.set()
        raise make()

    if not _handlers_settable(signal.SIGTERM):
        yield terminated
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


DEFERRED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals :func:`interruptions_deferred` holds back, in the order they are delivered at its end (SIGTERM
first: when both came, the run ends as terminated, whatever Ctrl-C's handler raises)."""


@contextlib.contextmanager
def interruptions_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while the block runs and delivered to their handlers when it ends: for a step
    that must not be cut in two (an input's outputs written and counted in the summary). Outside the main
    thread nothing changes (only the main thread receives Python's signal handlers); so too where a handler was
    not set from Python (``signal.getsignal`` gives ``None``: it could not be put back)."""
    if not _handlers_settable(*DEFERRED_SIGNALS):
        yield
        return
    held: set[int] = set()

    def hold(signum: int, frame: FrameType | None) -> None:
        held.add(signum)

    previous = {number: signal.signal(number, hold) for number in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _deliver([(number, previous[number]) for number in DEFERRED_SIGNALS if number in held])


def _deliver(pending: list[tuple[int, Any]]) -> None:
    """Call each held signal's handler in turn (each one even if one before raised); re-raise the first error."""
    if not pending:
        return
    (number, handler), rest = pending[0], pending[1:]
    try:
        if callable(handler):
            handler(number, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(number)
    finally:
        _deliver(rest)
