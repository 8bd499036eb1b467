"""Hostile audio: arrays of odd shapes, impossible sample rates, absurd amplitudes, and audio far longer than
the model takes, refused from its declared length before it is decoded or resampled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import soxr

from parakeet_runtime.engine import (
    AudioDecodeError,
    AudioTooLongError,
    BatchingOptions,
    Engine,
    load_audio,
    sample_audio_path,
)

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

    monkeypatch.setattr(soxr, "resample", refuse)


def _sample() -> np.ndarray:
    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    assert rate == RATE
    return np.asarray(samples)


# --- shapes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1600, 0), (0, 0), (3, 0)])
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


def test_no_samples_of_some_channels_is_empty_audio(engine: Engine) -> None:
    assert load_audio(np.zeros((0, 2), dtype=np.float32), RATE).samples.shape == (0,)
    assert engine.transcribe(np.zeros((0, 2), dtype=np.float32)).text == ""


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


def _encoder_limit_seconds(engine: Engine) -> float:
    spec = engine.manifest.encoder
    assert spec.max_frames is not None  # this model's encoder has a length limit
    return spec.max_frames * spec.subsampling_factor * engine.manifest.features.window_stride


def test_a_two_hour_flac_is_refused_before_decoding(engine: Engine, tmp_path: Path, no_resampling: None,
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
    for source in (path, path.read_bytes()):
        started = time.monotonic()
        with pytest.raises(AudioTooLongError, match=r"audio of 7200\.0 s is longer"):
            engine.transcribe(source)
        assert time.monotonic() - started < 1.0


def test_a_long_array_is_refused_before_resampling(engine: Engine, no_resampling: None) -> None:
    seconds = _encoder_limit_seconds(engine) + 60
    started = time.monotonic()
    with pytest.raises(AudioTooLongError):
        engine.transcribe((np.zeros(int(seconds * 1000), dtype=np.float32), 1000))
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_the_early_check_never_refuses_what_the_exact_check_accepts(engine: Engine, rate: int) -> None:
    """The longest audio the early check lets through is already too long for the exact check (on valid
    feature frames after resampling); so the exact check alone decides for all shorter audio."""
    preparer = engine.preparer
    longest = int(preparer.max_seconds * rate)
    audio = load_audio((np.zeros(longest, dtype=np.float32), rate), RATE, max_seconds=preparer.max_seconds)
    encoder = engine.manifest.encoder
    valid = engine.features.valid_frames(audio.samples.shape[0])
    assert encoder.max_frames is not None
    assert -(-valid // encoder.subsampling_factor) > encoder.max_frames
    with pytest.raises(AudioTooLongError):
        load_audio((np.zeros(longest + 1, dtype=np.float32), rate), RATE, max_seconds=preparer.max_seconds)


def test_audio_at_the_exact_limit_is_accepted(engine: Engine) -> None:
    encoder = engine.manifest.encoder
    hop = engine.manifest.features.hop_length
    assert encoder.max_frames is not None
    frames = encoder.max_frames * encoder.subsampling_factor
    candidates = range(frames * hop, frames * hop + 4 * hop)
    longest = next(n for n in candidates if engine.features.valid_frames(n + 1) > frames)
    assert engine.prepare(np.zeros(longest, dtype=np.float32)).valid_frames == frames
    with pytest.raises(AudioTooLongError):
        engine.prepare(np.zeros(longest + 1, dtype=np.float32))
