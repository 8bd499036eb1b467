"""Serve the OpenAI-compatible HTTP API on a Ray cluster: :func:`app` returns a Ray Serve application whose
replicas each run the same ASGI app as ``parakeet-runtime serve`` (``engine/serving/server.py``, through
``serve.ingress``), with batching across requests by ``@serve.batch``.

Needs the ``ray`` extra (``pip install 'parakeet-runtime[ray]'``, which brings the ``server`` extra); nothing
else in the package imports Ray.

>>> from ray import serve                                                   # doctest: +SKIP
>>> from parakeet_runtime.engine.ray_serve import app                       # doctest: +SKIP
>>> serve.run(app("parakeet-v2", num_replicas=2), route_prefix="/")         # doctest: +SKIP

How a request runs in a replica: the ASGI app checks and reads the upload and calls
``engine.transcribe_async``, which decodes the audio and computes its features in a worker thread; the
prepared request then goes to a ``@serve.batch`` method instead of the engine's own batcher. Serve's batch
queue collects the requests of every connection of the replica into one batch, sized by audio seconds
(``batch_size_fn``: at most ``max_batch_seconds`` per batch, a longer request alone), and the batch runs the
graphs in one call (the engine then buckets it by length, as always). Results are the engine's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ray import serve
from starlette.applications import Starlette

from .engine import Engine
from .errors import OptionsError
from .model.devices import gpus_per_engine
from .options import BatchingOptions, ConfidenceOptions, LongFormOptions, SessionOptions
from .requests.calls import CallTracker, seconds_left
from .requests.inference import Outcome, Work
from .requests.prepare import PreparedAudio
from .requests.runner import Unqueued
from .serving.options import ServerOptions
from .serving.server import create_app

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = "parakeet"
"""The deployment's name (and the actor class name prefix of its replicas: ``ServeReplica:APP:parakeet``)."""
MAX_BATCH_SECONDS = 240.0
"""Default most audio (seconds, summed over the requests) in one ``@serve.batch`` batch."""


@dataclass(frozen=True)
class _Item:
    """One request in Serve's batch queue: the prepared audio and its weight (whole seconds, at least 1, at
    most the batch's limit, so that a request longer than the limit runs alone instead of failing)."""

    prepared: Work
    weight: int


def audio_seconds(items: list[_Item]) -> int:
    """``batch_size_fn``: a batch's size is its audio, in whole seconds."""
    return sum(item.weight for item in items)


@dataclass(frozen=True)
class ReplicaOptions:
    """What each replica loads and how it batches (sent to the replicas, so plain values only)."""

    model: str | None
    """A model directory; ``None``: the bundled demo model."""
    threads: int | None = None
    confidence: ConfidenceOptions | None = None
    max_batch_seconds: float = MAX_BATCH_SECONDS
    batch_wait_timeout_s: float = 0.005
    max_batch_size: int = 16
    """The engine's encoder batches (``BatchingOptions.max_batch_size``) within one Serve batch."""
    server: ServerOptions = dataclasses.field(default_factory=ServerOptions)
    session: SessionOptions | None = None
    """``Engine.load(session=...)`` (default: ``SessionOptions()``); ``threads``, when set, replaces its threads."""
    long_form: LongFormOptions | None = None
    device: str | None = None
    """``Engine.load(device=...)`` (default: the default providers)."""

    def session_options(self) -> SessionOptions:
        session = self.session or SessionOptions()
        return session if self.threads is None else dataclasses.replace(session, threads=self.threads)


class ServeRunner(Unqueued):
    """The engine's runner in a replica: every prepared request goes to the deployment's ``@serve.batch``
    method on the replica's event loop (the engine's :class:`~parakeet_runtime.engine.requests.runner.Runner`
    protocol)."""

    def __init__(self, deployment: ParakeetDeployment, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self._deployment = deployment
        self._loop = loop
        self._limit = max(1, math.floor(limit))
        self._closed = False
        self.calls = CallTracker()
        self._lock = threading.Condition()
        self._pending: set[Future[Outcome]] = set()

    def submit_many(self, requests: Sequence[Work], *, continuing: bool = False) -> list[Future[Outcome]]:
        """Queue ``requests`` in Serve's batch queue (from any thread but the event loop's). ``continuing``
        (the rest of a request already taken) changes nothing: this queue has no limit of its own."""
        with self._lock:
            self._check_accepting()
            futures = [asyncio.run_coroutine_threadsafe(self._deployment.run_batch(self.item(prepared)), self._loop)
                       for prepared in requests]
            self._pending.update(futures)
        for future in futures:
            future.add_done_callback(self._done)
        return futures

    def item(self, prepared: Work) -> _Item:
        """A prepared request weighs its seconds; a long input's group of chunks runs alone (full weight)."""
        if isinstance(prepared, PreparedAudio):
            return _Item(prepared, min(self._limit, max(1, math.ceil(prepared.duration))))
        return _Item(prepared, self._limit)

    def _done(self, future: Future[Outcome]) -> None:
        with self._lock:
            self._pending.discard(future)
            self._lock.notify_all()

    def _finish_close(self, drain: bool, deadline: float | None) -> None:
        """With ``drain``, wait for the requests in Serve's queue; otherwise cancel them."""
        if drain:
            self._lock.wait_for(lambda: not self._pending, seconds_left(deadline))
        else:
            for future in list(self._pending):
                future.cancel()


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class ParakeetDeployment:
    """One replica: one engine, the OpenAI-compatible ASGI app of ``serving/server.py`` over it."""

    def __init__(self, options: ReplicaOptions) -> None:
        self.config = options
        # Batching off: the engine's own batcher is not used; Serve's batch queue takes its place.
        self.engine = Engine.load(options.model, session=options.session_options(),
                                  batching=BatchingOptions(enabled=False, max_batch_size=options.max_batch_size),
                                  confidence=options.confidence, long_form=options.long_form,
                                  device=options.device)
        batch_handler: Any = self.run_batch  # @serve.batch's setters
        batch_handler.set_max_batch_size(max(1, math.floor(options.max_batch_seconds)))
        batch_handler.set_batch_wait_timeout_s(options.batch_wait_timeout_s)
        self.batches = 0
        self.requests = 0
        self.largest = 0
        logger.info("replica loaded %s (pid %d)", self.engine.model_dir, os.getpid())
        if options.server.warm_up_seconds is not None:  # here, on the replica's own engine, before Serve routes to it
            self.engine.warm_up(options.server.warm_up_seconds, batch=options.server.warm_up_batch)

    async def __serve_build_asgi_app__(self) -> Starlette:
        runner = ServeRunner(self, asyncio.get_running_loop(), self.config.max_batch_seconds)
        served = dataclasses.replace(self.engine, runner=runner)
        return create_app(served, dataclasses.replace(self.config.server, warm_up_seconds=None))  # done in __init__

    @serve.batch(max_batch_size=int(MAX_BATCH_SECONDS), batch_wait_timeout_s=0.005, batch_size_fn=audio_seconds)
    async def run_batch(self, items: list[_Item]) -> list[Outcome]:
        """One Serve batch: the requests' graphs run together (in a worker thread, off the event loop)."""
        self.batches += 1
        self.requests += len(items)
        self.largest = max(self.largest, len(items))
        return await asyncio.to_thread(self.engine.inference.run, [item.prepared for item in items])

    def stats(self) -> dict[str, int]:
        """This replica's process id and its Serve batches so far: ``{"pid", "batches", "requests", "largest"}``
        (``largest``: most requests in one batch). Call it through a handle:
        ``serve.get_app_handle(name).stats.remote().result()``."""
        return {"pid": os.getpid(), "batches": self.batches, "requests": self.requests, "largest": self.largest}


def app(
    model: str | os.PathLike[str] | None = None,
    *,
    num_replicas: int | None = None,
    autoscaling_config: dict[str, Any] | None = None,
    max_ongoing_requests: int = 64,
    max_queued_requests: int = -1,
    num_cpus: float = 1.0,
    threads: int | None = None,
    confidence: ConfidenceOptions | None = None,
    max_batch_seconds: float = MAX_BATCH_SECONDS,
    batch_wait_timeout_s: float = 0.005,
    max_batch_size: int = 16,
    server: ServerOptions | None = None,
    session: SessionOptions | None = None,
    long_form: LongFormOptions | None = None,
    device: str | None = None,
) -> serve.Application:
    """The Serve application; run it with ``serve.run(app(...), route_prefix="/")``.

    Args:
        model: a model directory written by ``convert-model`` (a relative one is taken from the current
            directory when it exists there; else it must exist on every node); ``None``: the bundled demo model.
        num_replicas: replicas (each loads the model once); ``None`` with ``autoscaling_config``, else 1.
        autoscaling_config: Serve's autoscaling (``{"min_replicas": 1, "max_replicas": 4,
            "target_ongoing_requests": 16}``); replaces ``num_replicas``.
        max_ongoing_requests: requests a replica takes at once (Serve queues the others, or answers 503 past
            ``max_queued_requests``).
        max_queued_requests: requests waiting for a replica before Serve answers 503 (-1: no limit).
        num_cpus: CPUs each replica reserves.
        threads: ONNX Runtime intra-op threads per replica (``SessionOptions.threads``).
        confidence: NeMo's confidence scores in ``verbose_json`` words and segments.
        max_batch_seconds: most audio in one ``@serve.batch`` batch (``batch_size_fn`` sums the requests'
            seconds); a longer request runs alone.
        batch_wait_timeout_s: how long a batch waits for more requests after its first.
        max_batch_size: most requests in one encoder batch within a Serve batch (``BatchingOptions``).
        server: the HTTP app's limits (``ServerOptions``; its ``max_in_flight`` is per replica).
        session: each replica's ``SessionOptions`` (backend, precision, decoder weights; ``threads``, when
            given, replaces its threads).
        long_form: each replica's ``LongFormOptions`` (strategy, chunk length).
        device: each replica's ``Engine.load(device=...)``; ``"cuda"`` and ``"tensorrt"`` also reserve one GPU
            per replica (``ray_actor_options={"num_gpus": 1}``).

    Raises:
        OptionsError: a bad option (a ``ValueError``).
    """
    gpus = gpus_per_engine(device)
    if num_replicas is not None and autoscaling_config is not None:
        raise OptionsError("app", "num_replicas", "None with autoscaling_config", num_replicas,
                           message="give num_replicas or autoscaling_config, not both")
    if num_replicas is not None and num_replicas < 1:
        raise OptionsError("app", "num_replicas", "at least 1", num_replicas,
                           message=f"num_replicas must be at least 1, got {num_replicas}")
    if not (max_batch_seconds >= 1 and math.isfinite(max_batch_seconds)):
        raise OptionsError("app", "max_batch_seconds", "at least 1", max_batch_seconds,
                           message=f"max_batch_seconds must be at least 1, got {max_batch_seconds}")
    if batch_wait_timeout_s < 0:
        raise OptionsError("app", "batch_wait_timeout_s", ">= 0", batch_wait_timeout_s,
                           message=f"batch_wait_timeout_s must be >= 0, got {batch_wait_timeout_s}")
    if model is not None and not Path(model).is_absolute() and Path(model).exists():
        model = Path(model).resolve()
    options = ReplicaOptions(
        model=None if model is None else os.fspath(model), threads=threads, confidence=confidence,
        max_batch_seconds=max_batch_seconds, batch_wait_timeout_s=batch_wait_timeout_s,
        max_batch_size=max_batch_size, server=server or ServerOptions(), session=session, long_form=long_form,
        device=device,
    )
    deployment_options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests,
        "max_queued_requests": max_queued_requests,
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": gpus},
    }
    if autoscaling_config is not None:
        deployment_options["autoscaling_config"] = autoscaling_config
    else:
        deployment_options["num_replicas"] = num_replicas or 1
    deployment = cast(serve.Deployment, ParakeetDeployment)  # the decorators make it one; mypy sees the class
    return deployment.options(**deployment_options).bind(options)


__all__ = ["DEPLOYMENT_NAME", "MAX_BATCH_SECONDS", "ParakeetDeployment", "ReplicaOptions", "ServeRunner", "app",
           "audio_seconds"]
