"""The server's audio-duration limit (issue #19): ``ServerOptions.max_audio_s`` / ``serve --max-audio-s``.

A small upload can declare hours of audio (silence compresses ~1000:1 in FLAC); the server reads the declared
length from the file's header and refuses it with 400 ``audio_too_long`` before anything is decoded. In-process
(httpx's ASGI transport) for the timing and the refusal paths; a real ``serve`` process for its memory.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import AudioTooLongError, BatchingOptions, Engine, OptionsError, sample_audio_path
from parakeet_runtime.engine.requests.audio import UNKNOWN_LENGTH
from parakeet_runtime.engine.serving.cli import parse_args
from parakeet_runtime.engine.serving.options import ServerOptions
from parakeet_runtime.engine.serving.server import create_app

from .test_hostile_inputs import _DecodeCounter, _encode
from .test_server import _serve

TWO_HOURS_S = 7200.0
RSS_BOUND_MB = 300.0


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load(batching=BatchingOptions(enabled=False)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def two_hour_flac(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two hours of 8 kHz mono silence as FLAC (a few hundred KB), written a minute at a time."""
    path = tmp_path_factory.mktemp("long") / "two-hours.flac"
    rate = 8000
    block = np.zeros(rate * 60, dtype=np.int16)
    with soundfile.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format="FLAC") as out:
        for _ in range(int(TWO_HOURS_S // 60)):
            out.write(block)
    assert soundfile.info(str(path)).duration == TWO_HOURS_S
    data = path.read_bytes()
    assert len(data) < 2 * 1024 * 1024, len(data)  # under the upload limits used below
    return data


def _post(app: Any, audio: bytes, name: str = "clip.flac") -> tuple[httpx.Response, float]:
    async def go() -> tuple[httpx.Response, float]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            started = time.monotonic()
            response = await client.post("/v1/audio/transcriptions", files={"file": (name, audio)},
                                         data={"model": "parakeet"}, timeout=60)
            return response, time.monotonic() - started

    return asyncio.run(go())


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "audio_too_long" and error["param"] == "file", error
    assert error["type"] == "invalid_request_error", error
    return error


@pytest.fixture
def nothing_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the upload is decoded or reaches the engine at all."""

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded audio that should have been refused from its header")

    async def no_engine(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the engine got audio that the server should have refused from its header")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    monkeypatch.setattr(Engine, "transcribe_async", no_engine)


def test_a_two_hour_flac_is_refused_from_its_header(engine: Engine, two_hour_flac: bytes,
                                                     nothing_decoded: None) -> None:
    """Default limit (3600 s; the engine itself takes any length): refused by the server itself, in well under a
    second, without decoding."""
    assert engine.preparer.max_seconds is None and ServerOptions().max_audio_s == 3600.0
    response, elapsed = _post(create_app(engine), two_hour_flac)
    error = _error(response)
    assert "audio of 7200.0 s is longer than this server accepts (3600 s per request)" in error["message"]
    assert elapsed < 1.0, elapsed


def test_the_server_limit_applies_when_lower_than_the_models(engine: Engine, two_hour_flac: bytes,
                                                             nothing_decoded: None) -> None:
    sample = sample_audio_path().read_bytes()
    seconds = soundfile.info(str(sample_audio_path())).duration
    assert seconds > 2
    response, _ = _post(create_app(engine, ServerOptions(max_audio_s=2)), sample, "sample.wav")
    message = _error(response)["message"]
    assert f"audio of {seconds:.1f} s is longer than this server accepts (2 s per request)" in message
    response, elapsed = _post(create_app(engine, ServerOptions(max_audio_s=2)), two_hour_flac)
    assert "longer than this server accepts" in _error(response)["message"]
    assert elapsed < 1.0, elapsed


def test_a_wav_streamed_without_its_length_is_refused_from_its_size(engine: Engine, nothing_decoded: None) -> None:
    """A WAV whose data chunk declares 0 bytes (written to a pipe) holds audio to the end of the file (the
    engine reads it so): the server counts that length from the upload's size before decoding, not 0 s."""
    sample = sample_audio_path().read_bytes()
    seconds = soundfile.info(str(sample_audio_path())).duration
    data = sample.index(b"data")
    streamed = sample[:4] + bytes(4) + sample[8 : data + 4] + bytes(4) + sample[data + 8 :]
    assert soundfile.info(io.BytesIO(streamed)).frames == 0  # libsndfile's own reading of the header
    response, _ = _post(create_app(engine, ServerOptions(max_audio_s=2)), streamed, "streamed.wav")
    assert f"audio of {seconds:.1f} s is longer than this server accepts (2 s per request)" in _error(response)[
        "message"]


def _unknown_length(flac: bytes) -> bytes:
    """``flac`` with STREAMINFO's total-samples field 0: "unknown" (a FLAC written to a pipe), legal FLAC."""
    assert flac[:4] == b"fLaC"
    spoiled = bytearray(flac)
    spoiled[21] &= 0xF0  # STREAMINFO from byte 8: its 36-bit total is the low nibble of byte 21 and bytes 22-25
    spoiled[22:26] = bytes(4)
    return bytes(spoiled)


def test_a_flac_of_unknown_length_stops_decoding_past_the_limit(engine: Engine, two_hour_flac: bytes,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by fuzzing the server: a FLAC whose header does not say its length passed the header check and was
    decoded and transcribed in full (10,000 s of silence in a 506 KB upload: 40 s and 1.5 GB), and only then
    refused. The app holds its engine to the server's limit, so decoding stops just past it."""
    unknown = _unknown_length(two_hour_flac)
    assert soundfile.info(io.BytesIO(unknown)).frames >= UNKNOWN_LENGTH
    decoded: list[int] = []
    read = soundfile.SoundFile.read

    def counting(self: soundfile.SoundFile, *args: Any, **kwargs: Any) -> Any:
        block = read(self, *args, **kwargs)
        decoded.append(len(block))
        return block

    monkeypatch.setattr(soundfile.SoundFile, "read", counting)
    response, elapsed = _post(create_app(engine, ServerOptions(max_audio_s=60)), unknown)
    assert "audio of at least 6" in (message := _error(response)["message"])
    assert "is longer than this server accepts (60 s per request)" in message
    assert sum(decoded) / 8000 < 60 + 60, sum(decoded)  # the limit and at most a block more, not two hours
    assert elapsed < 10, elapsed
    assert engine.preparer.max_seconds is None  # the engine given to the app is left as it was


def test_an_engine_held_to_a_limit_shares_everything_else(engine: Engine) -> None:
    limited = engine.with_max_audio_seconds(2.0)
    assert limited.preparer.max_seconds == 2.0 and engine.preparer.max_seconds is None
    assert limited.runner is engine.runner and limited.model is engine.model
    assert limited.with_max_audio_seconds(5.0) is limited  # already no longer
    assert limited.with_max_audio_seconds(1.0).preparer.max_seconds == 1.0
    sample = sample_audio_path()
    with pytest.raises(AudioTooLongError):
        limited.transcribe(sample)
    assert engine.transcribe(sample).text
    for bad in (0.0, math.nan, -1.0):
        with pytest.raises(OptionsError, match="max_audio_seconds"):
            engine.with_max_audio_seconds(bad)


def test_a_limited_view_keeps_the_engine_it_shares_with_alive() -> None:
    """The runner is closed when the engine that made it is collected: a view outliving every other reference to
    that engine (``serve`` keeps only the view) must keep it, or its requests fail as if the engine were closed."""
    import gc

    view = Engine.load().with_max_audio_seconds(2.0)
    gc.collect()
    assert not view.runner.closed
    assert view.transcribe(np.zeros(8000, dtype=np.float32)).duration == 0.5
    view.close()


def test_audio_within_the_limit_is_transcribed(engine: Engine) -> None:
    sample = sample_audio_path()
    seconds = soundfile.info(str(sample)).duration
    expected = engine.transcribe(sample).text
    for limit in (math.ceil(seconds), 3600.0):
        response, _ = _post(create_app(engine, ServerOptions(max_audio_s=limit)), sample.read_bytes(), "s.wav")
        assert response.status_code == 200, response.text
        assert response.json() == {"text": expected}


def test_a_header_without_a_length_is_checked_after_decoding(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header soundfile cannot read (MP4, WebM through PyAV) goes to the engine's normal path; the decoded
    length is then held to the server's limit."""

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise soundfile.LibsndfileError(1, "no header for this test")

    monkeypatch.setattr(soundfile, "info", unreadable)
    sample = sample_audio_path()
    seconds = engine.transcribe(sample).duration
    response, _ = _post(create_app(engine, ServerOptions(max_audio_s=2)), sample.read_bytes(), "s.wav")
    assert f"audio of {seconds:.1f} s is longer than this server accepts" in _error(response)["message"]
    garbage, _ = _post(create_app(engine, ServerOptions(max_audio_s=2)), b"not audio at all" * 64, "x.wav")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_audio", garbage.text


def test_a_container_is_refused_from_its_header_too(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """M4A and WebM declare their length in their own headers (soundfile cannot read them): two minutes, within
    the model's limit, are refused against the server's 60 s before a single frame is decoded (they used to be
    decoded and transcribed in full, and then refused)."""
    counter = _DecodeCounter(monkeypatch)
    for fmt, codec in (("mp4", "aac"), ("webm", "libopus")):
        response, elapsed = _post(create_app(engine, ServerOptions(max_audio_s=60)), _encode(fmt, codec, 120),
                                  f"clip.{fmt}")
        assert "audio of 120.0 s is longer than this server accepts (60 s per request)" in _error(response)["message"]
        assert elapsed < 1.0, elapsed
    assert counter.seconds == 0.0


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True])
def test_max_audio_s_must_be_a_positive_number(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_audio_s must be a positive number of seconds"):
        ServerOptions(max_audio_s=bad)


def test_the_serve_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["serve"]).max_audio_s == 3600.0
    assert parse_args(["serve", "--max-audio-s", "90.5"]).max_audio_s == 90.5
    for bad in ("0", "-3", "nan", "inf"):
        with pytest.raises(SystemExit) as exited:
            parse_args(["serve", "--max-audio-s", bad])
        assert exited.value.code == 2
        assert "--max-audio-s must be a positive number of seconds" in capsys.readouterr().err


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_a_serve_process_refuses_two_hours_without_growing(two_hour_flac: bytes) -> None:
    """``serve --max-audio-s 3600``: the two-hour upload is refused and the process's RSS grows by less than
    300 MB (decoding it would take 230 MB at 8 kHz and 460 MB more resampled to 16 kHz)."""
    process, url = _serve("--max-upload-mb", "2", "--max-audio-s", "3600")
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/health").status_code == 200
            before = _rss_mb(process.proc.pid)
            started = time.monotonic()
            response = client.post("/v1/audio/transcriptions", files={"file": ("long.flac", two_hour_flac)},
                                   data={"model": "parakeet"})
            elapsed = time.monotonic() - started
            after = _rss_mb(process.proc.pid)
            _error(response)
            assert after - before < RSS_BOUND_MB, (before, after)
            assert elapsed < 5.0, elapsed  # loopback HTTP on a shared CPU; the in-process test bounds it at 1 s
            print(f"\nserve, 2-hour FLAC ({len(two_hour_flac)} bytes): 400 in {elapsed * 1000:.1f} ms, "
                  f"VmRSS {before:.0f} -> {after:.0f} MB")
            assert client.get("/health").status_code == 200
    finally:
        process.stop()


def test_the_flac_is_small_but_declares_two_hours(two_hour_flac: bytes) -> None:
    info = soundfile.info(io.BytesIO(two_hour_flac))
    assert (info.samplerate, info.channels, info.duration) == (8000, 1, TWO_HOURS_S)
