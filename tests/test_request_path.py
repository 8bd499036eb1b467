"""One request path: single and list calls, sync and async, all run their graphs on the runner, and
``close()`` closes every entry point."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from parakeet_runtime.engine import (
    BatchingOptions,
    Engine,
    EngineClosedError,
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


def test_load_builds_one_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Engine] = []
    original = Engine.__init__

    def counting(self: Engine, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Engine, "__init__", counting)
    with Engine.load() as engine:
        assert built == [engine]
