"""One request path: single and list calls, sync and async, all run their graphs on the runner, and
``close()`` closes every entry point."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import (
    BatchingOptions,
    Engine,
    EngineClosedError,
    LongFormOptions,
    PreparedAudio,
    Transcript,
    sample_audio_path,
)
from parakeet_runtime.engine.model.onnx_model import OnnxTdtModel

GRAPH_METHODS = ("encode", "start", "predict", "predict_joint", "joint_frames", "start_rows", "predict_joint_rows",
                 "joint_rows")


@pytest.fixture
def graph_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Records (method, thread name) for every call that runs one of the model's graphs."""
    calls: list[tuple[str, str]] = []
    for name in GRAPH_METHODS:
        original = getattr(OnnxTdtModel, name)

        def recording(self: OnnxTdtModel, *args: Any, _name: str = name, _original: Any = original,
                      **kwargs: Any) -> Any:
            calls.append((_name, threading.current_thread().name))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(OnnxTdtModel, name, recording)
    yield calls


def _clips() -> list[Any]:
    import soundfile

    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    return [sample_audio_path(), (samples[: rate * 2].copy(), rate), (samples[rate : rate * 4].copy(), rate)]


def test_every_graph_run_is_on_the_batcher_worker(graph_threads: list[tuple[str, str]]) -> None:
    clips = _clips()
    with Engine.load(batching=BatchingOptions(enabled=False)) as reference:
        expected = [reference.transcribe(c) for c in clips]
    with Engine.load(batching=BatchingOptions(max_batch_size=4)) as engine:
        graph_threads.clear()  # loading runs the start-of-sequence step once, in the loading thread
        assert engine.transcribe(clips) == expected  # a list
        assert asyncio.run(engine.transcribe_async(clips)) == expected  # an async list
        assert asyncio.run(engine.transcribe_async(clips[0])) == expected[0]  # an async single call
        barrier = threading.Barrier(6)

        def single(index: int) -> Transcript:
            barrier.wait()
            result: Transcript = engine.transcribe(clips[index % len(clips)])
            return result

        with ThreadPoolExecutor(6) as pool:  # concurrent single calls
            results = list(pool.map(single, range(6)))
        assert results == [expected[i % len(clips)] for i in range(6)]
    assert {name for name, _ in graph_threads} >= {"encode"}
    threads = {thread for _, thread in graph_threads}
    assert threads == {"parakeet-batcher"}, threads


def test_without_batching_graphs_run_in_the_calling_thread(graph_threads: list[tuple[str, str]]) -> None:
    with Engine.load(batching=BatchingOptions(enabled=False)) as engine:
        graph_threads.clear()
        engine.transcribe(_clips())
        engine.transcribe(sample_audio_path())
    assert graph_threads
    assert {thread for _, thread in graph_threads} == {threading.current_thread().name}


ENTRY_POINTS: dict[str, Callable[[Engine], object]] = {
    "single": lambda e: e.transcribe(sample_audio_path()),
    "list": lambda e: e.transcribe([sample_audio_path(), sample_audio_path()]),
    "empty list": lambda e: e.transcribe([]),
    "array": lambda e: e.transcribe(np.zeros(16000, dtype=np.float32), sample_rate=16000),
    "async single": lambda e: asyncio.run(e.transcribe_async(sample_audio_path())),
    "async list": lambda e: asyncio.run(e.transcribe_async([sample_audio_path()])),
    "async empty list": lambda e: asyncio.run(e.transcribe_async([])),
    "bad input": lambda e: e.transcribe(b"not audio"),
}


@pytest.mark.parametrize("batching", [BatchingOptions(), BatchingOptions(enabled=False)], ids=["batched", "unbatched"])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_raises_after_close(entry: str, batching: BatchingOptions) -> None:
    engine = Engine.load(batching=batching)
    engine.close()
    with pytest.raises(EngineClosedError):
        ENTRY_POINTS[entry](engine)
    engine.close()  # idempotent


def test_a_request_prepared_before_close_is_refused_after_it() -> None:
    for batching in (BatchingOptions(), BatchingOptions(enabled=False)):
        engine = Engine.load(batching=batching)
        prepared = engine.prepare(sample_audio_path())
        assert isinstance(prepared, PreparedAudio)
        engine.close()
        with pytest.raises(EngineClosedError):
            engine.runner.submit_many([prepared])


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


@pytest.fixture
def gated_encode(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Every encoder run sets ``entered`` and then waits for ``release``: (entered, release)."""
    entered = threading.Event()
    release = threading.Event()
    original = OnnxTdtModel.encode

    def gated(self: OnnxTdtModel, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OnnxTdtModel, "encode", gated)
    return entered, release


@pytest.mark.parametrize("drain", [True, False])
def test_close_with_and_without_drain(drain: bool, gated_encode: tuple[threading.Event, threading.Event]) -> None:
    """The batch in progress finishes either way; requests waiting in the queue finish with ``drain`` and
    fail with ``EngineClosedError`` without it."""
    entered, release = gated_encode
    engine = Engine.load(batching=BatchingOptions(max_batch_size=1, max_wait_ms=0))
    pool = ThreadPoolExecutor(4)
    try:
        running = pool.submit(engine.transcribe, sample_audio_path())
        assert entered.wait(30)  # the worker is inside the first batch
        waiting = [pool.submit(engine.transcribe, sample_audio_path()) for _ in range(3)]
        runner: Any = engine.runner
        _wait_until(lambda: runner._pending == 3)  # all three queued behind it
        closer = threading.Thread(target=engine.close, kwargs={"drain": drain})
        closer.start()
        _wait_until(lambda: engine.runner.closed)
        with pytest.raises(EngineClosedError):
            engine.transcribe(sample_audio_path())
        release.set()
        closer.join(30)
        assert not closer.is_alive()
        first = running.result(30)
        assert first.text
        for future in waiting:
            if drain:
                assert future.result(30) == first
            else:
                with pytest.raises(EngineClosedError):
                    future.result(30)
    finally:
        release.set()
        pool.shutdown()
        engine.close()


def test_close_drain_waits_for_unbatched_calls_in_other_threads(
    gated_encode: tuple[threading.Event, threading.Event],
) -> None:
    entered, release = gated_encode
    engine = Engine.load(batching=BatchingOptions(enabled=False))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(engine.transcribe, sample_audio_path())
        assert entered.wait(30)
        closer = threading.Thread(target=engine.close, kwargs={"drain": True})
        closer.start()
        _wait_until(lambda: engine.runner.closed)
        assert closer.is_alive()  # waiting for the call in progress
        release.set()
        closer.join(30)
        assert not closer.is_alive()
        assert running.result(30).text


_CHUNKED = LongFormOptions(strategy="chunked", chunk_seconds=1, left_context_seconds=0.5, right_context_seconds=0.24)
_DRAIN_BATCHING = {"batching": BatchingOptions(max_batch_size=2, max_wait_ms=0),
                   "inline": BatchingOptions(enabled=False, max_batch_size=2)}


class _FirstEncodeGate:
    """After ``hold`` is set, encoder runs wait for ``release`` (``entered`` says one has begun)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hold, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()
        original = OnnxTdtModel.encode

        def gated(model: OnnxTdtModel, *args: Any, **kwargs: Any) -> Any:
            if self.hold.is_set():
                self.entered.set()
                assert self.release.wait(30)
            return original(model, *args, **kwargs)

        monkeypatch.setattr(OnnxTdtModel, "encode", gated)


def _long_clip() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The sample clip, and twice it (several chunk groups under ``_CHUNKED``)."""
    clip, _ = soundfile.read(sample_audio_path(), dtype="float32")
    return clip, np.concatenate([clip, clip]).astype(np.float32)


def _held_long_call(engine: Engine, pool: ThreadPoolExecutor, gate: _FirstEncodeGate) -> Future[Transcript]:
    """A long input's ``transcribe`` in ``pool``, once its first piece is held in the encoder."""
    gate.hold.set()
    running = pool.submit(engine.transcribe, _long_clip()[1])
    assert gate.entered.wait(30)
    return running


def _drain_call(engine: Engine, call: str, audio: np.ndarray[Any, Any]) -> Any:
    """The call under test, on a long input (several chunk groups) or a list of five inputs (three chunks)."""
    if call == "list":
        return engine.transcribe([audio[: 16000 * (1 + i)] for i in range(5)])
    if call == "iter":
        return list(engine.transcribe_iter(audio))[-1].transcript
    if call == "async":
        return asyncio.run(engine.transcribe_async(audio))
    return engine.transcribe(audio)


@pytest.mark.parametrize("batching", list(_DRAIN_BATCHING))
@pytest.mark.parametrize("call", ["long", "list", "iter", "async"])
def test_close_with_drain_lets_calls_under_way_finish_whole(call: str, batching: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A list's later chunks and a long input's later chunk groups were refused once ``close(drain=True)`` had
    begun: the call failed half-way with ``EngineClosedError``. Now every call under way ends with the result it
    would have had, new calls are refused meanwhile, and ``close`` returns after them."""
    clip, audio = _long_clip()
    gate = _FirstEncodeGate(monkeypatch)
    with Engine.load(batching=_DRAIN_BATCHING[batching], long_form=_CHUNKED) as engine, \
            ThreadPoolExecutor(1) as pool:
        expected = _drain_call(engine, call, audio)
        gate.hold.set()
        running = pool.submit(_drain_call, engine, call, audio)
        assert gate.entered.wait(30)  # its first piece is in the encoder
        closer = threading.Thread(target=engine.close, kwargs={"drain": True, "timeout": 60})
        closer.start()
        _wait_until(lambda: engine.runner.closed)
        with pytest.raises(EngineClosedError):
            engine.transcribe(clip)
        time.sleep(0.1)
        assert closer.is_alive()  # waiting for the call under way
        gate.release.set()
        assert running.result(60) == expected
        closer.join(30)
        assert not closer.is_alive()


@pytest.mark.parametrize("batching", list(_DRAIN_BATCHING))
def test_close_with_drain_gives_up_on_calls_after_its_timeout(batching: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``timeout`` the call still under way fails at its next piece, and ``close`` has returned."""
    gate = _FirstEncodeGate(monkeypatch)
    with Engine.load(batching=_DRAIN_BATCHING[batching], long_form=_CHUNKED) as engine, \
            ThreadPoolExecutor(1) as pool:
        running = _held_long_call(engine, pool, gate)
        started = time.monotonic()
        closer = threading.Thread(target=engine.close, kwargs={"drain": True, "timeout": 0.5})
        closer.start()
        closer.join(30)  # while the call's first piece is still held in the encoder
        assert not closer.is_alive()
        assert 0.4 < time.monotonic() - started < 10
        gate.release.set()
        with pytest.raises(EngineClosedError):
            running.result(30)


@pytest.mark.parametrize("batching", list(_DRAIN_BATCHING))
def test_close_with_drain_inside_a_call_does_not_wait_for_that_call(batching: str) -> None:
    """A call whose own thread closes the engine (here from ``transcribe_iter``'s progress callback) would never
    end while ``close`` waited for it: ``close`` returns, and the call stops at its next piece."""
    audio = _long_clip()[1]
    with Engine.load(batching=_DRAIN_BATCHING[batching], long_form=_CHUNKED) as engine, \
            ThreadPoolExecutor(1) as pool:
        def close_at_first_update(done: float, total: float) -> None:
            engine.close(drain=True, timeout=None)

        running = pool.submit(lambda: list(engine.transcribe_iter(audio, progress=close_at_first_update)))
        with pytest.raises(EngineClosedError):
            running.result(60)
        assert engine.runner.closed


@pytest.mark.parametrize("batching", list(_DRAIN_BATCHING))
def test_close_with_drain_from_a_resumed_iterator_does_not_wait_for_its_call(batching: str) -> None:
    """An iterator begun in one thread and resumed in another (Starlette's ``iterate_in_threadpool`` does so), whose
    progress callback closes the engine: the call was counted under the first thread, and close waited for it
    (forever with ``timeout=None``)."""
    audio = _long_clip()[1]
    started = threading.get_ident()
    with Engine.load(batching=_DRAIN_BATCHING[batching], long_form=_CHUNKED) as engine, \
            ThreadPoolExecutor(1) as pool:
        def close_once_resumed_elsewhere(done: float, total: float) -> None:
            if threading.get_ident() != started and not engine.runner.closed:
                engine.close(drain=True, timeout=None)

        updates = engine.transcribe_iter(audio, progress=close_once_resumed_elsewhere)
        assert next(updates).transcript is None
        rest = pool.submit(list, updates)
        with pytest.raises(EngineClosedError):
            rest.result(60)


@pytest.mark.parametrize("batching", list(_DRAIN_BATCHING))
def test_a_closed_iterator_no_longer_holds_close(batching: str) -> None:
    audio = _long_clip()[1]
    with Engine.load(batching=_DRAIN_BATCHING[batching], long_form=_CHUNKED) as engine:
        updates = engine.transcribe_iter(audio)
        assert next(updates).transcript is None
        assert engine.runner.calls._calls  # the call is under way until the iterator ends
        updates.close()
        assert not engine.runner.calls._calls
        started = time.monotonic()
        engine.close(drain=True, timeout=None)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("batching", list(_DRAIN_BATCHING))
def test_close_without_drain_cuts_a_drain_short(batching: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = _FirstEncodeGate(monkeypatch)
    with Engine.load(batching=_DRAIN_BATCHING[batching], long_form=_CHUNKED) as engine, \
            ThreadPoolExecutor(1) as pool:
        running = _held_long_call(engine, pool, gate)
        draining = threading.Thread(target=engine.close, kwargs={"drain": True, "timeout": None})
        draining.start()
        _wait_until(lambda: engine.runner.closed)
        engine.close()  # no drain: the call stops at its next piece
        gate.release.set()
        with pytest.raises(EngineClosedError):
            running.result(30)
        draining.join(30)
        assert not draining.is_alive()


def test_close_with_drain_on_the_event_loop_says_it_cannot_wait_for_that_loop(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """It would block the loop the async calls need (until its timeout): it warns, and returns."""
    audio = _long_clip()[1]
    gate = _FirstEncodeGate(monkeypatch)

    async def close_beside_a_call(engine: Engine) -> float:
        task = asyncio.ensure_future(engine.transcribe_async(audio))
        await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 30)
        started = time.monotonic()
        threading.Timer(1.0, gate.release.set).start()  # the batch in progress finishes: close waits for that
        engine.close(drain=True, timeout=None)
        took = time.monotonic() - started
        with pytest.raises(EngineClosedError):
            await task
        return took

    with Engine.load(long_form=_CHUNKED) as engine:
        gate.hold.set()
        with caplog.at_level(logging.WARNING, logger="parakeet_runtime.engine.requests.calls"):
            took = asyncio.run(close_beside_a_call(engine))
    assert took < 30
    assert "cannot wait for the 1 async call(s) of that loop" in caplog.text


def test_a_forked_child_does_not_count_its_parents_calls() -> None:
    """Calls under way in the parent's threads at the fork never end in the child: its close waited for them."""
    import os

    from parakeet_runtime.engine.requests.calls import CallTracker

    tracker = CallTracker()
    tracker.begin()  # under way in this (the parent) process
    pid = os.fork()
    if pid == 0:  # the child
        os._exit(0 if tracker.wait_for_calls(time.monotonic() + 0.5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not tracker.wait_for_calls(time.monotonic() + 0.1)  # here it is still under way


def test_load_builds_one_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Engine] = []
    original = Engine.__init__

    def counting(self: Engine, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Engine, "__init__", counting)
    with Engine.load() as engine:
        assert built == [engine]
