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


@dataclass(frozen=True, eq=False)
class PolyphaseFilter:
    """``resample_poly``'s filter for ``source_rate`` → ``target_rate``, split into phases (read-only arrays)."""

    up: int
    down: int
    half_length: int
    phases: npt.NDArray[np.float64]
    """``(up, taps)``: ``phases[p, j]`` is tap ``p + j · up`` of the filter (0 past its end), in reverse
    order of ``j``, so that a phase's output is its row times the input window in time order."""

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


@functools.lru_cache(maxsize=16)
def polyphase_filter(source_rate: int, target_rate: int) -> PolyphaseFilter:
    """``scipy.signal.resample_poly``'s default filter for the ratio, split into phases (cached per pair)."""
    if source_rate < 1 or target_rate < 1:
        raise ValueError(f"sample rates must be positive, got {source_rate} and {target_rate}")
    common = math.gcd(source_rate, target_rate)
    up, down = target_rate // common, source_rate // common
    widest = max(up, down)
    half_length = HALF_LENGTH_FACTOR * widest
    taps = 2 * half_length + 1
    cutoff = 1.0 / widest
    m = np.arange(taps, dtype=np.float64) - 0.5 * (taps - 1)
    h = cutoff * np.sinc(cutoff * m)
    h *= np.kaiser(taps, KAISER_BETA)
    h /= np.sum(h)
    h32 = h.astype(np.float32)  # resample_poly rounds the taps to the signal's dtype, then scales them
    h32 *= np.float32(up)
    per_phase = (taps - 1) // up + 1
    padded = np.zeros(per_phase * up, dtype=np.float64)
    padded[:taps] = h32
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

    def push(self, block: npt.NDArray[np.float32], *, last: bool = False) -> npt.NDArray[np.float32]:
        """The outputs that ``block`` (the next input samples) completes; with ``last``, every remaining one."""
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
        out = np.empty(max(end - begin, 0), dtype=np.float32)
        for first in range(begin, end, _OUTPUTS_PER_PRODUCT):
            last = min(end, first + _OUTPUTS_PER_PRODUCT)
            out[first - begin : last - begin] = self._outputs(first, last)
        return out

    def _outputs(self, begin: int, end: int) -> npt.NDArray[np.float64]:
        """Outputs ``begin .. end - 1`` from the buffer (every window they read is in it)."""
        filt = self._filter
        up, down, taps = filt.up, filt.down, filt.taps
        count = end - begin
        rows = count // up
        result = np.empty(count, dtype=np.float64)
        if rows >= _STRIDED_MIN_ROWS:
            buffer = self._buffer
            for offset in range(up):
                output = begin + offset
                position = output * down + filt.half_length
                first_input = position // up - taps + 1 - self._start
                n = (count - offset - 1) // up + 1
                windows = np.lib.stride_tricks.as_strided(
                    buffer[first_input:], shape=(n, taps), strides=(down * buffer.itemsize, buffer.itemsize),
                    writeable=False)
                result[offset::up] = windows @ filt.phases[position % up]
            return result
        outputs = np.arange(begin, end, dtype=np.int64)
        positions = outputs * down + filt.half_length
        starts = positions // up - taps + 1 - self._start
        windows = self._buffer[starts[:, None] + np.arange(taps, dtype=np.int64)[None, :]]
        gathered: npt.NDArray[np.float64] = np.einsum("kj,kj->k", windows, filt.phases[positions % up])
        return gathered


def resample(samples: npt.NDArray[np.float32], source_rate: int, target_rate: int) -> npt.NDArray[np.float32]:
    """``samples`` (mono float32) at ``target_rate``: ``scipy.signal.resample_poly``'s result, to float32
    rounding."""
    if source_rate == target_rate:
        return samples
    return PolyphaseStream(source_rate, target_rate).push(samples, last=True)
