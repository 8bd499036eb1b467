"""A dynamic batcher: requests from many threads or tasks, run together by one worker thread.

Callers ``submit`` prepared requests (one, or a list's worth with ``submit_many``) and get a
:class:`concurrent.futures.Future` for each. The worker takes
the first waiting request, gathers more for up to ``max_wait_ms`` (at most ``max_batch_size``), and runs
them with one call of ``run_batch``. Each future gets exactly the result at its own position. If a
batch fails as a whole, its requests are retried one by one so that one bad request fails only itself.
A cancelled future (its caller went away) is dropped before any work is done for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar, cast

from ..errors import EngineClosedError, EngineForkedError, EngineOverloadedError
from ..options import BatchingOptions
from .calls import CallToken, CallTracker, deadline_after, seconds_left

logger = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

_STOP = object()


def settle(run_batch: Callable[[Sequence[RequestT]], list[ResultT]],
           batch: Sequence[tuple[RequestT, Future[ResultT]]]) -> None:
    """Run ``batch``'s requests as one batch and give each future its result; if the batch fails, run its
    requests one by one, so that one request's failure is its own (each future gets its own result or error)."""
    requests = [request for request, _ in batch]
    try:
        results = run_batch(requests)
        if len(results) != len(batch):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
    except Exception as exc:
        if len(batch) == 1:
            logger.warning("request failed: %s", exc)
            batch[0][1].set_exception(exc)
            return
        logger.warning("a batch of %d failed; retrying its requests one by one", len(batch), exc_info=True)
        for request, future in batch:
            try:
                future.set_result(run_batch([request])[0])
            except Exception as one:
                future.set_exception(one)
        return
    for (_, future), result in zip(batch, results, strict=True):
        future.set_result(result)


class DynamicBatcher(Generic[RequestT, ResultT]):
    """Coalesces concurrent requests into batches for ``run_batch``. Safe to share between threads."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[RequestT]], list[ResultT]],
        options: BatchingOptions,
        *,
        name: str = "parakeet-batcher",
    ) -> None:
        self._run_batch = run_batch
        self._options = options
        self._queue: queue.Queue[tuple[RequestT, Future[ResultT]] | object] = queue.Queue()
        self._closed = threading.Event()
        self._submit_lock = threading.Lock()
        self._room = threading.Condition(self._submit_lock)
        """Notified when the worker takes a request from the queue (room under ``max_queue``) and on close."""
        self._pending = 0
        self._continuing = 0
        """Places under ``max_queue`` claimed by continuations waiting for room (new requests do not get them)."""
        self._arriving = 0
        self._drain = False
        self._draining = False
        """Closed with ``drain`` and waiting for the calls under way: their pieces are still taken."""
        self.calls = CallTracker()
        # Request threads decode audio and compute features before they submit. Letting only a few do so
        # at once keeps the worker (the critical path, which needs the GIL for decoding) from being starved
        # by dozens of runnable request threads.
        self._prepare_slots = threading.BoundedSemaphore(options.max_concurrent_prepare or (os.cpu_count() or 1))
        self._pid = os.getpid()
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._worker.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request that is being prepared and will be submitted soon.

        The worker waits for batch-mates only while some request is on its way; a lone request (nothing
        else arriving or queued) runs at once instead of waiting out ``max_wait_ms``.
        """
        self._check_process()
        with self._submit_lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._submit_lock:
                self._arriving -= 1

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Hold one of the ``max_concurrent_prepare`` slots while preparing a request.

        Blocks: enter it only in a request thread or an executor thread, never on an event loop.
        """
        self._check_process()
        with self._prepare_slots:
            yield

    def check_open(self) -> None:
        """Raise ``EngineClosedError`` once the batcher is closed (callers check before preparing work), and
        ``EngineForkedError`` in a process forked from the one that made it (its worker thread is not there)."""
        self._check_process()
        if self._closed.is_set():
            raise EngineClosedError("the engine is closed")

    def call(self) -> contextlib.AbstractContextManager[CallToken]:
        """A call under way (see :class:`.calls.CallTracker`): ``close(drain=True)`` waits for it to end.

        Raises:
            EngineClosedError, EngineForkedError: as :meth:`check_open`.
        """
        self.check_open()
        return self.calls.call()

    def _check_accepting(self) -> None:
        """Raise unless pieces are taken: open, or closed with ``drain`` while calls are under way."""
        self._check_process()
        if self._closed.is_set() and not self._draining:
            raise EngineClosedError("the engine is closed")

    def _forked(self) -> bool:
        """Whether this is a process forked from the one that made the batcher (its worker is not here)."""
        return os.getpid() != self._pid

    def _check_process(self) -> None:
        if self._forked():  # checked before any lock: one held at the fork stays held in the child
            raise EngineForkedError(
                f"this engine was loaded in process {self._pid}, and its batching worker thread does not exist in "
                f"this forked process {os.getpid()}: load the engine in each process (after the fork, e.g. in a "
                "pool's initializer or a server worker's start-up), or use multiprocessing's 'spawn' start method")

    def submit(self, request: RequestT) -> Future[ResultT]:
        """Queue one request.

        Raises:
            EngineClosedError: the batcher was closed.
            EngineOverloadedError: ``max_queue`` requests are already waiting.
        """
        return self.submit_many([request])[0]

    def submit_many(self, requests: Sequence[RequestT], *, continuing: bool = False) -> list[Future[ResultT]]:
        """Queue several requests at once (all or none), in order, so that the worker batches them together.

        ``continuing``: they are the rest of a request already taken (a list's later chunks, a long input's later
        chunk groups): where ``max_queue`` has no room for them they wait for it (new requests are refused
        meanwhile) instead of failing a request whose first pieces have run. Blocks then: not on an event loop.

        Raises:
            EngineClosedError: the batcher was closed (also while a continuation waited for room).
            EngineOverloadedError: fewer than ``len(requests)`` places are left under ``max_queue`` (never with
                ``continuing``).
        """
        futures: list[Future[ResultT]] = [Future() for _ in requests]
        count = len(requests)
        self._check_process()
        with self._submit_lock:
            self._check_accepting()
            limit = self._options.max_queue
            if limit is not None and continuing:
                self._continuing += count
                try:  # a continuation larger than max_queue goes into an empty queue
                    self._room.wait_for(lambda: (self._closed.is_set() and not self._draining)
                                        or self._pending + count <= limit or self._pending == 0)
                finally:
                    self._continuing -= count
                self._check_accepting()
            elif limit is not None and self._pending + self._continuing + count > limit:
                held = f" ({self._continuing} more held for requests under way)" if self._continuing else ""
                raise EngineOverloadedError(
                    f"{self._pending} requests already waiting{held}; {count} more exceed max_queue={limit}")
            self._pending += count
            for request, future in zip(requests, futures, strict=True):
                self._queue.put((request, future))
        return futures

    def close(self, timeout: float | None = 30.0, *, drain: bool = False) -> None:
        """Stop taking requests and stop the worker.

        The batch in progress always finishes. With ``drain``, the calls under way (:meth:`call`) go on to their
        end (their later pieces are still taken; new calls are refused) and the requests still waiting run;
        otherwise those requests fail with ``EngineClosedError``, and so do the calls' later pieces. Waits up to
        ``timeout`` seconds in all (for the calls, then for the worker); a call still under way then gets
        ``EngineClosedError`` at its next piece. A later close without ``drain`` cuts a drain short.
        """
        if self._forked():  # no worker here, and a lock held at the fork stays held
            self._closed.set()
            return
        deadline = deadline_after(timeout)
        with self._submit_lock:
            if self._closed.is_set():
                if not drain and self._drain:  # cuts short a drain under way: what is left fails
                    self._drain = self._draining = False
                    self.calls.interrupt()
                    self._room.notify_all()
                return
            self._drain = self._draining = drain
            self._closed.set()
        self.calls.close()
        if drain and threading.current_thread() is not self._worker:
            self.calls.wait_for_calls(deadline)
        with self._submit_lock:
            self._draining = False
            self._room.notify_all()  # continuations waiting for room fail with EngineClosedError
            self._queue.put(_STOP)
        if threading.current_thread() is not self._worker:
            self._worker.join(seconds_left(deadline))
        self._fail_waiting()

    # --- worker -----------------------------------------------------------------------------------

    def _take(self, item: tuple[RequestT, Future[ResultT]] | object) -> tuple[RequestT, Future[ResultT]] | None:
        with self._submit_lock:
            self._pending -= 1
            self._room.notify_all()
        request, future = cast("tuple[RequestT, Future[ResultT]]", item)
        return (request, future) if future.set_running_or_notify_cancel() else None

    def _loop(self) -> None:
        options = self._options
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch: list[tuple[RequestT, Future[ResultT]]] = []
            taken = self._take(item)
            if taken is not None:
                batch.append(taken)
            deadline = time.monotonic() + options.max_wait_ms / 1000.0
            stop = False
            while len(batch) < options.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0 or self._arriving == 0:
                        item = self._queue.get_nowait()
                    else:
                        item = self._queue.get(timeout=min(remaining, 0.0005))
                except queue.Empty:
                    if remaining > 0 and self._arriving > 0:
                        continue
                    break
                if item is _STOP:
                    stop = True
                    break
                taken = self._take(item)
                if taken is not None:
                    batch.append(taken)
            if batch and self._closed.is_set() and not self._drain:
                for _, future in batch:
                    future.set_exception(EngineClosedError("the engine was closed before this request ran"))
            elif batch:
                self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[RequestT, Future[ResultT]]]) -> None:
        settle(self._run_batch, batch)

    def _fail_waiting(self) -> None:
        stop = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if stop:  # the worker, still running its batch, has yet to see it: without it, it would wait
                    self._queue.put(_STOP)  # forever on an empty queue (holding the model)
                return
            if item is _STOP:
                stop = True
                continue
            _, future = cast("tuple[RequestT, Future[ResultT]]", item)
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineClosedError("the engine was closed before this request ran"))
