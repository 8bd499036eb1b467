"""Resampling to the model's rate: NeMo's polyphase filter, computed block by block.

NeMo's ``transcribe`` reads files through lhotse, which resamples with ``scipy.signal.resample_poly`` (where
torchaudio is not installed: NeMo's ASR install does not bring it): the ratio reduced to ``up / down``, a
Kaiser-windowed (β = 5) sinc low-pass of ``20 · max(up, down) + 1`` taps at ``1 / max(up, down)`` of Nyquist,
its taps rounded to float32 and scaled by ``up``, zero outside the signal, ``ceil(n · up / down)`` output
samples. This module computes the same samples (to float32 rounding: it adds in float64, SciPy in float32)
with numpy alone, and in a stream: each block of input yields the outputs whose filter windows it completes, so
an hour of 44.1 kHz audio is never held at its source rate. The filter is split into ``up`` phases; the
outputs of one phase read windows of the input ``down`` samples apart, which is one matrix product over a
strided view of the input.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

KAISER_BETA = 5.0
"""The Kaiser window's shape of ``resample_poly``'s default ``window=('kaiser', 5.0)``."""
HALF_LENGTH_FACTOR = 10
"""``resample_poly``'s filter half-length, in multiples of ``max(up, down)``."""
_STRIDED_MIN_ROWS = 16
"""Below this many outputs per phase in a block, a gather of every window is cheaper than a product per phase."""
_OUTPUTS_PER_PRODUCT = 1 << 16
"""Outputs computed at a time (bounds the temporary arrays of a block)."""
_DESIGN_CHUNK = 1 << 20
"""Taps designed at a time (bounds the design's float64 temporaries for the long filters of odd rates)."""
CACHED_MAX_TAPS: Final = 1 << 20
"""Filters up to this many taps are designed once per rate pair and kept (every common rate: 44.1 kHz → 16 kHz
has 8,821); longer ones (odd rates such as 88,199 Hz: 16000/88199, 1.76 M taps; 383,999 Hz: 7.7 M) are designed
for each stream and dropped with it, so that inputs at odd rates cannot fill memory with filters."""
_INPUT_CHUNK = 1 << 20
"""Samples :func:`resample` feeds its stream at a time (the stream keeps float64 copies of what it is given)."""


@dataclass(frozen=True, eq=False)
class PolyphaseFilter:
    """``resample_poly``'s filter for ``source_rate`` → ``target_rate``, split into phases (read-only arrays)."""

    up: int
    down: int
    half_length: int
    phases: npt.NDArray[np.float32]
    """``(up, taps)``: ``phases[p, j]`` is tap ``p + j · up`` of the filter (0 past its end), in reverse
    order of ``j``, so that a phase's output is its row times the input window in time order (float32: the
    taps are float32 values, as ``resample_poly``'s are for float32 signals)."""

    @property
    def taps(self) -> int:
        """Input samples one output reads."""
        return int(self.phases.shape[1])

    def output_length(self, input_length: int) -> int:
        """``ceil(input_length · up / down)``: the number of output samples of a signal of ``input_length``."""
        return -(-input_length * self.up // self.down)

    def last_input(self, output: int) -> int:
        """The index of the last input sample output ``output`` reads."""
        return (output * self.down + self.half_length) // self.up


def polyphase_filter(source_rate: int, target_rate: int) -> PolyphaseFilter:
    """``scipy.signal.resample_poly``'s default filter for the ratio, split into phases (kept per rate pair up
    to :data:`CACHED_MAX_TAPS` taps)."""
    if source_rate < 1 or target_rate < 1:
        raise ValueError(f"sample rates must be positive, got {source_rate} and {target_rate}")
    common = math.gcd(source_rate, target_rate)
    up, down = target_rate // common, source_rate // common
    if 2 * HALF_LENGTH_FACTOR * max(up, down) + 1 <= CACHED_MAX_TAPS:
        return _cached_filter(up, down)
    return _design(up, down)


@functools.lru_cache(maxsize=32)
def _cached_filter(up: int, down: int) -> PolyphaseFilter:
    return _design(up, down)


def _design(up: int, down: int) -> PolyphaseFilter:
    """SciPy's ``firwin(20 · max + 1, 1 / max, window=('kaiser', 5.0))`` for ``max = max(up, down)``, rounded to
    float32 and scaled by ``up`` as ``resample_poly`` does, designed :data:`_DESIGN_CHUNK` taps at a time."""
    widest = max(up, down)
    half_length = HALF_LENGTH_FACTOR * widest
    taps = 2 * half_length + 1
    cutoff = 1.0 / widest
    centre = 0.5 * (taps - 1)
    h = np.empty(taps, dtype=np.float64)
    for start in range(0, taps, _DESIGN_CHUNK):
        m = np.arange(start, min(taps, start + _DESIGN_CHUNK), dtype=np.float64) - centre
        window = np.i0(KAISER_BETA * np.sqrt(np.maximum(0.0, 1.0 - (m / centre) ** 2))) / np.i0(KAISER_BETA)
        h[start : start + m.shape[0]] = cutoff * np.sinc(cutoff * m) * window
    h /= np.sum(h)
    per_phase = (taps - 1) // up + 1
    padded = np.zeros(per_phase * up, dtype=np.float32)
    padded[:taps] = h  # rounded to float32 as resample_poly rounds the taps to a float32 signal's dtype
    del h
    padded *= np.float32(up)
    phases = np.ascontiguousarray(padded.reshape(per_phase, up).T[:, ::-1])
    phases.setflags(write=False)
    return PolyphaseFilter(up=up, down=down, half_length=half_length, phases=phases)


class PolyphaseStream:
    """One signal resampled block by block: the outputs of :func:`resample` over the blocks joined.

    Not shared between requests: each decode creates its own (the filter it reads is shared, read-only).
    """

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self._filter = polyphase_filter(source_rate, target_rate)
        taps = self._filter.taps
        self._buffer = np.zeros(taps, dtype=np.float64)  # inputs -taps .. -1 are zeros (outside the signal)
        self._start = -taps  # the input index of _buffer[0]
        self._received = 0
        self._emitted = 0
        self._finished = False

    def push(self, block: npt.NDArray[np.float32], *, last: bool = False) -> npt.NDArray[np.float32]:
        """The outputs that ``block`` (the next input samples) completes; with ``last``, every remaining one.

        Raises:
            RuntimeError: the stream was already given its last block.
        """
        if self._finished:
            raise RuntimeError("this resampling stream has had its last block")
        self._finished = last
        filt = self._filter
        self._buffer = np.concatenate((self._buffer, np.asarray(block, dtype=np.float64)))
        self._received += int(block.shape[0])
        if last:
            end = filt.output_length(self._received)
            needed = filt.last_input(end - 1) + 1 if end > 0 else 0
            missing = needed - (self._start + self._buffer.shape[0])
            if missing > 0:
                self._buffer = np.concatenate((self._buffer, np.zeros(missing, dtype=np.float64)))
        else:
            end = self._first_incomplete()
        outputs = self._compute(self._emitted, end)
        self._emitted = max(self._emitted, end)
        keep_from = filt.last_input(self._emitted) - filt.taps + 1 - self._start
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._start += keep_from
        return outputs

    def _first_incomplete(self) -> int:
        """The first output whose window reaches past the samples received."""
        filt = self._filter
        # last_input(k) <= received - 1  <=>  k·down + half_length < received·up
        return max(0, -(-(self._received * filt.up - filt.half_length) // filt.down))

    def _compute(self, begin: int, end: int) -> npt.NDArray[np.float32]:
        """Outputs ``begin .. end - 1`` as float32, :data:`_OUTPUTS_PER_PRODUCT` at a time."""
        out = np.empty(max(end - begin, 0), dtype=np.float32)
        for first in range(begin, end, _OUTPUTS_PER_PRODUCT):
            stop = min(end, first + _OUTPUTS_PER_PRODUCT)
            out[first - begin : stop - begin] = self._outputs(first, stop)
        return out

    def _outputs(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        """Outputs ``begin .. end - 1`` from the buffer (every window they read is in it)."""
        filt = self._filter
        up, down, taps = filt.up, filt.down, filt.taps
        count = end - begin
        rows = count // up
        result = np.empty(count, dtype=np.float64)
        buffer = self._buffer
        lowest = (begin * down + filt.half_length) // up - taps + 1 - self._start
        highest = ((end - 1) * down + filt.half_length) // up - self._start
        if lowest < 0 or highest >= buffer.shape[0]:  # the index arithmetic above is wrong: never read outside
            raise RuntimeError(f"resampler windows {lowest}..{highest} outside its buffer of {buffer.shape[0]}")
        if rows >= _STRIDED_MIN_ROWS:
            for offset in range(up):
                position = (begin + offset) * down + filt.half_length
                first_input = position // up - taps + 1 - self._start
                n = (count - offset - 1) // up + 1
                windows = np.lib.stride_tricks.as_strided(
                    buffer[first_input:], shape=(n, taps), strides=(down * buffer.itemsize, buffer.itemsize),
                    writeable=False)
                result[offset::up] = windows @ filt.phases[position % up].astype(np.float64)
            return result
        outputs = np.arange(begin, end, dtype=np.int64)
        positions = outputs * down + filt.half_length
        starts = positions // up - taps + 1 - self._start
        windows = buffer[starts[:, None] + np.arange(taps, dtype=np.int64)[None, :]]
        gathered: npt.NDArray[np.float64] = np.einsum("kj,kj->k", windows, filt.phases[positions % up],
                                                      dtype=np.float64)
        return gathered


def resample(samples: npt.NDArray[np.float32], source_rate: int, target_rate: int) -> npt.NDArray[np.float32]:
    """``samples`` (mono float32) at ``target_rate``: ``scipy.signal.resample_poly``'s result, to float32
    rounding (``samples`` itself when the rates are equal)."""
    if source_rate == target_rate:
        return samples
    stream = PolyphaseStream(source_rate, target_rate)
    parts = [stream.push(samples[start : start + _INPUT_CHUNK], last=start + _INPUT_CHUNK >= samples.shape[0])
             for start in range(0, samples.shape[0], _INPUT_CHUNK)]
    return np.concatenate(parts) if parts else stream.push(samples, last=True)
