"""The engine's resampler against ``scipy.signal.resample_poly`` (what NeMo's ``transcribe`` resamples files
with), whole and block by block."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import resample_poly

from parakeet_runtime.engine.requests.resample import PolyphaseStream, polyphase_filter, resample

TARGET = 16000
RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000, 96000, 192000, 44056, 16001, 88199, 1000, 384000)
"""Common rates, rates with a large reduced ratio (44056 Hz: 2000/5507; 16001 Hz: 16000/16001; 88199 Hz, whose
filter is too long to keep) and the engine's extremes."""


def _signal(n: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _scipy(x: np.ndarray, rate: int, target: int = TARGET) -> np.ndarray:
    common = math.gcd(rate, target)
    result: np.ndarray = resample_poly(x, target // common, rate // common)
    return result


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("length", [1, 7, 1000, 40_123])
def test_resample_is_scipys_resample_poly(rate: int, length: int) -> None:
    x = _signal(length)
    expected = _scipy(x, rate)
    got = resample(x, rate, TARGET)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # float32 rounding (SciPy adds in float32)


@pytest.mark.parametrize("rate", [8000, 44100, 48000, 16001])
def test_blocks_of_any_size_give_the_whole_signals_samples(rate: int) -> None:
    x = _signal(50_000, seed=1)
    whole = resample(x, rate, TARGET)
    rng = np.random.default_rng(rate)
    stream = PolyphaseStream(rate, TARGET)
    parts, start = [], 0
    while start < x.shape[0]:
        size = int(rng.integers(1, 6000))
        parts.append(stream.push(x[start : start + size], last=start + size >= x.shape[0]))
        start += size
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=2e-7)  # a float32 step, whatever the BLAS adds first


def test_an_empty_stream_and_the_same_rate() -> None:
    assert PolyphaseStream(44100, TARGET).push(np.zeros(0, dtype=np.float32), last=True).shape == (0,)
    x = _signal(100)
    assert resample(x, TARGET, TARGET) is x


def test_an_empty_last_block_ends_the_stream() -> None:
    """A file of exactly a whole number of read blocks ends with an empty read."""
    x = _signal(30_000, seed=2)
    stream = PolyphaseStream(44100, TARGET)
    streamed = np.concatenate([stream.push(x[:15_000]), stream.push(x[15_000:]),
                               stream.push(np.zeros(0, dtype=np.float32), last=True)])
    np.testing.assert_allclose(streamed, _scipy(x, 44100), rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError):
        stream.push(x[:10])  # nothing after the last block


def test_odd_rates_get_filters_of_their_own() -> None:
    """A rate whose reduced ratio is large (88,199 Hz: 16000/88199, 1.76 M taps) is designed for its stream and
    not kept, so inputs at many odd rates cannot fill memory; common rates share one filter."""
    assert polyphase_filter(88199, TARGET) is not polyphase_filter(88199, TARGET)
    assert polyphase_filter(48000, TARGET) is polyphase_filter(48000, TARGET)


def test_the_filter_is_shared_read_only() -> None:
    first = polyphase_filter(44100, TARGET)
    assert polyphase_filter(44100, TARGET) is first
    assert (first.up, first.down) == (160, 441)
    with pytest.raises(ValueError):
        first.phases[0, 0] = 1.0
