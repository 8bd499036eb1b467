"""Memory is returned after a large request, and after one that fails late (issue #19).

glibc keeps a large request's freed buffers in its heaps, and a failed request's exception keeps its audio and
features alive in a reference cycle until the cycle collector runs; the server collects and trims
(``malloc_trim(0)``) after large or failed requests. Measured on a real ``serve`` process: without this, four
requests of ~4 minutes of 44.1 kHz stereo (two refused late, after decoding and features) left it 294 MB larger;
with it, 43 MB.
"""

from __future__ import annotations

import asyncio
import io
import platform
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import BatchingOptions, Engine, sample_audio_path
from parakeet_runtime.engine.serving import memory, server
from parakeet_runtime.engine.serving.server import ServerOptions, create_app

from .test_server import _serve

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
RATE = 44100
RSS_BOUND_MB = 100.0
"""RSS after the large requests, above RSS before them (measured: +43 MB with the release, +141 MB with the
cycle collection alone, +294 MB with neither)."""


def _status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


def _wav(seconds: float) -> bytes:
    """A 220 Hz tone, 44.1 kHz stereo 16-bit WAV: decoding, resampling and features of ~4 minutes of it take
    about 1 GB at the peak."""
    frames = int(seconds * RATE)
    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(frames) / RATE)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([tone, tone], axis=1), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_memory_is_returned_after_a_large_and_a_late_failing_request() -> None:
    with Engine.load(batching=BatchingOptions(enabled=False)) as engine:
        limit = engine.preparer.max_seconds
    good = _wav(limit - 10)
    late = _wav(limit)  # within the header check, refused by the exact frame check after features
    process, url = _serve("--max-upload-mb", "64")
    try:
        pid = process.proc.pid
        with httpx.Client(base_url=url, timeout=120) as client:
            warm = client.post("/v1/audio/transcriptions", files={"file": ("s.wav", sample_audio_path().read_bytes())})
            assert warm.status_code == 200, warm.text
            time.sleep(1.5)  # the warm-up request's release (small: none) and the interval pass
            before = _status(pid, "VmRSS")
            answered = client.post("/v1/audio/transcriptions", files={"file": ("good.wav", good)},
                                   data={"response_format": "verbose_json"})
            assert answered.status_code == 200, answered.text
            assert answered.json()["duration"] == pytest.approx(limit - 10, abs=0.01)
            refused = client.post("/v1/audio/transcriptions", files={"file": ("late.wav", late)})
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "audio_too_long", refused.text
            peak = _status(pid, "VmHWM")
            deadline = time.monotonic() + 10
            while (after := _status(pid, "VmRSS")) - before >= RSS_BOUND_MB and time.monotonic() < deadline:
                time.sleep(0.2)  # the release runs in a worker thread after the response
            print(f"\nserve, {limit - 10:.0f} s + {limit:.0f} s of 44.1 kHz stereo (the second refused late): "
                  f"VmRSS {before:.0f} -> peak {peak:.0f} -> {after:.0f} MB")
            assert peak - before > 3 * RSS_BOUND_MB, "the requests were not large enough to show anything"
            assert after - before < RSS_BOUND_MB, (before, peak, after)
            assert client.get("/health").status_code == 200
    finally:
        process.stop()


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_free_memory_runs_one_at_a_time() -> None:
    assert memory.release_free_memory() is True
    with memory._trimming:  # a release in progress: an overlapping call returns at once
        assert memory.release_free_memory() is False


def test_the_release_follows_large_and_failed_requests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: a small successful request releases nothing; a failed one (and a large one) asks for one
    release, run in a worker thread after the response, at most one per interval, the last one never dropped."""
    calls: list[float] = []

    def counted() -> bool:
        calls.append(time.monotonic())
        return True

    monkeypatch.setattr(server, "release_free_memory", counted)
    monkeypatch.setattr(server, "RELEASE_INTERVAL_S", 2.0)
    engine = Engine.load(batching=BatchingOptions(enabled=False))
    app = create_app(engine, ServerOptions())
    sample = sample_audio_path().read_bytes()

    async def scenario() -> list[int]:
        statuses = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            async def post(audio: bytes) -> None:
                response = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
                statuses.append(response.status_code)

            await post(sample)
            await asyncio.sleep(0.5)
            assert not calls, "a small successful request released memory"
            for filler in (b"\0", b"\1", b"\2"):  # three failures in the engine, well within the interval
                await post(b"RIFF" + filler * 600)
            await asyncio.sleep(2.5)
            assert len(calls) == 2, calls  # the first at once, the others coalesced at the interval's end
            await post(_wav(12))  # a large upload (2 MB) of short audio
            await asyncio.sleep(0.5)
        return statuses

    try:
        statuses = asyncio.run(scenario())
    finally:
        engine.close()
    assert statuses == [200, 400, 400, 400, 200]
    assert len(calls) == 3 and calls[1] - calls[0] >= 1.9, calls


def test_long_audio_in_a_small_upload_is_large(monkeypatch: pytest.MonkeyPatch) -> None:
    assert server.RELEASE_AFTER_BYTES == 1024 * 1024 and server.RELEASE_AFTER_S == 60.0
    requested: list[Any] = []
    monkeypatch.setattr(server._MemoryReleaser, "request", lambda self: requested.append(self))
    engine = Engine.load(batching=BatchingOptions(enabled=False))
    app = create_app(engine, ServerOptions())
    quiet = io.BytesIO()
    soundfile.write(quiet, np.zeros(61 * 16000, dtype=np.int16), 16000, format="FLAC")  # small, but 61 s long

    async def scenario() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.post("/v1/audio/transcriptions", files={"file": ("a.flac", quiet.getvalue())})
            return response.status_code

    try:
        assert len(quiet.getvalue()) < server.RELEASE_AFTER_BYTES
        assert asyncio.run(scenario()) == 200
    finally:
        engine.close()
    assert len(requested) == 1
