"""The calls under way on a runner, so that ``close(drain=True)`` can let each of them finish whole.

A call (``transcribe``, ``transcribe_iter``, ``transcribe_async``, single or list) may submit several pieces to its
runner over its life: a list's chunks, a long input's chunk groups, and the one request of a short input after it
was decoded. Closing with ``drain`` waits for every call that had begun, while refusing new ones, so that none of
them is cut off half-way; closing without ``drain`` does not wait.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator

from ..errors import EngineClosedError


class CallTracker:
    """Counts the calls under way (per thread) and refuses new ones once closed. Thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._closed = False
        self._threads: Counter[int] = Counter()
        """Calls under way, by the thread that began them."""

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """One call, from its start to its end (its result returned, or its error raised).

        Raises:
            EngineClosedError: the tracker was closed (the call does not begin).
        """
        thread = threading.get_ident()
        with self._changed:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            self._threads[thread] += 1
        try:
            yield
        finally:
            with self._changed:
                self._threads[thread] -= 1
                if not self._threads[thread]:
                    del self._threads[thread]
                self._changed.notify_all()

    def close(self) -> None:
        """Refuse new calls from now on (idempotent)."""
        with self._changed:
            self._closed = True

    def wait_for_calls(self, deadline: float | None) -> bool:
        """Wait until no call begun by another thread is under way (the calling thread's own, if it is inside
        one, would never end while it waits here), or until ``deadline`` (``time.monotonic()``; ``None``: no
        limit). Whether they all ended."""
        thread = threading.get_ident()

        def ended() -> bool:
            return not any(count for caller, count in self._threads.items() if caller != thread)

        with self._changed:
            return self._changed.wait_for(ended, seconds_left(deadline))


def deadline_after(timeout: float | None) -> float | None:
    """``time.monotonic()`` plus ``timeout`` seconds (``None``: no deadline)."""
    return None if timeout is None else time.monotonic() + timeout


def seconds_left(deadline: float | None) -> float | None:
    """The seconds left until ``deadline`` (never negative), or ``None`` for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
