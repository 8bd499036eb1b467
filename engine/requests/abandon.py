"""Cancelling an async call's queued work, whichever of the task and its executor threads comes first."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any


class Abandonment:
    """Shared by an awaiting task and the executor threads working for it. The task marks itself gone when it is
    cancelled (:meth:`abandon`); a thread hands over what it queued for the task (:meth:`track`). Whichever of the
    two comes second cancels the queued futures: a request queued just as its task was cancelled (the thread's
    result then never reaches the task) does not run for nobody. A future already running is left to finish."""

    def __init__(self) -> None:
        self._gone = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[Future[Any]] = []

    def is_set(self) -> bool:
        """Whether the task is gone (the threads stop at their next step)."""
        return self._gone.is_set()

    def track(self, futures: Sequence[Future[Any]]) -> None:
        """Hand over futures queued for the task: cancelled at once when it is already gone."""
        with self._lock:
            gone = self._gone.is_set()
            if not gone:
                self._futures.extend(futures)
        if gone:
            for future in futures:
                future.cancel()

    def abandon(self) -> None:
        """The task is gone: cancel what was handed over, and what is handed over from now on."""
        with self._lock:
            self._gone.set()
            futures, self._futures = self._futures, []
        for future in futures:
            future.cancel()
