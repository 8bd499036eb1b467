"""The calls under way on a runner, so that ``close(drain=True)`` can let each of them finish whole.

A call (``transcribe``, ``transcribe_iter``, ``transcribe_async``, single or list) may submit several pieces to its
runner over its life: a list's chunks, a long input's chunk groups, and the one request of a short input after it
was decoded. Closing with ``drain`` waits for every call that had begun, while refusing new ones, so that none of
them is cut off half-way; closing without ``drain`` does not wait.

Two kinds of call cannot end while ``close`` waits, so it does not wait for them: the call whose own code is
running ``close`` (a ``progress`` callback, on whatever thread resumed it), and, when ``close`` runs on an event
loop's thread, the async calls of that loop (each needs the loop, which ``close`` blocks; a warning says so).
A ``transcribe_iter`` call lasts until its iterator is exhausted or closed: one left suspended holds ``close``
until its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Iterator

from ..errors import EngineClosedError

logger = logging.getLogger(__name__)


class CallToken:
    """One call under way (an identity; nothing in it changes)."""

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        """The event loop the call began on (an async call's), else ``None``."""


_INSIDE: contextvars.ContextVar[frozenset[CallToken]] = contextvars.ContextVar("parakeet_runtime_calls_inside",
                                                                                default=frozenset())
"""The calls whose code the current context is running (a thread's, or an asyncio task's)."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class CallTracker:
    """The calls under way, and the refusal of new ones once closed. Thread-safe; in a process forked from the one
    that made it, it starts again empty (the parent's calls are not the child's)."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._changed = threading.Condition()
        self._closed = False
        self._interrupted = False
        self._calls: set[CallToken] = set()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's calls, and a lock one of its threads may have held at the fork."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._changed = threading.Condition()
            self._calls = set()

    @contextlib.contextmanager
    def call(self) -> Iterator[CallToken]:
        """One call, from its start to its end (its result returned, or its error raised), its code running in
        this context throughout (for a generator, which runs in whichever context resumes it: :meth:`begin`,
        :meth:`inside` and :meth:`end`).

        Raises:
            EngineClosedError: the tracker was closed (the call does not begin).
        """
        token = self.begin()
        try:
            with self.inside(token):
                yield token
        finally:
            self.end(token)

    def begin(self) -> CallToken:
        """Register a call (ended by :meth:`end`).

        Raises:
            EngineClosedError: the tracker was closed.
        """
        self._after_fork()
        token = CallToken(_running_loop())
        with self._changed:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            self._calls.add(token)
        return token

    def end(self, token: CallToken) -> None:
        self._after_fork()
        with self._changed:
            self._calls.discard(token)
            self._changed.notify_all()

    @staticmethod
    @contextlib.contextmanager
    def inside(token: CallToken) -> Iterator[None]:
        """Mark the current context as running ``token``'s code (a ``close`` from here does not wait for it)."""
        reset = _INSIDE.set(_INSIDE.get() | {token})
        try:
            yield
        finally:
            _INSIDE.reset(reset)

    def close(self) -> None:
        """Refuse new calls from now on (idempotent)."""
        self._after_fork()
        with self._changed:
            self._closed = True

    def interrupt(self) -> None:
        """End a :meth:`wait_for_calls` under way now (a later ``close`` without ``drain`` cuts a drain short)."""
        self._after_fork()
        with self._changed:
            self._interrupted = True
            self._changed.notify_all()

    def wait_for_calls(self, deadline: float | None) -> bool:
        """Wait until every call that can end meanwhile has ended (see the module's docstring for those that
        cannot), or until ``deadline`` (``time.monotonic()``; ``None``: no limit), or :meth:`interrupt`. Whether
        they all ended."""
        self._after_fork()
        inside, loop = _INSIDE.get(), _running_loop()
        with self._changed:
            on_this_loop = sum(1 for token in self._calls if loop is not None and token.loop is loop)
            if on_this_loop:
                logger.warning("close(drain=True) on the event loop's thread cannot wait for the %d async call(s) "
                               "of that loop (they need the loop it blocks): call it as await asyncio.to_thread("
                               "engine.close, drain=True)", on_this_loop)

            def ended() -> bool:
                return self._interrupted or all(token in inside or (loop is not None and token.loop is loop)
                                                for token in self._calls)

            return self._changed.wait_for(ended, seconds_left(deadline)) and not self._interrupted


def deadline_after(timeout: float | None) -> float | None:
    """``time.monotonic()`` plus ``timeout`` seconds (``None``: no deadline)."""
    return None if timeout is None else time.monotonic() + timeout


def seconds_left(deadline: float | None) -> float | None:
    """The seconds left until ``deadline`` (never negative), or ``None`` for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
