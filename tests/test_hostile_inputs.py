"""Hostile audio: arrays of odd shapes, impossible sample rates, absurd amplitudes, and audio far longer than
the model takes, refused from its declared length before it is decoded or resampled."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import (
    AudioDecodeError,
    AudioTooLongError,
    BatchingOptions,
    Engine,
    LongAudio,
    LongFormOptions,
    PreparedAudio,
    load_audio,
    sample_audio_path,
)
from parakeet_runtime.engine.requests import audio as audio_module
from parakeet_runtime.engine.requests.prepare import Preparer

RATE = 16000


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load(batching=BatchingOptions(enabled=False)) as loaded:
        yield loaded


@pytest.fixture
def no_resampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any resampling fails the test: the input must be refused before it."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("resampled an input that should have been refused first")

    monkeypatch.setattr(audio_module, "resample", refuse)
    monkeypatch.setattr(audio_module, "PolyphaseStream", refuse)


def _sample() -> np.ndarray:
    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    assert rate == RATE
    return np.asarray(samples)


# --- shapes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1600, 0), (0, 0), (9, 0)])
def test_an_array_without_channels_is_refused(shape: tuple[int, int]) -> None:
    with pytest.raises(AudioDecodeError, match="no channels"):
        load_audio(np.zeros(shape, dtype=np.float32), RATE)


def test_channels_first_stereo_is_read_as_stereo(engine: Engine) -> None:
    samples = _sample()
    stereo = np.stack([samples, samples * 0.5])  # (2, n)
    channels_last = load_audio(stereo.T, RATE).samples
    channels_first = load_audio(stereo, RATE).samples
    np.testing.assert_array_equal(channels_first, channels_last)
    assert channels_first.shape == samples.shape
    assert engine.transcribe(stereo).text == engine.transcribe(stereo.T).text


@pytest.mark.parametrize("shape", [(3, 3), (100, 200), (200, 100), (9, 20)])
def test_an_ambiguous_shape_is_refused(shape: tuple[int, int]) -> None:
    with pytest.raises(AudioDecodeError, match="ambiguous shape"):
        load_audio(np.zeros(shape, dtype=np.float32), RATE)


@pytest.mark.parametrize("shape", [(0, 2), (2, 0), (8, 0)])
def test_no_samples_of_some_channels_is_empty_audio(engine: Engine, shape: tuple[int, int]) -> None:
    """Channels first or last: ``(2, 0)`` was refused as "no channels" while ``(0, 2)`` was empty audio."""
    assert load_audio(np.zeros(shape, dtype=np.float32), RATE).samples.shape == (0,)
    assert engine.transcribe(np.zeros(shape, dtype=np.float32)).text == ""


def test_a_file_is_always_frames_by_channels(tmp_path: Path) -> None:
    """Files are not guessed at: three samples of eight channels stay three samples."""
    path = tmp_path / "wide.wav"
    soundfile.write(path, np.full((3, 8), 0.25, dtype=np.float32), RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, RATE).samples, np.full(3, 0.25, dtype=np.float32))


# --- rates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, -16000, True, False, 16000.0, 999, 384_001, 10**12])
def test_a_bad_keyword_rate_is_refused_before_resampling(engine: Engine, no_resampling: None, rate: Any) -> None:
    with pytest.raises(AudioDecodeError, match="sample rate"):
        engine.transcribe(np.zeros(1600, dtype=np.float32), sample_rate=rate)


@pytest.mark.parametrize("rate", [0, True, 16000.0, 10**12])
def test_a_bad_keyword_rate_is_the_arguments_fault_for_every_call(engine: Engine, rate: Any) -> None:
    """A bad ``sample_rate=`` is named as the argument (a list's error used to blame its first item), also with a
    list of files (where it was silently ignored), for every entry point."""
    audio: list[Any] = [np.zeros(1600, dtype=np.float32), sample_audio_path()]
    for call in (lambda: engine.transcribe(audio, sample_rate=rate),
                 lambda: engine.transcribe([sample_audio_path()], sample_rate=rate),
                 lambda: list(engine.transcribe_iter(sample_audio_path(), sample_rate=rate)),
                 lambda: asyncio.run(engine.transcribe_async(audio, sample_rate=rate))):
        with pytest.raises(AudioDecodeError, match=r"^sample_rate argument: sample rate must be"):
            call()


@pytest.mark.parametrize("rate", [0, 1, True, 44100.0, "16000", 384_001])
def test_a_bad_pair_rate_is_refused_before_resampling(no_resampling: None, rate: Any) -> None:
    with pytest.raises(AudioDecodeError, match="sample rate"):
        load_audio((np.zeros(16000, dtype=np.float32), rate), RATE)


def test_one_hertz_is_refused_at_once(engine: Engine) -> None:
    started = time.monotonic()
    with pytest.raises(AudioDecodeError, match="between 1000 and 384000 Hz, found 1"):
        engine.transcribe((np.zeros(16000), 1))
    assert time.monotonic() - started < 1.0


def test_a_file_at_an_impossible_rate_is_refused(tmp_path: Path, no_resampling: None) -> None:
    path = tmp_path / "slow.wav"
    soundfile.write(path, np.zeros(400, dtype=np.float32), 400)
    with pytest.raises(AudioDecodeError, match="found 400"):
        load_audio(path, RATE)


def test_rates_at_the_bounds_are_accepted() -> None:
    for rate in (1000, 384_000):
        assert load_audio((np.zeros(rate // 10, dtype=np.float32), rate), RATE).samples.shape[0] == RATE // 10


# --- amplitudes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("peak", [1e30, -1e7, np.finfo(np.float32).max])
def test_absurd_amplitudes_are_refused(peak: float) -> None:
    samples = np.zeros(1600, dtype=np.float32)
    samples[100] = peak
    with pytest.raises(AudioDecodeError, match="expected float audio within"):
        load_audio(samples, RATE)


def test_int16_scale_floats_transcribe_like_unit_scale(engine: Engine) -> None:
    """The documented reason for the bound: features are normalised, so scale alone changes nothing."""
    samples = _sample()
    unit = engine.transcribe(samples)
    scaled = engine.transcribe(samples * 32768.0)
    assert [t.id for t in scaled.tokens] == [t.id for t in unit.tokens] and unit.tokens


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_still_refused(bad: float) -> None:
    samples = np.zeros(1600, dtype=np.float32)
    samples[7] = bad
    with pytest.raises(AudioDecodeError, match="NaN or infinity"):
        load_audio(samples, RATE)


# --- declared length ------------------------------------------------------------------------------------


LIMIT_SECONDS = 240.0


@pytest.fixture(scope="module")
def limited() -> Iterator[Engine]:
    """An engine with a user-set length limit (without one, every length is transcribed)."""
    options = LongFormOptions(max_audio_seconds=LIMIT_SECONDS)
    with Engine.load(batching=BatchingOptions(enabled=False), long_form=options) as loaded:
        yield loaded


def test_a_two_hour_flac_is_refused_before_decoding(limited: Engine, tmp_path: Path, no_resampling: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "two-hours.flac"
    rate = 8000
    block = np.zeros(rate * 60, dtype=np.int16)
    with soundfile.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16", format="FLAC") as out:
        for _ in range(120):
            out.write(block)
    assert soundfile.info(str(path)).duration == 7200.0

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded audio that should have been refused from its header")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    monkeypatch.setattr(soundfile.SoundFile, "blocks", no_decoding)
    for source in (path, path.read_bytes()):
        started = time.monotonic()
        with pytest.raises(AudioTooLongError, match=r"audio of 7200\.0 s is longer"):
            limited.transcribe(source)
        assert time.monotonic() - started < 1.0


def test_a_long_array_is_refused_before_resampling(limited: Engine, no_resampling: None) -> None:
    seconds = LIMIT_SECONDS + 60
    started = time.monotonic()
    with pytest.raises(AudioTooLongError):
        limited.transcribe((np.zeros(int(seconds * 1000), dtype=np.float32), 1000))
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_audio_at_the_exact_limit_is_accepted(limited: Engine, rate: int) -> None:
    """The limit is on the declared length: ``LIMIT_SECONDS`` at any rate is accepted, one sample more is not."""
    longest = int(LIMIT_SECONDS * rate)
    audio = load_audio((np.zeros(longest, dtype=np.float32), rate), RATE, max_seconds=limited.preparer.max_seconds)
    assert audio.duration == pytest.approx(LIMIT_SECONDS, abs=1e-3)
    with pytest.raises(AudioTooLongError):
        limited.prepare((np.zeros(longest + 1, dtype=np.float32), rate))


def test_one_pass_only_refuses_what_the_encoder_cannot_take(engine: Engine) -> None:
    """``strategy="one_pass"`` never chunks: beyond an encoder's length limit (a directory whose graph has
    one, e.g. a NeMo export with a constant position table) it refuses; ``auto`` chunks instead."""
    encoder = dataclasses.replace(engine.manifest.encoder, max_frames=900)
    one = Preparer(engine.features, encoder, LongFormOptions(strategy="one_pass", chunk_seconds=20))
    auto = Preparer(engine.features, encoder, LongFormOptions(chunk_seconds=20))
    frames = 900 * encoder.subsampling_factor
    hop = engine.manifest.features.hop_length
    valid = engine.features.valid_frames
    longest = next(n for n in range(frames * hop, frames * hop + 4 * hop) if valid(n + 1) > frames)
    prepared = one(np.zeros(longest, dtype=np.float32))
    assert isinstance(prepared, PreparedAudio) and prepared.valid_frames == frames
    assert isinstance(auto(np.zeros(longest, dtype=np.float32)), PreparedAudio)
    with pytest.raises(AudioTooLongError, match="one pass"):
        one(np.zeros(longest + 1, dtype=np.float32))
    assert isinstance(auto(np.zeros(longest + 1, dtype=np.float32)), LongAudio)


def test_an_encoder_limit_that_shrinks_the_windows_is_said_at_load(engine: Engine,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A directory whose encoder takes fewer frames than LongFormOptions' window: the windows shrink to fit
    (before, silently: at one frame, every transcript came back empty with no word of why)."""
    options = LongFormOptions()
    frame = engine.manifest.encoder.subsampling_factor * engine.manifest.features.hop_length
    asked = round((options.chunk_seconds + options.left_context_seconds + options.right_context_seconds)
                  * engine.preparer.sample_rate) // frame
    for max_frames, shrunk in ((asked + 2, False), (asked // 2, True), (1, True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="parakeet_runtime.engine.requests.longform"):
            preparer = Preparer(engine.features, dataclasses.replace(engine.manifest.encoder, max_frames=max_frames))
        assert bool(caplog.records) == shrunk, (max_frames, caplog.text)
        assert preparer.geometry.window_samples <= max(max_frames - 1, 1) * frame
        if shrunk:
            assert f"at most {max_frames} frames (manifest encoder.max_frames)" in caplog.text
            assert ("too little context" in caplog.text) == (max_frames == 1)


# --- containers (PyAV) ----------------------------------------------------------------------------------


def _encode(fmt: str, codec: str, seconds: float) -> bytes:
    """``seconds`` of 16 kHz mono silence, encoded and muxed by PyAV itself (ten-second blocks)."""
    av = pytest.importorskip("av")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=RATE)
        stream.layout = "mono"
        block = np.zeros((1, RATE * 10), dtype=np.float32)
        for start in range(0, int(seconds * RATE), block.shape[1]):
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def long_containers() -> dict[str, bytes]:
    """Ten minutes of silence as M4A (AAC), five as WebM (Opus), five as ADTS AAC (a format without a declared
    length): each well past the limited engine's 240 s, each under 300 KB."""
    return {"m4a": _encode("mp4", "aac", 600), "webm": _encode("webm", "libopus", 300),
            "adts": _encode("adts", "aac", 300)}


class _DecodeCounter:
    """Counts the seconds PyAV decodes (by wrapping ``av.open``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        av = pytest.importorskip("av")
        self.seconds = 0.0
        real_open = av.open
        counter = self

        class Counting:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

            def __enter__(self) -> Counting:
                self.inner.__enter__()
                return self

            def __exit__(self, *exc: object) -> Any:
                return self.inner.__exit__(*exc)

            def decode(self, *args: Any) -> Iterator[Any]:
                for frame in self.inner.decode(*args):
                    counter.seconds += frame.samples / frame.sample_rate
                    yield frame

        monkeypatch.setattr(av, "open", lambda *args, **kwargs: Counting(real_open(*args, **kwargs)))


def _peak_rss_growth_mb(work: Callable[[], object]) -> float:
    """How far the process's peak RSS rose above its RSS while ``work`` ran (Linux: VmHWM, reset first)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def field(name: str) -> int:
        return next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith(f"{name}:"))

    start = field("VmRSS")
    work()
    return (field("VmHWM") - start) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux's /proc")
@pytest.mark.parametrize("kind", ["m4a", "webm"])
def test_a_long_container_is_refused_from_its_header(limited: Engine, long_containers: dict[str, bytes], kind: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding all of it took 0.9 s and 109 MB of peak RSS (M4A, ten minutes) or 3.7 s and 255 MB (WebM, whose
    Opus decodes at 48 kHz); refused from the declared length: nothing decoded, milliseconds, no memory."""
    data = long_containers[kind]
    counter = _DecodeCounter(monkeypatch)

    def attempt() -> None:
        with pytest.raises(AudioTooLongError, match=r"audio of (600|300)\.0 s is longer"):
            limited.transcribe(data)

    started = time.monotonic()
    growth = _peak_rss_growth_mb(attempt)
    elapsed = time.monotonic() - started
    assert counter.seconds == 0.0
    assert elapsed < 1.0, elapsed
    assert growth < 20.0, growth


def test_a_container_without_a_declared_length_stops_decoding_past_the_limit(
        limited: Engine, long_containers: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """ADTS declares no length (FFmpeg's figure for it is a bitrate estimate, not used): its five minutes are
    decoded only until they pass the engine's limit."""
    from parakeet_runtime.engine.requests.containers import declared_seconds

    data = long_containers["adts"]
    assert declared_seconds(data) is None
    counter = _DecodeCounter(monkeypatch)
    limit = LIMIT_SECONDS
    with pytest.raises(AudioTooLongError, match=r"audio of at least 240\.\d s is longer"):
        limited.transcribe(data)
    assert limit < counter.seconds < limit + 0.1  # one AAC frame (64 ms) past the limit, not five minutes


def _lying_webm(data: bytes, declared_ms: float) -> bytes:
    """``data`` (a WebM written by PyAV) with its segment Duration element (ID 0x4489, an 8-byte float, in ms)
    rewritten to ``declared_ms``."""
    at = data.index(b"\x44\x89\x88")
    assert struct.unpack(">d", data[at + 3:at + 11])[0] == pytest.approx(300_000, abs=100)
    return data[:at + 3] + struct.pack(">d", declared_ms) + data[at + 11:]


def test_a_container_whose_header_lies_stops_decoding_past_the_limit(long_containers: dict[str, bytes],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from parakeet_runtime.engine.requests.containers import declared_seconds

    lying = _lying_webm(long_containers["webm"], 1000.0)
    assert declared_seconds(long_containers["webm"]) == pytest.approx(300, abs=0.1)
    assert declared_seconds(lying) == 1.0  # five minutes inside, one second declared
    counter = _DecodeCounter(monkeypatch)
    started = time.monotonic()
    with pytest.raises(AudioTooLongError, match=r"audio of at least 30\.0 s is longer"):
        load_audio(lying, RATE, max_seconds=30)
    assert 30 < counter.seconds < 30.1  # Opus frames are 20 ms
    assert time.monotonic() - started < 1.0
    assert load_audio(lying, RATE).duration == pytest.approx(300, abs=0.1)  # without a limit: all of it


def test_a_container_within_the_limit_still_decodes(long_containers: dict[str, bytes]) -> None:
    for kind, seconds in (("m4a", 600), ("webm", 300), ("adts", 300)):
        audio = load_audio(long_containers[kind], RATE, max_seconds=seconds + 1)
        assert audio.duration == pytest.approx(seconds, abs=0.1)
        assert not np.any(audio.samples)


def _muxed(signal: np.ndarray, rate: int, fmt: str = "adts", codec: str = "aac") -> bytes:
    """``signal`` (``(n,)`` or ``(n, channels)`` float32 at ``rate``) encoded and muxed by PyAV (ADTS AAC by
    default)."""
    av = pytest.importorskip("av")
    planar = np.ascontiguousarray((signal[:, None] if signal.ndim == 1 else signal).T, dtype=np.float32)
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def _spoiled(data: bytes, marker: bytes, offset: int = 0) -> bytes:
    """``data`` with the byte ``offset`` past ``marker``'s last occurrence set to 0xFF (never valid UTF-8)."""
    at = data.rindex(marker) + offset
    return data[:at] + b"\xff" + data[at + 1:]


@pytest.mark.parametrize(("fmt", "codec", "marker", "offset"), [
    ("mp4", "aac", b"ftyp", 4),  # the major brand, which PyAV reads as metadata text
    ("webm", "libopus", b"Lavf", 0),  # the ENCODER tag's value
])
def test_metadata_that_is_not_utf8_does_not_stop_decoding(engine: Engine, fmt: str, codec: str, marker: bytes,
                                                          offset: int, tmp_path: Path) -> None:
    """Found by fuzzing: PyAV decoded the metadata strictly, so a stray byte in a tag raised a bare
    ``UnicodeDecodeError`` out of ``transcribe``. The metadata is now read with replacement characters."""
    spoiled = _spoiled(_muxed(_sample(), RATE, fmt, codec), marker, offset)
    path = tmp_path / f"spoiled.{fmt}"
    path.write_bytes(spoiled)
    for source in (spoiled, path):
        audio = load_audio(source, RATE)
        assert audio.duration == pytest.approx(len(_sample()) / RATE, abs=0.1)
        text = engine.transcribe(source).text
        assert text and text == engine.transcribe(audio.samples, sample_rate=RATE).text


def test_joined_adts_streams_with_other_channel_counts_are_mixed_frame_by_frame() -> None:
    """``cat mono.aac stereo.aac``: each decoded frame's channels are averaged as it comes (joining the frames
    first failed with numpy's ValueError, not a typed error)."""
    speech = _sample()
    mono, stereo = _muxed(speech, RATE), _muxed(np.stack([speech, speech], axis=1), RATE)
    joined = load_audio(mono + stereo, RATE)
    parts = load_audio(mono, RATE).duration + load_audio(stereo, RATE).duration
    assert joined.duration == pytest.approx(parts, abs=1e-6)
    assert np.all(np.isfinite(joined.samples)) and np.max(np.abs(joined.samples)) > 0.05


def test_joined_adts_streams_at_other_rates_are_refused() -> None:
    """Joined ADTS streams at 16 and 44.1 kHz: every sample was taken to be at the last frame's rate, which squashed
    the first stream (a wrong transcript, no error); now a typed refusal naming both rates."""
    pytest.importorskip("av")
    speech = _sample()
    faster = np.interp(np.arange(0, speech.shape[0], RATE / 44100), np.arange(speech.shape[0]), speech)
    joined = _muxed(speech, RATE) + _muxed(faster.astype(np.float32), 44100)
    with pytest.raises(AudioDecodeError, match=r"sample rate changes from 16000 to 44100 Hz"):
        load_audio(joined, RATE)


def test_a_container_is_decoded_in_bounded_blocks(long_containers: dict[str, bytes]) -> None:
    """Ten minutes of M4A are handed on in blocks of about :data:`CONTAINER_BLOCK` samples (all of it, joined before
    being mixed and resampled, held the source samples twice), and the result is the whole decode's."""
    from parakeet_runtime.engine.requests.containers import CONTAINER_BLOCK, container_blocks

    refusal = AudioDecodeError("not a file libsndfile reads")
    sizes = [block.shape[0] for block, rate in container_blocks(long_containers["m4a"], refusal)]
    assert sum(sizes) / RATE == pytest.approx(600, abs=0.1) and len(sizes) > 100
    assert max(sizes) < CONTAINER_BLOCK + 2048  # one AAC frame (1,024 samples) past the block at most


def test_a_stereo_container_at_another_rate_equals_decoding_it_whole() -> None:
    """The block-by-block mix and resampling of a container give the samples of mixing and resampling its whole
    decode at once (what the engine did before it streamed containers)."""
    av = pytest.importorskip("av")
    from parakeet_runtime.engine.requests.resample import resample

    rng = np.random.default_rng(3)
    speech = _sample()
    at = np.arange(0, 20 * 44100) / 44100 * RATE
    left = np.interp(at, np.arange(speech.shape[0]), speech, period=speech.shape[0])
    data = _muxed(np.stack([left, 0.3 * rng.standard_normal(left.shape[0])], axis=1).astype(np.float32), 44100)
    frames = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(container.streams.audio[0]):
            frames.append(frame.to_ndarray().T)
    whole = resample(np.concatenate(frames).mean(axis=1, dtype=np.float32), 44100, RATE)
    streamed = load_audio(data, RATE).samples
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


@pytest.mark.parametrize("trailer", [b"TAG" + bytes(125), b"\x00"], ids=["id3v1-tag", "one-zero-byte"])
def test_bytes_after_a_flac_stream_are_ignored(trailer: bytes) -> None:
    """A FLAC followed by an ID3v1 tag or any byte: the decoder ran on past the declared length into them and
    failed ("flac decoder lost sync"); soundfile (and NeMo) stop at the declared length, and now so does the engine."""
    buffer = io.BytesIO()
    soundfile.write(buffer, _sample(), RATE, format="FLAC", subtype="PCM_16")
    clean = load_audio(buffer.getvalue(), RATE).samples
    tagged = load_audio(buffer.getvalue() + trailer, RATE).samples
    np.testing.assert_array_equal(tagged, clean)
    assert clean.shape[0] == _sample().shape[0]


# --- FLAC headers that lie about the length ------------------------------------------------------------


def _flac_declaring(total_samples: int) -> tuple[bytes, bytes]:
    """The sample clip as FLAC, and the same file with STREAMINFO's total sample count set to ``total_samples``
    (0 means "unknown" in FLAC: a stream written to a pipe)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, _sample(), RATE, format="FLAC", subtype="PCM_16")
    honest = buffer.getvalue()
    assert honest[:4] == b"fLaC" and honest[4] & 0x7F == 0  # STREAMINFO first
    lying = bytearray(honest)
    lying[21] = (lying[21] & 0xF0) | ((total_samples >> 32) & 0x0F)  # the count's top 4 of 36 bits
    lying[22:26] = (total_samples & 0xFFFFFFFF).to_bytes(4, "big")
    return honest, bytes(lying)


@pytest.mark.parametrize("total_samples", [(1 << 36) - 1, 0], ids=["claims-50-days", "unknown-length"])
def test_a_flac_that_misstates_its_length_is_decoded_as_it_is(total_samples: int) -> None:
    """libsndfile trusts FLAC's declared length (and reports 2^63 - 1 frames for an unknown one): the engine
    reserves at most a bounded buffer from it and decodes what the file holds."""
    honest, lying = _flac_declaring(total_samples)
    assert soundfile.info(io.BytesIO(lying)).frames != soundfile.info(io.BytesIO(honest)).frames
    expected = load_audio(honest, RATE).samples
    np.testing.assert_array_equal(load_audio(lying, RATE).samples, expected)


def test_an_unknown_length_is_not_a_length_to_refuse() -> None:
    _, lying = _flac_declaring(0)
    got = load_audio(lying, RATE, max_seconds=60.0)
    assert got.duration == pytest.approx(_sample().shape[0] / RATE)
    with pytest.raises(AudioTooLongError):
        load_audio(lying, RATE, max_seconds=1.0)  # the blocks actually read still count


def test_a_float64_array_beyond_float32_is_refused_for_its_magnitude() -> None:
    with pytest.raises(AudioDecodeError, match="samples reach"):
        load_audio(np.full(1600, 1e300), RATE)


def test_a_named_pipe_is_read_as_its_bytes(tmp_path: Path) -> None:
    """A FIFO (a shell's process substitution) is read in Python, then decoded: libsndfile's own open of a FIFO
    waited for a writer while holding the GIL, freezing every thread (and Ctrl-C) of the process."""
    import os
    import threading

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    data = sample_audio_path().read_bytes()

    def write() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    piped = load_audio(str(fifo), RATE)
    writer.join(10)
    np.testing.assert_array_equal(piped.samples, load_audio(sample_audio_path(), RATE).samples)


def test_a_named_pipe_whose_writer_wrote_nothing_says_so(tmp_path: Path) -> None:
    """An empty pipe (a failed command behind a process substitution, an empty stdin) got libsndfile's "Format not
    recognised", which sends users looking for a codec problem."""
    import os
    import threading

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: open(fifo, "wb").close())
    writer.start()
    with pytest.raises(AudioDecodeError) as info:
        load_audio(str(fifo), RATE)
    writer.join(10)
    assert str(info.value) == f"cannot decode audio from {fifo}: the pipe gave no bytes (its writer wrote nothing)"


def test_an_unreadable_file_is_said_to_be_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file without read permission was "System error" (libsndfile's words), and a file in a folder that cannot
    be entered was "not found". (The tests run as root, who may read anything: the permission checks are faked.)"""
    clip = tmp_path / "clip.wav"
    clip.write_bytes(Path(sample_audio_path()).read_bytes())
    import os

    real_access, real_stat = os.access, os.stat
    monkeypatch.setattr(os, "access",
                        lambda path, mode, **kw: False if str(path) == str(clip) else real_access(path, mode, **kw))
    with pytest.raises(AudioDecodeError, match="permission denied") as refused:
        load_audio(clip, RATE)
    assert not isinstance(refused.value, FileNotFoundError)

    def no_entry(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path) == str(clip):
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", no_entry)
    with pytest.raises(AudioDecodeError, match="permission denied") as refused:
        load_audio(clip, RATE)
    assert not isinstance(refused.value, FileNotFoundError)


def test_a_missing_path_is_still_not_found(tmp_path: Path) -> None:
    from parakeet_runtime.engine import AudioFileNotFoundError

    for missing in (tmp_path / "nothing.wav", tmp_path / "clip.wav" / "below.wav"):
        if missing.parent != tmp_path:
            missing.parent.write_bytes(b"not a folder")
        with pytest.raises(AudioFileNotFoundError, match="not found"):
            load_audio(missing, RATE)


def test_an_engine_is_neither_copied_nor_pickled(engine: Engine) -> None:
    """A copy shared the original's worker, so dropping the original closed the copy; pickling failed inside
    onnxruntime."""
    import copy
    import pickle

    assert copy.copy(engine) is engine and copy.deepcopy(engine) is engine
    with pytest.raises(TypeError, match="load one in each process"):
        pickle.dumps(engine)


def test_encoded_audio_as_a_file_object_or_a_buffer(engine: Engine, tmp_path: Path) -> None:
    """An upload's file object, ``io.BytesIO``, an open file, ``bytearray`` and ``memoryview`` are encoded audio like
    ``bytes`` (they were refused as "unsupported audio input of type BytesIO"); a text-mode file and a closed one
    are a clear ``AudioDecodeError``, and the engine keeps serving."""
    data = sample_audio_path().read_bytes()
    expected = engine.transcribe(data)
    assert expected.text
    with sample_audio_path().open("rb") as handle:
        assert engine.transcribe(handle) == expected
    for given in (io.BytesIO(data), bytearray(data), memoryview(data)):
        assert engine.transcribe(given) == expected
    assert engine.transcribe([io.BytesIO(data), bytearray(data)]) == [expected, expected]
    assert asyncio.run(engine.transcribe_async(io.BytesIO(data))) == expected
    with sample_audio_path().open("r", encoding="latin-1") as text, pytest.raises(AudioDecodeError, match="binary"):
        engine.transcribe(text)  # type: ignore[call-overload]
    closed = sample_audio_path().open("rb")
    closed.close()
    with pytest.raises(AudioDecodeError, match="cannot read the file object"):
        engine.transcribe(closed)
    with pytest.raises(AudioDecodeError, match="unsupported audio input of type int"):
        engine.transcribe(3)  # type: ignore[call-overload]
    assert engine.transcribe(data) == expected


def test_warm_up_arguments_are_options_errors(engine: Engine) -> None:
    from parakeet_runtime.engine import OptionsError

    for seconds, batch, field in ((-1.0, 1, "seconds"), (float("nan"), 1, "seconds"), (1.0, 0, "batch")):
        with pytest.raises(OptionsError) as info:
            engine.warm_up(seconds, batch=batch)
        assert info.value.field == field and isinstance(info.value, ValueError)


def test_64_bit_integer_arrays_are_refused(engine: Engine) -> None:
    """NumPy's default integer type is int64: 16-bit values in it, scaled as 64-bit PCM, were silence (about 1e-15)
    and gave a transcript without a word and without an error; no audio format stores 64-bit PCM."""
    samples, rate = soundfile.read(sample_audio_path(), dtype="int16")
    for dtype in (np.int64, np.uint64):
        with pytest.raises(AudioDecodeError, match=r"not PCM .*astype"):
            engine.transcribe(samples.astype(dtype), sample_rate=rate)
    assert engine.transcribe(samples, sample_rate=rate).text == engine.transcribe(sample_audio_path()).text
