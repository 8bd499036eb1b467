"""Where prepared requests run: the dynamic batcher's worker, or the caller's thread.

Both runners take requests the same way (``check_open``, ``arriving``, ``preparing``, ``submit_many`` returning
futures, ``close``), so the engine has one request path whatever the batching options say, and ``close()``
and the queue limit apply to every call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar

from ..errors import EngineClosedError, EngineOverloadedError
from ..options import BatchingOptions
from .batcher import DynamicBatcher, settle
from .inference import Outcome, Work

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class Runner(Protocol):
    """What the engine needs of a runner (both runners below, over prepared requests and transcripts)."""

    @property
    def closed(self) -> bool: ...

    def check_open(self) -> None: ...

    def arriving(self) -> contextlib.AbstractContextManager[None]: ...

    def preparing(self) -> contextlib.AbstractContextManager[None]: ...

    def submit_many(self, requests: Sequence[Work], *, continuing: bool = False) -> list[Future[Outcome]]: ...

    def close(self, timeout: float | None = 30.0, *, drain: bool = False) -> None: ...


class Unqueued:
    """The admission side of a runner that runs each submission as it comes (the inline runner, a Ray Serve
    replica's): nothing to coordinate before a submission, and a closed flag (``_closed``, set by the runner)."""

    _closed: bool = False

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise ``EngineClosedError`` once closed."""
        if self._closed:
            raise EngineClosedError("the engine is closed")

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Nothing to coordinate: each call runs on its own."""
        yield

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """No preparation slots: there is no worker to starve."""
        yield


class InlineRunner(Unqueued, Generic[RequestT, ResultT]):
    """Runs each submission at once in the submitting thread (``BatchingOptions(enabled=False)``).

    Concurrent calls run side by side in their own threads. ``max_queue`` bounds the submissions running at
    once; ``close`` refuses new ones, and with ``drain`` waits for the running ones to finish.
    """

    def __init__(self, run_batch: Callable[[Sequence[RequestT]], list[ResultT]], options: BatchingOptions) -> None:
        self._run_batch = run_batch
        self._options = options
        self._lock = threading.Condition()
        self._closed = False
        self._running = 0
        self._continuing = 0
        """Places under ``max_queue`` claimed by continuations waiting for room (new calls do not get them)."""

    def submit_many(self, requests: Sequence[RequestT], *, continuing: bool = False) -> list[Future[ResultT]]:
        """Run ``requests`` now, in this thread, as one batch; the futures come back done.

        ``continuing``: the rest of a call already running (a list's later chunks, a long input's later chunk
        groups): where ``max_queue`` has no room, wait for it (new calls are refused meanwhile) instead of failing.

        Raises:
            EngineClosedError: the runner was closed (also while a continuation waited for room).
            EngineOverloadedError: ``max_queue`` requests are already running (never with ``continuing``).
        """
        count = len(requests)
        with self._lock:
            self.check_open()
            limit = self._options.max_queue
            if limit is not None and continuing:
                self._continuing += count
                try:
                    self._lock.wait_for(lambda: self._closed or self._running + count <= limit or self._running == 0)
                finally:
                    self._continuing -= count
                self.check_open()
            elif limit is not None and self._running + self._continuing + count > limit:
                held = f" ({self._continuing} more held for calls under way)" if self._continuing else ""
                raise EngineOverloadedError(
                    f"{self._running} requests already running{held}; {count} more exceed max_queue={limit}")
            self._running += count
        futures: list[Future[ResultT]] = [Future() for _ in requests]
        try:
            for future in futures:
                future.set_running_or_notify_cancel()
            settle(self._run_batch, list(zip(requests, futures, strict=True)))  # as the batcher: failures isolated
        finally:
            with self._lock:
                self._running -= len(requests)
                self._lock.notify_all()
        return futures

    def close(self, timeout: float | None = 30.0, *, drain: bool = False) -> None:
        """Refuse new requests; with ``drain``, wait up to ``timeout`` seconds for the running ones."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()  # continuations waiting for room fail with EngineClosedError
            if drain:
                self._lock.wait_for(lambda: self._running == 0, timeout)


def make_runner(
    run_batch: Callable[[Sequence[RequestT]], list[ResultT]], options: BatchingOptions
) -> DynamicBatcher[RequestT, ResultT] | InlineRunner[RequestT, ResultT]:
    """The dynamic batcher when ``options.enabled``, else the inline runner."""
    if options.enabled:
        return DynamicBatcher(run_batch, options)
    return InlineRunner(run_batch, options)
