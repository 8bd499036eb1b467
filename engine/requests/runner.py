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
from .calls import CallToken, CallTracker, deadline_after, seconds_left
from .inference import Outcome, Work

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


class Runner(Protocol):
    """What the engine needs of a runner (both runners below, over prepared requests and transcripts)."""

    @property
    def closed(self) -> bool: ...

    calls: CallTracker

    def check_open(self) -> None: ...

    def call(self) -> contextlib.AbstractContextManager[CallToken]: ...

    def arriving(self) -> contextlib.AbstractContextManager[None]: ...

    def preparing(self) -> contextlib.AbstractContextManager[None]: ...

    def submit_many(self, requests: Sequence[Work], *, continuing: bool = False) -> list[Future[Outcome]]: ...

    def close(self, timeout: float | None = 30.0, *, drain: bool = False) -> None: ...


class Unqueued:
    """The admission side of a runner that runs each submission as it comes (the inline runner, a Ray Serve
    replica's): nothing to coordinate before a submission, a closed flag, and the calls under way (``calls``),
    which ``close(drain=True)`` waits for. A runner sets ``_lock`` and ``calls``."""

    _lock: threading.Condition
    _closed: bool = False
    _draining: bool = False
    """Closed with ``drain`` and waiting for the calls under way: their pieces are still taken."""
    calls: CallTracker

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise ``EngineClosedError`` once closed."""
        if self._closed:
            raise EngineClosedError("the engine is closed")

    def call(self) -> contextlib.AbstractContextManager[CallToken]:
        """A call under way (see :class:`.calls.CallTracker`): ``close(drain=True)`` waits for it to end.

        Raises:
            EngineClosedError: the runner was closed.
        """
        self.check_open()
        return self.calls.call()

    def _check_accepting(self) -> None:
        """Raise unless submissions are taken: open, or closed with ``drain`` while calls are under way."""
        if self._closed and not self._draining:
            raise EngineClosedError("the engine is closed")

    def close(self, timeout: float | None = 30.0, *, drain: bool = False) -> None:
        """Refuse new calls; with ``drain``, take the pieces of the calls under way until they end, then let the
        runner finish its submissions (:meth:`_finish_close`), within ``timeout`` seconds in all. A later close
        without ``drain`` cuts a drain short."""
        deadline = deadline_after(timeout)
        with self._lock:
            if self._closed:
                if not drain:  # cuts short a drain under way
                    self._draining = False
                    self.calls.interrupt()
                    self._finish_close(False, deadline)
                return
            self._closed, self._draining = True, drain
        self.calls.close()
        if drain:
            self.calls.wait_for_calls(deadline)
        with self._lock:
            self._draining = False
            self._lock.notify_all()  # continuations waiting for room fail with EngineClosedError
            self._finish_close(drain, deadline)

    def _finish_close(self, drain: bool, deadline: float | None) -> None:
        """The runner's own part of :meth:`close`, under its lock, once the calls under way ended (or the
        deadline passed)."""

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
        self.calls = CallTracker()
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
            self._check_accepting()
            limit = self._options.max_queue
            if limit is not None and continuing:
                self._continuing += count
                try:
                    self._lock.wait_for(lambda: (self._closed and not self._draining)
                                        or self._running + count <= limit or self._running == 0)
                finally:
                    self._continuing -= count
                self._check_accepting()
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

    def _finish_close(self, drain: bool, deadline: float | None) -> None:
        """With ``drain``, wait for the running submissions."""
        if drain:
            self._lock.wait_for(lambda: self._running == 0, seconds_left(deadline))


def make_runner(
    run_batch: Callable[[Sequence[RequestT]], list[ResultT]], options: BatchingOptions
) -> DynamicBatcher[RequestT, ResultT] | InlineRunner[RequestT, ResultT]:
    """The dynamic batcher when ``options.enabled``, else the inline runner."""
    if options.enabled:
        return DynamicBatcher(run_batch, options)
    return InlineRunner(run_batch, options)
