"""Thread safety: many threads calling ``transcribe`` at once on one engine get the serial results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_runtime.engine import AudioDecodeError, Engine, Transcript, sample_audio_path


def _barrier_run(engine: Engine, inputs: list[Any]) -> list[Transcript | BaseException]:
    barrier = threading.Barrier(len(inputs))
    results: list[Transcript | BaseException | None] = [None] * len(inputs)

    def work(index: int) -> None:
        barrier.wait()
        try:
            results[index] = engine.transcribe(inputs[index])
        except BaseException as exc:  # recorded and asserted on below
            results[index] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a transcribe call hung"
    return [r for r in results if r is not None]


def test_ten_threads_same_clip_default_model() -> None:
    engine = Engine.load()
    serial = engine.transcribe(sample_audio_path())
    results = _barrier_run(engine, [sample_audio_path()] * 10)
    assert len(results) == 10
    assert all(r == serial for r in results), [r for r in results if r != serial]


def test_ten_threads_mixed_clips_fixture_models(engines: dict[str, Any], clips: dict[str, Path]) -> None:
    for name in ("tdt_a", "tdt_b"):
        engine = engines[name]
        paths = [list(clips.values())[i % len(clips)] for i in range(10)]
        serial = {p: engine.transcribe(p) for p in set(paths)}
        results = _barrier_run(engine, paths)
        assert len(results) == 10
        for path, result in zip(paths, results, strict=True):
            assert result == serial[path], f"{name} {path.name}: concurrent result differs from serial"


def test_bad_requests_do_not_disturb_good_ones(tmp_path: Path) -> None:
    engine = Engine.load()
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"\x00garbage" * 50)
    serial = engine.transcribe(sample_audio_path())
    inputs: list[Any] = [sample_audio_path() if i % 3 else garbage for i in range(24)]
    inputs[5] = np.array([np.nan], dtype=np.float32)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(engine.transcribe, x) for x in inputs]
    for x, future in zip(inputs, futures, strict=True):
        if isinstance(x, Path) and x == sample_audio_path():
            assert future.result() == serial
        else:
            assert isinstance(future.exception(), AudioDecodeError)
