"""Transcribe a Ray Dataset: :func:`transcribe_dataset` maps a dataset of audio paths or audio bytes to one with
the transcripts, on every node of a Ray cluster.

Needs the ``ray`` extra (``pip install 'parakeet-runtime[ray]'``); nothing else in the package imports Ray.

>>> import ray                                                                   # doctest: +SKIP
>>> from parakeet_runtime.engine.ray_data import transcribe_dataset               # doctest: +SKIP
>>> paths = ray.data.from_items([{"path": "/data/a.wav"}, {"path": "/data/b.flac"}])  # doctest: +SKIP
>>> transcribe_dataset(paths, "parakeet-v2", concurrency=4).write_parquet("/data/out")  # doctest: +SKIP

Each actor of the pool loads one :class:`~parakeet_runtime.engine.Engine` (the weights once per actor) and
transcribes the rows of each batch concurrently through the engine's dynamic batcher. A row that cannot be
transcribed (a missing file, audio that does not decode, audio too long) gets its typed error in the ``error``
column and empty transcript columns; it never fails the job. An actor that dies (its process killed, its node
lost) is restarted and its batches retried (``max_restarts``, ``max_task_retries``), so a job that completes
has every row exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import ray
import ray.data
from ray.data import Dataset

from .engine import Engine
from .errors import OptionsError, ParakeetRuntimeError
from .model.devices import gpus_per_engine
from .options import BatchingOptions, ConfidenceOptions, LongFormOptions, SessionOptions
from .results import TimedText, Token, Transcript
from .serving.batch import BatchSummary, BatchTally
from .serving.inputs import BatchInput
from .serving.progress import Progress
from .serving.signals import interruptions_deferred

RESULT_COLUMNS = ("text", "words", "segments", "error", "duration", "tokens", "strategy", "warnings")
"""The columns :func:`transcribe_dataset` adds (replacing input columns of the same name)."""

_TIMED = pa.struct([
    ("text", pa.string()), ("start_offset", pa.int64()), ("end_offset", pa.int64()), ("start", pa.float64()),
    ("end", pa.float64()), ("confidence", pa.float64()), ("first_token", pa.int64()), ("end_token", pa.int64()),
])
_TOKEN = pa.struct([
    ("id", pa.int64()), ("text", pa.string()), ("piece", pa.string()), ("frame", pa.int64()),
    ("duration", pa.int64()), ("start_offset", pa.int64()), ("end_offset", pa.int64()), ("start", pa.float64()),
    ("end", pa.float64()), ("confidence", pa.float64()), ("log_prob", pa.float64()),
])
RESULT_SCHEMA = pa.schema([
    ("text", pa.string()),
    ("words", pa.list_(_TIMED)),
    ("segments", pa.list_(_TIMED)),
    ("error", pa.string()),
    ("duration", pa.float64()),
    ("tokens", pa.list_(_TOKEN)),
    ("strategy", pa.string()),
    ("warnings", pa.list_(pa.string())),
])
"""Types of the result columns: ``text`` and ``duration`` are null and the lists empty where ``error`` is set;
``error`` is null where the row was transcribed; ``strategy`` is the transcript's (``one_pass`` or
``chunked``), and ``warnings`` its :attr:`~parakeet_runtime.engine.Transcript.warnings` (empty for a clean file
and where ``error`` is set: a refused file's reason is its ``error``). Words, segments and tokens carry every
field of :class:`~parakeet_runtime.engine.TimedText` and :class:`~parakeet_runtime.engine.Token` (``confidence``
and ``log_prob`` null unless the engine computes confidence; ``first_token`` and ``end_token``, the tokens each
word and segment covers), so :func:`transcript_from_row` rebuilds the engine's exact transcript."""


@dataclass(frozen=True)
class EngineSpec:
    """What each actor loads: sent to the actors, so plain values only."""

    model: str | None
    """A model directory; ``None``: the bundled demo model (as installed on the actor's node)."""
    threads: int | None = None
    """``SessionOptions.threads`` (default: ONNX Runtime's, one per physical core of the node)."""
    max_batch_size: int = 16
    """``BatchingOptions.max_batch_size``."""
    confidence: ConfidenceOptions | None = None
    """``Engine.load(confidence=...)``."""
    session: SessionOptions | None = None
    """``Engine.load(session=...)`` (default: ``SessionOptions()``); ``threads``, when set, replaces its threads."""
    long_form: LongFormOptions | None = None
    """``Engine.load(long_form=...)`` (default: ``LongFormOptions()``)."""
    device: str | None = None
    """``Engine.load(device=...)``: ``"cpu"``, ``"cuda"`` or ``"tensorrt"`` (default: the default providers)."""

    def load(self) -> Engine:
        session = self.session or SessionOptions()
        if self.threads is not None:
            session = replace(session, threads=self.threads)
        return Engine.load(self.model, session=session, batching=BatchingOptions(max_batch_size=self.max_batch_size),
                           confidence=self.confidence, long_form=self.long_form, device=self.device)


class MissingColumnError(ParakeetRuntimeError, ValueError):
    """The dataset has no column of the name :func:`transcribe_dataset` was given (raised in the actors, so the
    job fails with it: no row could be transcribed)."""


def error_text(exc: Exception) -> str:
    """A row's ``error``: the error's type and message, e.g. ``AudioDecodeError: x.wav: ...``."""
    return f"{type(exc).__name__}: {exc}"


class Transcriber:
    """The callable class :func:`transcribe_dataset` gives ``map_batches``: one engine per actor, loaded in the
    constructor; each call transcribes one batch (a ``pyarrow.Table``)."""

    def __init__(self, spec: EngineSpec, column: str) -> None:
        self.engine = spec.load()
        self.column = column
        self.pool = ThreadPoolExecutor(max_workers=2 * spec.max_batch_size, thread_name_prefix="parakeet-ray")

    def _one(self, source: object) -> Transcript | Exception:
        if not isinstance(source, (str, bytes)):
            return TypeError(f"a {self.column!r} value must be a path (string) or audio bytes, not "
                             f"{type(source).__name__}")
        try:
            return self.engine.transcribe(Path(source) if isinstance(source, str) else source)
        except Exception as exc:  # one bad row is that row's error, never the job's
            return exc

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.column not in batch.column_names:
            raise MissingColumnError(f"the dataset has no column {self.column!r} to transcribe; its columns: "
                                     f"{', '.join(batch.column_names)} (pass column=...)")
        sources = batch.column(self.column).to_pylist()
        outcomes = list(self.pool.map(self._one, sources))
        results = result_columns(outcomes)
        table = batch.drop_columns([name for name in RESULT_COLUMNS if name in batch.column_names])
        for name in RESULT_COLUMNS:
            table = table.append_column(RESULT_SCHEMA.field(name), results[name])
        return table

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def _timed(item: TimedText) -> dict[str, Any]:
    return {"text": item.text, "start_offset": item.start_offset, "end_offset": item.end_offset,
            "start": item.start, "end": item.end, "confidence": item.confidence, "first_token": item.first_token,
            "end_token": item.end_token}


def _token(item: Token) -> dict[str, Any]:
    return {"id": item.id, "text": item.text, "piece": item.piece, "frame": item.frame, "duration": item.duration,
            "start_offset": item.start_offset, "end_offset": item.end_offset, "start": item.start,
            "end": item.end, "confidence": item.confidence, "log_prob": item.log_prob}


def result_columns(outcomes: Sequence[Transcript | Exception]) -> dict[str, pa.Array]:
    """The result columns (:data:`RESULT_SCHEMA`) of one batch: a transcript or an error per row."""
    rows: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS}
    for outcome in outcomes:
        if isinstance(outcome, Transcript):
            values: dict[str, Any] = {
                "text": outcome.text, "words": [_timed(w) for w in outcome.words],
                "segments": [_timed(s) for s in outcome.segments], "error": None, "duration": outcome.duration,
                "tokens": [_token(t) for t in outcome.tokens], "strategy": outcome.strategy,
                "warnings": list(outcome.warnings),
            }
        else:
            values = {"text": None, "words": [], "segments": [], "error": error_text(outcome), "duration": None,
                      "tokens": [], "strategy": None, "warnings": []}
        for name in RESULT_COLUMNS:
            rows[name].append(values[name])
    return {name: pa.array(rows[name], type=RESULT_SCHEMA.field(name).type) for name in RESULT_COLUMNS}


def transcript_from_row(row: dict[str, Any]) -> Transcript:
    """The :class:`~parakeet_runtime.engine.Transcript` a transcribed row holds (as the engine returned it).

    Raises:
        ValueError: the row has an ``error`` (it was not transcribed).
    """
    if row.get("error") is not None:
        raise ValueError(f"the row was not transcribed: {row['error']}")
    return Transcript(
        text=row["text"], duration=row["duration"],
        tokens=tuple(Token(**token) for token in row["tokens"]),
        words=tuple(TimedText(**word) for word in row["words"]),
        segments=tuple(TimedText(**segment) for segment in row["segments"]),
        strategy=row.get("strategy") or "one_pass",
        warnings=tuple(row.get("warnings") or ()),
    )


def transcribe_dataset(
    dataset: Dataset,
    model: str | os.PathLike[str] | None,
    *,
    column: str = "path",
    concurrency: int | tuple[int, int] = 1,
    batch_size: int = 16,
    num_cpus: float = 1.0,
    threads: int | None = None,
    confidence: ConfidenceOptions | None = None,
    max_restarts: int | None = None,
    max_task_retries: int | None = None,
    session: SessionOptions | None = None,
    long_form: LongFormOptions | None = None,
    device: str | None = None,
) -> Dataset:
    """Map ``dataset`` to one with the transcript of each row's ``column`` (lazily, as Ray Data does).

    Args:
        dataset: a Ray Dataset whose ``column`` holds audio file paths (strings, readable on every node) or
            encoded audio files (bytes, e.g. from ``ray.data.read_binary_files(..., include_paths=True)``,
            column ``"bytes"``).
        model: a model directory written by ``convert-model`` (a relative one is taken from the current
            directory when it exists there); ``None``: the bundled demo model.
        column: the input column.
        concurrency: actors in the pool (``ray.data.ActorPoolStrategy``): a number, or ``(min, max)`` for an
            autoscaling pool. Each actor loads the model once.
        batch_size: rows per ``map_batches`` batch, and the engine's ``max_batch_size``.
        num_cpus: CPUs each actor reserves.
        threads: ONNX Runtime intra-op threads per actor (default: ONNX Runtime's; ``num_cpus`` is a good value
            when several actors share a node).
        confidence: give words, segments and tokens NeMo's confidence scores.
        max_restarts: how often Ray restarts an actor that died (its process killed, its node lost); ``None``:
            Ray Data's default for actor pools, without limit.
        max_task_retries: how often a batch whose actor died is retried (on the restarted actor or another);
            ``None``: Ray Data's default for actor pools, without limit.
        session: each actor's ``SessionOptions`` (backend, precision, decoder weights; ``threads`` above, when
            given, replaces its threads).
        long_form: each actor's ``LongFormOptions`` (strategy, chunk length).
        device: each actor's ``Engine.load(device=...)``; ``"cuda"`` and ``"tensorrt"`` also reserve one GPU
            per actor (``map_batches(num_gpus=1)``), so Ray places the actors on nodes with a free GPU.

    Returns:
        The dataset with :data:`RESULT_COLUMNS` added (see :data:`RESULT_SCHEMA`); rows keep their other
        columns. A row that failed has ``error`` set (``"AudioDecodeError: ..."``) and is never dropped.
    """
    if batch_size < 1:
        raise OptionsError("transcribe_dataset", "batch_size", "at least 1", batch_size,
                           message=f"batch_size must be at least 1, got {batch_size}")
    if model is not None and not Path(model).is_absolute() and Path(model).exists():
        model = Path(model).resolve()
    spec = EngineSpec(model=None if model is None else os.fspath(model), threads=threads, max_batch_size=batch_size,
                      confidence=confidence, session=session, long_form=long_form, device=device)
    gpus = gpus_per_engine(device)  # an unknown device is refused here, before any actor starts
    limits = {"max_restarts": max_restarts, "max_task_retries": max_task_retries}
    retries: dict[str, Any] = {name: value for name, value in limits.items() if value is not None}  # default: -1
    if isinstance(concurrency, int):
        pool = ray.data.ActorPoolStrategy(size=concurrency)
    else:
        pool = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    return dataset.map_batches(
        Transcriber,
        fn_constructor_args=(spec, column),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=pool,
        num_cpus=num_cpus,
        num_gpus=gpus,
        **retries,
    )


def transcribe_inputs_on_ray(
    inputs: Sequence[BatchInput],
    model: str | os.PathLike[str] | None,
    *,
    on_result: Callable[[BatchInput, Transcript], None],
    skip: Callable[[BatchInput], bool],
    progress: Progress,
    concurrency: int | tuple[int, int],
    batch_size: int,
    threads: int | None = None,
    confidence: ConfidenceOptions | None = None,
    session: SessionOptions | None = None,
    long_form: LongFormOptions | None = None,
    device: str | None = None,
) -> BatchSummary:
    """``parakeet-runtime transcribe --ray``: the batch mode's :func:`~.serving.batch.transcribe_inputs` with the
    transcription done by :func:`transcribe_dataset` on a Ray cluster (already connected). Inputs are sent as
    absolute paths (every node must read them: shared storage); results come back to this process, which
    calls ``on_result`` (writes the outputs) for each as it arrives.

    Raises:
        ValueError: an input reads standard input (not supported on a cluster).
    """
    tally = BatchTally(progress)
    interrupted = False
    rows: list[dict[str, Any]] = []
    for item in inputs:
        if item.path is None:
            raise ValueError("--ray cannot read standard input ('-'): give files the cluster's nodes can read")
        if skip(item):
            tally.skip()
        else:
            rows.append({"index": item.index, "path": os.path.abspath(item.path)})
    by_index = {item.index: item for item in inputs}
    try:
        if rows:
            results = transcribe_dataset(ray.data.from_items(rows), model, concurrency=concurrency,
                                         batch_size=batch_size, threads=threads, confidence=confidence,
                                         session=session, long_form=long_form, device=device)
            for row in _rows(results):
                item = by_index[int(row["index"])]
                with interruptions_deferred():  # outputs written are outputs counted
                    try:
                        if row["error"] is not None:
                            raise _RowError(row["error"])
                        transcript = transcript_from_row(row)
                        on_result(item, transcript)
                    except (_RowError, OSError) as exc:
                        tally.fail(f"{item.name}: {exc}")
                        continue
                    tally.succeed(transcript)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    return tally.summary(interrupted)


def _rows(dataset: Dataset) -> Iterator[dict[str, Any]]:
    """The rows of ``dataset`` as plain Python values, as they are computed."""
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from cast(pa.Table, batch).to_pylist()


class _RowError(Exception):
    """A row the cluster could not transcribe (its ``error`` column)."""
