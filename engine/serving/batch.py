"""Batch transcription for the CLI: many inputs through the engine's dynamic batcher, outputs written
atomically, resumable, a failed input reported and skipped.

A small thread pool calls ``engine.transcribe`` on one input per thread: audio decoding and features run
in parallel in those threads, and the engine's batcher coalesces their requests into batches. The main
thread collects results as they finish and writes each input's outputs (temporary file, then
``os.replace``), so an interrupted run leaves only complete files behind; a later run skips every input
whose outputs all exist and redoes the rest.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..engine import Engine
from ..errors import EngineClosedError, ParakeetRuntimeError
from ..results import Transcript, TranscriptUpdate
from .formats import EXTENSIONS, VTT_HEADER, render, segment_cues, srt_cue, vtt_cue
from .inputs import BatchInput
from .progress import Progress
from .signals import interruptions_deferred

logger = logging.getLogger(__name__)

COMBINED_JSONL = "transcripts.jsonl"
"""The combined JSON-lines file ``--format jsonl`` writes in the output directory."""
WORKERS_PER_BATCH = 2
"""Pool threads per ``max_batch_size``: a full batch waits for its results while the next one is prepared."""
REDRAW_SECONDS = 0.5
"""How often the progress bar is redrawn while inputs are in progress (a long file reports chunk by chunk)."""
PARTIAL_FORMATS = ("text", "srt", "vtt")
"""Formats written as a long input's segments arrive (to a ``.partial`` file beside the output, replaced by
the complete output at the end); JSON is written whole, at the end."""


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did."""

    ok: int
    """Inputs transcribed."""
    failed: int
    """Inputs that could not be transcribed or written (each reported)."""
    skipped: int
    """Inputs whose complete outputs already existed."""
    audio_seconds: float
    """Audio transcribed in this run, in seconds."""
    wall_seconds: float
    """Time the run took."""
    interrupted: bool = False
    """The run was stopped (SIGINT) before every input was done."""

    def line(self) -> str:
        """One-line report, e.g. ``3 ok, 1 failed, 0 skipped; 14.5 s of audio in 2.1 s``."""
        text = (f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped; "
                f"{self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s")
        return text + (" (interrupted)" if self.interrupted else "")


class BatchTally:
    """The counts of a batch run as its results arrive (in one thread), shown on its progress display."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.started = time.monotonic()
        self.ok = self.failed = self.skipped = 0
        self.audio_seconds = 0.0

    def skip(self) -> None:
        self.skipped += 1
        self.progress.advance()

    def fail(self, message: str) -> None:
        self.failed += 1
        self.progress.write(f"parakeet-runtime: error: {message}")
        self.progress.advance(failed=True)

    def succeed(self, transcript: Transcript) -> None:
        self.ok += 1
        self.audio_seconds += transcript.duration
        self.progress.advance(audio_seconds=transcript.duration)

    def summary(self, interrupted: bool) -> BatchSummary:
        return BatchSummary(ok=self.ok, failed=self.failed, skipped=self.skipped, audio_seconds=self.audio_seconds,
                            wall_seconds=time.monotonic() - self.started, interrupted=interrupted)


@dataclass(frozen=True)
class OutputPlan:
    """Which files an input's transcript goes to."""

    directory: Path
    """``--output-dir``."""
    formats: tuple[str, ...]
    """Formats asked for; ``jsonl`` also writes each input's ``json`` (the combined file is built from them)."""
    file_formats: tuple[str, ...] = field(init=False)
    """Formats written per input."""

    def __post_init__(self) -> None:
        wanted = [fmt for fmt in self.formats if fmt != "jsonl"]
        if "jsonl" in self.formats and "json" not in wanted:
            wanted.append("json")
        object.__setattr__(self, "file_formats", tuple(dict.fromkeys(wanted)))

    def paths(self, item: BatchInput) -> dict[str, Path]:
        """``format -> output file``: the input's output name with the format's extension appended."""
        base = self.directory / Path(*item.output_name.parts)
        return {fmt: base.with_name(f"{base.name}.{EXTENSIONS[fmt]}") for fmt in self.file_formats}

    def complete(self, item: BatchInput) -> bool:
        """Every output of ``item`` exists (written atomically, so an existing file is whole) and its JSON
        parses. Standard input is never complete: its content is not known before it is read."""
        if item.path is None:
            return False
        for fmt, path in self.paths(item).items():
            if not path.is_file():
                return False
            if fmt == "json" and _read_json(path) is None:
                return False
        return True


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("text"), str) else None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``: readers
    (and a resumed run) see the old file or the whole new one, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a short name: the output's own name may already be near the file system's 255-byte limit
    temporary = path.with_name(f".{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_outputs(plan: OutputPlan, item: BatchInput, transcript: Transcript) -> None:
    """Write every per-input file of ``item`` (the JSON last: it marks the input done for ``jsonl``)."""
    paths = plan.paths(item)
    for fmt in sorted(paths, key=lambda f: f == "json"):
        write_atomic(paths[fmt], render([(item.name, transcript)], fmt))


class PartialWriter:
    """Appends a long input's final segments, as :meth:`Engine.transcribe_iter` delivers them, to a
    ``.partial`` file beside each text, SRT and VTT output; the complete output replaces it at the end. Each
    input's updates come from one thread."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan

    def partial_path(self, path: Path) -> Path:
        return path.with_name(f"{path.name}.partial")

    def update(self, item: BatchInput, update: TranscriptUpdate, state: dict[str, object]) -> None:
        """Append ``update``'s segments (split into cues) for ``item``; ``state`` is the input's own dict."""
        if update.transcript is not None:
            return  # the whole transcript: the complete outputs are written next
        words = state.setdefault("words", [])
        assert isinstance(words, list)
        words += update.words
        if not update.segments or state.get("no_partials"):
            return
        try:
            self._append(item, update, state, words)
        except OSError as exc:  # partial files are a convenience: never the reason an input fails
            state["no_partials"] = True
            logger.warning("%s: no partial outputs (%s); the complete ones follow at the end", item.name,
                           exc.strerror or exc)

    def _append(self, item: BatchInput, update: TranscriptUpdate, state: dict[str, object], words: list[Any]) -> None:
        cue_number = int(str(state.get("cues", 0)))
        found, used = segment_cues(update.segments, words, int(str(state.get("words_used", 0))))
        for fmt, path in self.plan.paths(item).items():
            if fmt not in PARTIAL_FORMATS:
                continue
            partial = self.partial_path(path)
            partial.parent.mkdir(parents=True, exist_ok=True)
            fresh = not partial.exists() or not state.get("started")
            with open(partial, "w" if fresh else "a", encoding="utf-8") as handle:
                if fresh and fmt == "vtt":
                    handle.write(VTT_HEADER)
                if fmt == "text":
                    handle.writelines(segment.text + "\n" for segment in update.segments)
                    continue
                for number, cue in enumerate(found, start=cue_number + 1):
                    block = srt_cue(number, cue) if fmt == "srt" else vtt_cue(cue)
                    handle.write(("" if number == 1 else "\n") + block)
        state["started"] = True
        state["cues"] = cue_number + len(found)
        state["words_used"] = used

    def discard(self, item: BatchInput) -> None:
        """Remove ``item``'s partial files (after its complete outputs are written, or after a failure)."""
        for path in self.plan.paths(item).values():
            with contextlib.suppress(OSError):  # none there (or a name too long to have one): nothing to remove
                os.unlink(self.partial_path(path))


def write_combined(plan: OutputPlan, inputs: Sequence[BatchInput]) -> int:
    """Write ``transcripts.jsonl``: one line per input whose JSON output exists, in input order, built from
    those files (so inputs skipped on a resumed run are in it too). Returns the number of lines."""
    lines = []
    for item in inputs:
        value = _read_json(plan.paths(item)["json"])
        if value is not None:
            lines.append(json.dumps(value, ensure_ascii=False) + "\n")
    write_atomic(plan.directory / COMBINED_JSONL, "".join(lines))
    return len(lines)


def _error_text(item: BatchInput, exc: BaseException) -> str:
    if isinstance(exc, ParakeetRuntimeError):
        return str(exc)
    return f"{item.name}: {type(exc).__name__}: {exc}"


def transcribe_inputs(
    engine: Engine,
    inputs: Sequence[BatchInput],
    *,
    on_result: Callable[[BatchInput, Transcript], None],
    skip: Callable[[BatchInput], bool] = lambda item: False,
    progress: Progress,
    stdin: BinaryIO | None = None,
    workers: int | None = None,
    on_update: Callable[[BatchInput, TranscriptUpdate, dict[str, object]], None] | None = None,
    on_failure: Callable[[BatchInput], None] | None = None,
) -> BatchSummary:
    """Transcribe ``inputs`` from a thread pool through ``engine`` (load it with batching on), calling
    ``on_result`` in this thread for each, in the order they finish.

    Each input runs through :meth:`Engine.transcribe_iter`: a long input reports its progress to ``progress``
    chunk by chunk and, with ``on_update``, hands each update to it (in its worker thread, with a dict that
    is the input's own); ``on_failure`` is called, in this thread, for each input that failed.

    An input for which ``skip`` is true is counted as skipped. A failed input (reading, decoding,
    ``on_result`` raising ``OSError``) is reported through ``progress.write`` and counted. On
    ``KeyboardInterrupt`` the inputs not yet finished are dropped, the engine is closed (the batch in
    progress finishes) and the summary says ``interrupted``.
    """
    tally = BatchTally(progress)
    workers = workers or WORKERS_PER_BATCH * engine.batching.max_batch_size
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=WORKER_PREFIX)
    pending: dict[Future[Transcript], BatchInput] = {}
    interrupted = False

    def sources() -> Iterator[tuple[BatchInput, Path | bytes]]:
        for item in inputs:
            if skip(item):
                tally.skip()
            elif item.path is not None:
                yield item, item.path
            elif stdin is None:  # the process has no standard input (closed): this input fails, not the run
                tally.fail(f"{item.name}: cannot read standard input: the process has none (it is closed)")
            else:
                yield item, stdin.read()

    def transcribe(item: BatchInput, source: Path | bytes) -> Transcript:
        state: dict[str, object] = {}
        try:
            for update in engine.transcribe_iter(
                    source, progress=lambda done, total: progress.partial(item.index, done, total)):
                if on_update is not None:
                    on_update(item, update, state)
                if update.transcript is not None:
                    return update.transcript
        finally:
            progress.finish(item.index)
        raise RuntimeError("transcribe_iter ended without a transcript")

    try:
        queued = sources()
        while True:
            for item, source in queued:
                pending[pool.submit(transcribe, item, source)] = item
                if len(pending) >= 2 * workers:
                    break
            if not pending:
                break
            done, _ = concurrent.futures.wait(pending, timeout=REDRAW_SECONDS,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            if not done:
                progress.draw()
                continue
            for future in done:
                item = pending.pop(future)
                with interruptions_deferred():  # outputs written are outputs counted
                    try:
                        transcript = future.result()
                        on_result(item, transcript)
                    except Exception as exc:  # one bad input must not stop the batch
                        if isinstance(exc, EngineClosedError):
                            raise
                        tally.fail(_error_text(item, exc))
                        if on_failure is not None:  # e.g. remove what its updates wrote
                            on_failure(item)
                        continue
                    tally.succeed(transcript)
    except KeyboardInterrupt:
        interrupted = True
        for future in pending:
            future.cancel()
        engine.close()
    finally:
        # Interrupted, the workers still reading are not waited for: one blocked opening a FIFO nothing writes to
        # would hold the interruption forever (the command then ends without them: main's abandoned_workers).
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        progress.close()
    return tally.summary(interrupted)


WORKER_PREFIX = "parakeet-cli"
"""The name prefix of the batch's worker threads."""


def abandoned_workers(grace_s: float = 2.0) -> bool:
    """Whether batch workers are still running ``grace_s`` seconds after an interrupted batch (blocked in a read
    that will not return): the process must then end without the interpreter's wait for them."""
    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread.name.startswith(WORKER_PREFIX):
            thread.join(max(0.0, deadline - time.monotonic()))
    return any(t.name.startswith(WORKER_PREFIX) and t.is_alive() for t in threading.enumerate())
