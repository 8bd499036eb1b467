"""Concurrency: threads and asyncio tasks through the dynamic batcher get exactly their own results,
identical to one-at-a-time decoding; bad inputs fail alone; shutdown never hangs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import (
    AudioDecodeError,
    AudioFileNotFoundError,
    BatchingOptions,
    Engine,
    EngineClosedError,
    EngineOverloadedError,
    Transcript,
    sample_audio_path,
)
from parakeet_runtime.engine.requests.batcher import DynamicBatcher
from tests.fixtures.build import MODEL_NAMES

UNBATCHED = BatchingOptions(enabled=False)


@pytest.fixture(scope="module")
def workload(clips: dict[str, Path]) -> list[Any]:
    """Distinct inputs of many lengths: each fixture clip, and arrays cut from them at odd lengths, so that
    a result delivered to the wrong caller cannot go unnoticed."""
    inputs: list[Any] = list(clips.values())
    rng = np.random.default_rng(7)
    for path in clips.values():
        samples, rate = soundfile.read(path, dtype="float32")
        for _ in range(3):
            n = int(rng.integers(min(len(samples), 3000), min(len(samples), 16000 * 12) + 1))
            start = int(rng.integers(0, len(samples) - n + 1))
            inputs.append((samples[start : start + n].copy(), rate))
    return inputs


def _bad_inputs(tmp_path: Path) -> list[tuple[Any, type[Exception]]]:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEjunk" * 10)
    return [
        (garbage, AudioDecodeError),
        (tmp_path / "missing.flac", AudioFileNotFoundError),
        (np.array([np.nan, 0.0], dtype=np.float32), AudioDecodeError),
        (b"\x00\x01\x02", AudioDecodeError),
    ]


def _serial(engine: Engine, inputs: Sequence[Any]) -> list[Transcript]:
    return [engine.transcribe(x) for x in inputs]


@pytest.mark.parametrize("model_name", ["tdt_a", "tdt_b_skip"])
def test_33_threads_mixed_lengths_and_bad_inputs(model_name: str, converted: dict[str, Path], workload: list[Any],
                                                 tmp_path: Path) -> None:
    with Engine.load(converted[model_name], batching=UNBATCHED) as reference_engine:
        expected = _serial(reference_engine, workload)
    bad = _bad_inputs(tmp_path)
    threads, per_thread = 33, 10
    plan: list[list[int]] = []  # per thread: indices into workload, or -1 - k for bad input k
    rng = np.random.default_rng(3)
    for t in range(threads):
        row = [int(i) for i in rng.integers(0, len(workload), per_thread)]
        if t % 8 == 0:
            row[int(rng.integers(0, per_thread))] = -1 - (t // 8) % len(bad)
        plan.append(row)
    outcomes: list[list[Any]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    with Engine.load(converted[model_name], batching=BatchingOptions(max_batch_size=8, max_wait_ms=5)) as engine:

        def work(t: int) -> None:
            barrier.wait()
            for index in plan[t]:
                try:
                    item = workload[index] if index >= 0 else bad[-1 - index][0]
                    outcomes[t].append(engine.transcribe(item))
                except Exception as exc:  # checked below
                    outcomes[t].append(exc)

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=600)
        assert not any(thread.is_alive() for thread in pool)

    good = 0
    for t in range(threads):
        assert len(outcomes[t]) == per_thread
        for index, outcome in zip(plan[t], outcomes[t], strict=True):
            if index >= 0:
                assert outcome == expected[index], f"thread {t} request {index}: not its serial result"
                good += 1
            else:
                assert isinstance(outcome, bad[-1 - index][1]), outcome
    assert good >= 300


def test_async_tasks_get_their_own_results(converted: dict[str, Path], workload: list[Any], tmp_path: Path) -> None:
    with Engine.load(converted["tdt_a"], batching=UNBATCHED) as reference_engine:
        expected = _serial(reference_engine, workload)
    bad = _bad_inputs(tmp_path)

    async def main(engine: Engine) -> list[Any]:
        async def client(c: int) -> list[Any]:
            out: list[Any] = []
            for r in range(10):
                index = (c * 7 + r * 3) % len(workload)
                item = workload[index] if (c + r) % 29 else bad[c % len(bad)][0]
                try:
                    out.append((index, item is workload[index], await engine.transcribe_async(item)))
                except Exception as exc:
                    out.append((index, item is workload[index], exc))
            return out

        return list(await asyncio.gather(*(client(c) for c in range(33))))

    for options in (BatchingOptions(max_batch_size=8), UNBATCHED):
        with Engine.load(converted["tdt_a"], batching=options) as engine:
            results = asyncio.run(main(engine))
        count = 0
        for client_results in results:
            for index, was_good, outcome in client_results:
                if was_good:
                    assert outcome == expected[index]
                    count += 1
                else:
                    assert isinstance(outcome, AudioDecodeError)
        assert count >= 300
        with Engine.load(converted["tdt_a"], batching=options) as engine:
            assert asyncio.run(engine.transcribe_async(workload[:5])) == expected[:5]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_batched_list_equals_one_at_a_time(model_name: str, converted: dict[str, Path], workload: list[Any]) -> None:
    """The padded, length-bucketed encoder and the batched decoder, on every fixture variant."""
    with Engine.load(converted[model_name], batching=UNBATCHED) as engine:
        expected = _serial(engine, workload)
        assert engine.transcribe(workload) == expected
    small = BatchingOptions(max_batch_size=3, max_batch_seconds=40.0)
    with Engine.load(converted[model_name], batching=small) as engine:
        assert engine.transcribe(workload) == expected


def test_ten_threads_barrier_unbatched_and_batched() -> None:
    path = sample_audio_path()
    for options in (UNBATCHED, BatchingOptions()):
        with Engine.load(batching=options) as engine:
            serial = engine.transcribe(path)
            barrier = threading.Barrier(10)

            def call(engine: Engine = engine, barrier: threading.Barrier = barrier) -> Transcript:
                barrier.wait()
                return engine.transcribe(path)

            with ThreadPoolExecutor(10) as pool:
                results = [f.result(timeout=120) for f in [pool.submit(call) for _ in range(10)]]
            assert results == [serial] * 10


# --- the batcher on its own ----------------------------------------------------------------------------


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_a_failing_request_does_not_fail_its_batch_mates() -> None:
    calls: list[int] = []
    submitted = threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        calls.append(len(batch))
        assert submitted.wait(10)  # the first batch holds the worker until every request is queued
        if 13 in batch:
            raise ValueError("unlucky")
        return [x * 2 for x in batch]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, BatchingOptions(max_batch_size=8, max_wait_ms=20))
    try:
        futures = [batcher.submit(x) for x in range(20)]
        submitted.set()
        for x, future in enumerate(futures):
            if x == 13:
                with pytest.raises(ValueError, match="unlucky"):
                    future.result(timeout=10)
            else:
                assert future.result(timeout=10) == 2 * x
        assert max(calls) > 1  # requests really were batched
    finally:
        batcher.close()


def test_close_fails_waiting_requests_and_never_hangs() -> None:
    started = threading.Event()
    release = threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        started.set()
        release.wait(10)
        return list(batch)

    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, BatchingOptions(max_batch_size=1, max_wait_ms=0))
    first = batcher.submit(1)
    assert started.wait(10)
    waiting = [batcher.submit(i) for i in range(2, 6)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    _wait_until(lambda: batcher.closed)  # closed while the first batch still runs
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert first.result(timeout=5) == 1  # the batch in progress finishes
    for future in waiting:
        with pytest.raises(EngineClosedError):
            future.result(timeout=5)
    with pytest.raises(EngineClosedError):
        batcher.submit(9)
    assert not batcher._worker.is_alive()


def test_cancelled_requests_are_dropped() -> None:
    seen: list[int] = []
    gate = threading.Event()
    started = threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        started.set()
        gate.wait(10)
        seen.extend(batch)
        return list(batch)

    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, BatchingOptions(max_batch_size=1, max_wait_ms=0))
    try:
        first = batcher.submit(0)
        assert started.wait(10)  # taken by the worker
        doomed: Future[int] = batcher.submit(1)
        assert doomed.cancel()
        kept = batcher.submit(2)
        gate.set()
        assert first.result(timeout=5) == 0 and kept.result(timeout=5) == 2
        assert seen == [0, 2]
    finally:
        batcher.close()


def test_bounded_queue_reports_overload() -> None:
    gate = threading.Event()
    started = threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        started.set()
        gate.wait(10)
        return list(batch)

    options = BatchingOptions(max_batch_size=1, max_wait_ms=0, max_queue=2)
    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, options)
    try:
        running = batcher.submit(0)
        assert started.wait(10)  # taken by the worker: no longer waiting
        queued = [batcher.submit(1), batcher.submit(2)]
        with pytest.raises(EngineOverloadedError):
            batcher.submit(3)
        with pytest.raises(EngineOverloadedError):  # a list's worth is admitted whole or not at all
            batcher.submit_many([3, 4])
        gate.set()
        assert running.result(timeout=5) == 0
        assert [f.result(timeout=5) for f in queued] == [1, 2]
    finally:
        batcher.close()


def test_close_with_drain_finishes_waiting_requests() -> None:
    gate = threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        gate.wait(10)
        return [x + 100 for x in batch]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, BatchingOptions(max_batch_size=2, max_wait_ms=0))
    futures = [batcher.submit(i) for i in range(7)]
    closer = threading.Thread(target=batcher.close, kwargs={"drain": True})
    closer.start()
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert [f.result(timeout=5) for f in futures] == [i + 100 for i in range(7)]


# --- findings of a concurrency probe (2026-12-02) -------------------------------------------------------------


def test_a_close_that_times_out_still_stops_the_worker_after_its_batch() -> None:
    """``close(timeout)`` shorter than the batch in progress removed the worker's stop marker with the waiting
    requests: the worker then waited forever, holding the model (every engine dropped without ``close()`` is
    closed with a timeout of 0: 60 of them held 60 threads and 1.8 GB)."""
    started, release = threading.Event(), threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        started.set()
        release.wait(10)
        return list(batch)

    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, BatchingOptions(max_batch_size=1, max_wait_ms=0))
    first, waiting = batcher.submit(1), None
    assert started.wait(10)
    waiting = batcher.submit(2)
    batcher.close(timeout=0.0)
    with pytest.raises(EngineClosedError):
        waiting.result(timeout=5)
    release.set()
    assert first.result(timeout=5) == 1
    batcher._worker.join(5)
    assert not batcher._worker.is_alive()


def test_an_engine_dropped_without_close_releases_its_worker() -> None:
    import gc

    engine = Engine.load()
    engine.transcribe(sample_audio_path())
    worker = engine.runner._worker  # type: ignore[attr-defined]
    del engine
    gc.collect()
    worker.join(10)
    assert not worker.is_alive()


def _transcribe_in_child(engine: Engine, results: Any) -> None:
    try:
        engine.transcribe(sample_audio_path())
        results.put("ok")
    except BaseException as exc:  # reported to the parent, whatever it is
        results.put(type(exc).__name__)


def test_an_engine_used_after_a_fork_raises_at_once() -> None:
    """The batching worker thread does not survive a fork: a child's request waited forever for it (a
    ``multiprocessing`` pool with the default start method on Linux, a pre-forking server)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with Engine.load() as engine:
        engine.transcribe(sample_audio_path())
        results = context.Queue()
        child = context.Process(target=_transcribe_in_child, args=(engine, results))
        child.start()
        child.join(30)
        alive = child.is_alive()
        if alive:
            child.kill()
        assert not alive, "the child hung"
        assert results.get(timeout=5) == "EngineForkedError"
        assert engine.transcribe(sample_audio_path()).text  # the parent's engine still serves


@pytest.mark.parametrize("max_queue", [1, 4, 31])
def test_an_idle_engine_takes_a_list_longer_than_max_queue(max_queue: int) -> None:
    """A list was submitted in chunks of ``max_batch_size`` (16), two at once, each admitted whole or not at all:
    every list of more than ``max_queue`` items failed with EngineOverloadedError on an idle engine (``max_queue``
    below 32)."""
    clip, _ = soundfile.read(sample_audio_path(), dtype="float32")
    items = [clip[: 8000 + 977 * i] for i in range(40)]
    with Engine.load(batching=BatchingOptions(max_queue=max_queue)) as engine:
        listed = engine.transcribe(items)
        assert listed == [engine.transcribe(item) for item in items]
        assert asyncio.run(engine.transcribe_async(items)) == listed


def test_without_batching_a_failing_request_does_not_fail_the_rest_of_its_list_chunk() -> None:
    """The inline runner (batching off) gave a failed chunk's error to every request of the chunk; it retries
    them one by one, as the batcher does."""
    from parakeet_runtime.engine.requests.runner import InlineRunner

    def run(batch: Sequence[int]) -> list[int]:
        if 13 in batch:
            raise ValueError("unlucky")
        return [x * 2 for x in batch]

    runner: InlineRunner[int, int] = InlineRunner(run, BatchingOptions(enabled=False))
    futures = runner.submit_many(list(range(10, 17)))
    with pytest.raises(ValueError, match="unlucky"):
        futures[3].result(timeout=0)
    assert [f.result(timeout=0) for i, f in enumerate(futures) if i != 3] == [20, 22, 24, 28, 30, 32]


# --- findings of a request-lifecycle probe (2026-12) ----------------------------------------------------------


def _held_batcher(max_queue: int) -> tuple[DynamicBatcher[int, int], threading.Event, threading.Event]:
    """A batcher of one request per batch whose worker, on each batch, sets ``started`` and waits for ``release``
    (so a test can fill the queue behind a running request)."""
    started, release = threading.Event(), threading.Event()

    def run(batch: Sequence[int]) -> list[int]:
        started.set()
        assert release.wait(10)
        return list(batch)

    options = BatchingOptions(max_batch_size=1, max_wait_ms=0, max_queue=max_queue)
    return DynamicBatcher(run, options), started, release


def test_the_rest_of_an_admitted_request_waits_for_room_instead_of_failing() -> None:
    """``max_queue`` refuses new requests; the later pieces of a request it already took (a list's later chunks, a
    long input's later chunk groups: ``continuing=True``) wait for room instead, and new requests are refused
    while they wait, so that steady load cannot starve them."""
    batcher, started, release = _held_batcher(max_queue=2)
    pool = ThreadPoolExecutor(1)
    try:
        running = batcher.submit(0)
        assert started.wait(10)
        queued = batcher.submit(1)
        rest = pool.submit(batcher.submit_many, [2, 3], continuing=True)  # 1 + 2 > 2: waits
        _wait_until(lambda: batcher._continuing == 2)
        assert not rest.done()
        with pytest.raises(EngineOverloadedError):  # would fit the queue, but the continuation goes first
            batcher.submit(4)
        release.set()
        continued = rest.result(timeout=10)
        assert [f.result(timeout=10) for f in (running, queued, *continued)] == [0, 1, 2, 3]
        assert batcher._continuing == 0 and batcher.submit(5).result(timeout=10) == 5
    finally:
        release.set()
        batcher.close()
        pool.shutdown()


def test_close_wakes_a_continuation_waiting_for_room() -> None:
    batcher, started, release = _held_batcher(max_queue=1)
    pool = ThreadPoolExecutor(1)
    try:
        batcher.submit(0)
        assert started.wait(10)
        batcher.submit(1)
        rest = pool.submit(batcher.submit_many, [2], continuing=True)
        _wait_until(lambda: batcher._continuing == 1)
        batcher.close(timeout=0)
        with pytest.raises(EngineClosedError):
            rest.result(timeout=10)
    finally:
        release.set()
        batcher.close()
        pool.shutdown()


@pytest.mark.parametrize("batching", [BatchingOptions(max_batch_size=1, max_wait_ms=0, max_queue=1),
                                      BatchingOptions(enabled=False, max_queue=1)], ids=["batched", "unbatched"])
def test_a_long_input_under_way_is_not_refused_when_the_queue_fills(batching: BatchingOptions,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``transcribe_iter`` on a long input handed out its first updates, then failed with EngineOverloadedError
    when other requests had filled ``max_queue`` between its chunk groups (a long file under steady load could
    fail again on every retry)."""
    from parakeet_runtime.engine import LongFormOptions
    from parakeet_runtime.engine.model.onnx_model import OnnxTdtModel

    clip, rate = soundfile.read(sample_audio_path(), dtype="float32")
    long_audio = np.concatenate([clip, clip]).astype(np.float32)
    chunked = LongFormOptions(strategy="chunked", chunk_seconds=1, left_context_seconds=0.5,
                              right_context_seconds=0.24)
    hold, entered, release = threading.Event(), threading.Event(), threading.Event()
    original = OnnxTdtModel.encode

    def gated(self: OnnxTdtModel, *args: Any, **kwargs: Any) -> Any:
        if hold.is_set() and threading.current_thread().name != "long":
            entered.set()
            assert release.wait(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OnnxTdtModel, "encode", gated)
    pool = ThreadPoolExecutor(3, thread_name_prefix="other")
    long_thread = ThreadPoolExecutor(1, thread_name_prefix="long")
    with Engine.load(batching=batching, long_form=chunked) as engine:
        whole = engine.transcribe(long_audio)
        assert whole.strategy == "chunked"
        try:
            updates = long_thread.submit(engine.transcribe_iter, long_audio).result(timeout=30)
            first = long_thread.submit(next, updates).result(timeout=30)
            assert first.transcript is None  # more chunk groups to come
            hold.set()
            others = [pool.submit(engine.transcribe, clip[:rate])]  # runs, held in its encoder run
            assert entered.wait(30)
            if batching.enabled:
                others.append(pool.submit(engine.transcribe, clip[: rate * 2]))  # waits in the queue: it is full
                _wait_until(lambda: engine.runner._pending == 1)  # type: ignore[attr-defined]
            rest = long_thread.submit(list, updates)
            time.sleep(0.2)
            release.set()
            updates_after = rest.result(timeout=30)
            assert updates_after[-1].transcript == whole
            assert [o.result(timeout=30) for o in others] == [engine.transcribe(clip[:rate]),
                                                               engine.transcribe(clip[: rate * 2])][: len(others)]
        finally:
            release.set()
            pool.shutdown()
            long_thread.shutdown()


class _EncoderGate:
    """Patches ``OnnxTdtModel.encode`` for a test: after ``holding`` is set, the next encoder run (and only it) sets
    ``entered`` and waits for ``released``, holding the worker busy while the test arranges the queue; ``runs``
    counts the encoder runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from parakeet_runtime.engine.model.onnx_model import OnnxTdtModel

        self.holding, self.entered, self.released = threading.Event(), threading.Event(), threading.Event()
        self.runs = 0
        original = OnnxTdtModel.encode

        def gated(model: OnnxTdtModel, *args: Any, **kwargs: Any) -> Any:
            self.runs += 1
            if self.holding.is_set():
                self.holding.clear()
                self.entered.set()
                assert self.released.wait(30)
            return original(model, *args, **kwargs)

        monkeypatch.setattr(OnnxTdtModel, "encode", gated)


def test_a_list_under_way_is_not_refused_when_the_queue_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list is queued a chunk at a time; a later chunk was refused with EngineOverloadedError (the earlier
    chunks' work thrown away) when other requests had filled ``max_queue`` meanwhile."""
    clip, rate = soundfile.read(sample_audio_path(), dtype="float32")
    items = [clip[: rate + 400 * i] for i in range(3)]
    gate = _EncoderGate(monkeypatch)
    hold, entered, release = gate.holding, gate.entered, gate.released
    pool = ThreadPoolExecutor(2)
    others: list[Future[Transcript]] = []
    # max_queue=1: the list goes one item (one chunk) at a time
    with Engine.load(batching=BatchingOptions(max_batch_size=1, max_wait_ms=0, max_queue=1)) as engine:
        expected = [engine.transcribe(item) for item in items]
        alone = [engine.transcribe(clip[:rate]), engine.transcribe(clip[: rate * 2])]
        runner: Any = engine.runner
        real_submit = runner.submit_many
        calls: list[int] = []

        def submit(requests: Any, **kwargs: Any) -> Any:
            calls.append(len(requests))
            if len(calls) == 2:  # the list's second chunk: other requests hold the worker and fill the queue first
                hold.set()
                others.append(pool.submit(engine.transcribe, clip[:rate]))
                assert entered.wait(30)
                others.append(pool.submit(engine.transcribe, clip[: rate * 2]))
                _wait_until(lambda: runner._pending == 1)
                threading.Timer(0.2, release.set).start()
            return real_submit(requests, **kwargs)

        monkeypatch.setattr(runner, "submit_many", submit)
        try:
            assert engine.transcribe(items) == expected
            assert [o.result(timeout=30) for o in others] == alone
        finally:
            release.set()
            pool.shutdown()


def test_async_requests_cancelled_while_waiting_to_be_prepared_decode_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks cancelled while their executor thread waited for one of ``max_concurrent_prepare``'s slots still
    decoded their audio and computed features, one after another in the slot (holding it from live requests),
    before they saw that their caller had left."""
    clip, rate = soundfile.read(sample_audio_path(), dtype="float32")
    prepared: list[int] = []
    first = threading.Event()
    original = Engine.prepare

    def slow(self: Engine, *args: Any, **kwargs: Any) -> Any:
        prepared.append(1)
        first.set()
        time.sleep(0.2)
        return original(self, *args, **kwargs)

    with Engine.load(batching=BatchingOptions(max_concurrent_prepare=1)) as engine:
        expected = engine.transcribe(clip[:rate])
        monkeypatch.setattr(Engine, "prepare", slow)

        async def main() -> Transcript:
            loop = asyncio.get_running_loop()
            tasks = [asyncio.ensure_future(engine.transcribe_async(clip[:rate])) for _ in range(4)]
            assert await loop.run_in_executor(None, first.wait, 10)  # one holds the slot, three wait for it
            for task in tasks:
                task.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
            live: Transcript = await asyncio.wait_for(engine.transcribe_async(clip[:rate]), 10)
            return live

        assert asyncio.run(main()) == expected
        assert len(prepared) == 2, prepared  # the one under way when they were cancelled, and the live one


def test_a_list_chunk_submitted_after_its_async_caller_left_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An async list's chunk is submitted from an executor thread (where it may wait for room under
    ``max_queue``); when the task was cancelled meanwhile, the chunk was queued all the same, outside the futures
    the task cancels, and ran for nobody."""
    clip, rate = soundfile.read(sample_audio_path(), dtype="float32")
    gate = _EncoderGate(monkeypatch)
    hold, entered, release = gate.holding, gate.entered, gate.released
    pool = ThreadPoolExecutor(2)
    with Engine.load(batching=BatchingOptions(max_batch_size=1, max_wait_ms=0, max_queue=1)) as engine:
        runner: Any = engine.runner
        real_submit = runner.submit_many
        calls: list[int] = []
        late: list[Future[Any]] = []
        waiting = threading.Event()

        def submit(requests: Any, **kwargs: Any) -> Any:
            calls.append(len(requests))
            if len(calls) != 2:
                return real_submit(requests, **kwargs)
            hold.set()  # the list's second chunk: another request holds the worker, a third fills the queue
            pool.submit(engine.transcribe, clip[:rate])
            assert entered.wait(30)
            pool.submit(engine.transcribe, clip[: rate * 2])
            _wait_until(lambda: runner._pending == 1)
            waiting.set()  # the task is cancelled now, while this waits for room
            late.extend(real_submit(requests, **kwargs))
            return late

        monkeypatch.setattr(runner, "submit_many", submit)

        async def main() -> None:
            task = asyncio.ensure_future(engine.transcribe_async([clip[:rate], clip[: rate + 800]]))
            assert await asyncio.get_running_loop().run_in_executor(None, waiting.wait, 10)
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
            release.set()

        try:
            asyncio.run(main())
            _wait_until(lambda: runner._pending == 0)
            assert len(late) == 1 and late[0].cancelled()
        finally:
            release.set()
            pool.shutdown()


@pytest.mark.parametrize("as_list", [False, True])
def test_a_request_queued_as_its_async_caller_is_cancelled_is_dropped(monkeypatch: pytest.MonkeyPatch,
                                                                      as_list: bool) -> None:
    """Found in review: the executor thread queued the request and returned its future, but the event loop was busy
    until the task was cancelled, so the future never reached the task: nothing cancelled it, and the worker ran
    it for nobody. What a thread queues is now handed to the task's :class:`Abandonment` before it returns."""
    clip, rate = soundfile.read(sample_audio_path(), dtype="float32")
    gate = _EncoderGate(monkeypatch)
    pool = ThreadPoolExecutor(1)
    try:
        with Engine.load(batching=BatchingOptions(max_batch_size=1, max_wait_ms=0)) as engine:
            runner: Any = engine.runner
            real_submit = runner.submit_many
            submitting, loop_blocked = threading.Event(), threading.Event()
            queued: list[Future[Any]] = []

            def submit(requests: Any, **kwargs: Any) -> Any:
                submitting.set()
                futures = real_submit(requests, **kwargs)
                queued.extend(futures)
                assert loop_blocked.wait(10)  # returns while the event loop cannot hand the result to the task
                return futures

            gate.holding.set()
            busy = pool.submit(engine.transcribe, clip[:rate])  # holds the worker: the next request waits in line
            assert gate.entered.wait(30)
            monkeypatch.setattr(runner, "submit_many", submit)

            async def main() -> None:
                task = asyncio.ensure_future(engine.transcribe_async([clip[:rate]] if as_list else clip[:rate]))
                while not submitting.is_set():
                    await asyncio.sleep(0.001)
                loop_blocked.set()  # from here to the cancel the loop runs nothing: the thread queues and returns
                _wait_until(lambda: bool(queued))
                time.sleep(0.05)
                task.cancel()
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)

            asyncio.run(main())
            assert len(queued) == 1 and queued[0].cancelled()
            gate.released.set()
            assert busy.result(30).text
            _wait_until(lambda: runner._pending == 0)
            assert gate.runs == 1  # the request that held the worker; the cancelled one never ran
    finally:
        gate.released.set()
        pool.shutdown()


def test_a_wait_interrupted_by_ctrl_c_drops_the_queued_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while ``transcribe`` (or ``transcribe_iter``) waits for the worker left the request queued: it ran
    later, for nobody, taking the worker from live requests. The interrupted wait now cancels it."""
    import signal

    clip, rate = soundfile.read(sample_audio_path(), dtype="float32")
    gate = _EncoderGate(monkeypatch)
    entered, release = gate.entered, gate.released

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    pool = ThreadPoolExecutor(1)
    try:
        with Engine.load(batching=BatchingOptions(max_batch_size=1, max_wait_ms=0)) as engine:
            gate.holding.set()
            busy = pool.submit(engine.transcribe, clip[:rate])  # holds the worker
            assert entered.wait(30)
            for call in (lambda: engine.transcribe(clip[: rate * 2]), lambda: next(engine.transcribe_iter(clip))):
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                with pytest.raises(KeyboardInterrupt):
                    call()
            release.set()
            busy.result(30)
            live = engine.transcribe(clip[:rate])
            assert live.text and gate.runs == 2, gate.runs  # the busy request and the live one; nothing else ran
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.set()
        pool.shutdown()
