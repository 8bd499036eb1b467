"""Log-mel features in numpy, matching NeMo's ``FilterbankFeatures`` as ``transcribe()`` runs it
(eval mode: no dither, no padding to a multiple of ``pad_to``).

The window and the mel filterbank are NeMo's own buffers, saved by ``convert-model``, so nothing
here re-derives librosa's filter design.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from parakeet_runtime.decoding import FloatArray

from ..errors import ManifestError
from .manifest import FeatureSpec

NORMALIZE_EPS = 1e-5
"""NeMo's ``CONSTANT`` added to the standard deviation."""
LONG_BLOCK_FRAMES = 6_000
"""Feature frames :meth:`FeatureExtractor.long_features` computes at once (a minute at a 10 ms stride: about
70 MB of float64 intermediates at a 512-point FFT)."""
NORMALIZE_ROWS = 8
"""Feature rows a long signal's normalisation works on at once (its temporary copies are that many rows)."""


@dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """Computes ``(n_mels, frames)`` features and the valid frame count for one signal."""

    spec: FeatureSpec
    window: FloatArray
    """Window of ``win_length`` samples (NeMo's ``featurizer.window``)."""
    filterbank: FloatArray
    """Mel filterbank, shape ``(n_mels, n_fft // 2 + 1)`` (NeMo's ``featurizer.fb``)."""

    @classmethod
    def load(cls, spec: FeatureSpec, model_dir: Path) -> FeatureExtractor:
        """Load the window and filterbank arrays named by ``spec``. Each array's ``.npy`` header is read
        first: an array of another shape or dtype is refused before anything is allocated, so a header
        declaring a huge shape costs nothing; the values must be finite.

        Raises:
            ManifestError: the arrays are missing, unreadable, of the wrong shape or dtype, or not finite.
        """
        path = model_dir / spec.arrays_file
        shapes = {"window": (spec.win_length,), "filterbank": (spec.n_mels, spec.n_fft // 2 + 1)}
        try:
            with zipfile.ZipFile(path) as archive:
                window, filterbank = (_npz_array(archive, spec.arrays_file, key, shapes[key]) for key in shapes)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise ManifestError(f"{spec.arrays_file}: cannot read window/filterbank arrays ({exc})") from exc
        window.setflags(write=False)
        filterbank.setflags(write=False)
        return cls(spec=spec, window=window, filterbank=filterbank)

    def valid_frames(self, num_samples: int) -> int:
        """NeMo's ``get_seq_len``: frames that carry signal (the STFT returns one more)."""
        if num_samples == 0:
            return 0
        return max(0, self._stft_frames(num_samples) - 1)

    def __call__(self, samples: FloatArray) -> tuple[FloatArray, int]:
        """Features for one mono signal at the model's rate.

        Args:
            samples: float32 samples, shape ``(n,)``, ``n >= 1``.

        Returns:
            ``(features, valid)``: features of shape ``(n_mels, frames)`` (float32) and the number of
            valid frames; frames past ``valid`` hold ``pad_value``.
        """
        mel, valid = self._log_mel(samples)
        mel = _normalize(mel, valid, self.spec.normalize)
        mel[:, valid:] = self.spec.pad_value
        return np.ascontiguousarray(mel, dtype=np.float32), valid

    def long_features(self, samples: FloatArray, *, block_frames: int = LONG_BLOCK_FRAMES) -> tuple[FloatArray, int]:
        """:meth:`__call__`'s features of a signal of any length, in bounded working memory: the log-mel
        frames are computed ``block_frames`` at a time (each block from its samples and enough samples
        around them that none of its frames sees the block's edges, so every frame is the one ``__call__``
        computes), then normalised over the whole signal in place, :data:`NORMALIZE_ROWS` rows at a time.
        Beyond the float32 result, memory holds one block's float64 intermediates.

        Raises:
            ValueError: an empty signal, or ``block_frames < 1``.
        """
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        spec = self.spec
        num_samples = samples.shape[0]
        hop = spec.hop_length
        total = self._stft_frames(num_samples)
        if total <= 2 * block_frames:
            return self(samples)
        # A frame reads at most n_fft samples on either side of its start (padding, pre-emphasis and NeMo's
        # masking after exact padding included): a margin of whole hops beyond that keeps edges away.
        margin = (2 * spec.n_fft // hop + 2) * hop
        mel = np.empty((spec.n_mels, total), dtype=np.float32)
        for first in range(0, total, block_frames):
            last = min(first + block_frames, total)
            start = max(0, first * hop - margin)
            block, _ = self._log_mel(samples[start : min(num_samples, last * hop + margin)])
            offset = start // hop
            mel[:, first:last] = block[:, first - offset : last - offset]
        valid = self.valid_frames(num_samples)
        _normalize_in_place(mel, valid, spec.normalize)
        mel[:, valid:] = spec.pad_value
        return mel, valid

    def _stft_frames(self, num_samples: int) -> int:
        """Frames the STFT gives for ``num_samples`` samples (valid frames and the padding frame after them; at
        most 0 for a signal too short for one)."""
        spec = self.spec
        padded = num_samples + (((spec.n_fft - spec.hop_length) // 2) * 2 if spec.exact_pad else (spec.n_fft // 2) * 2)
        return 1 + (padded - spec.n_fft) // spec.hop_length

    def _log_mel(self, samples: FloatArray) -> tuple[FloatArray, int]:
        """Log-mel frames of one signal before normalisation (float32, every STFT frame) and the valid count.

        Raises:
            ValueError: an empty signal.
        """
        spec = self.spec
        num_samples = samples.shape[0]
        if num_samples == 0:
            raise ValueError("cannot compute features of an empty signal")
        valid = self.valid_frames(num_samples)
        x = samples.astype(np.float64)

        if spec.exact_pad:
            amount = (spec.n_fft - spec.hop_length) // 2
            x = np.pad(x, (amount, amount))
        if spec.preemph is not None:
            x = np.concatenate((x[:1], x[1:] - spec.preemph * x[:-1]))
            x[num_samples:] = 0.0  # NeMo masks by the original length, also after exact padding
        if not spec.exact_pad:
            half = spec.n_fft // 2
            x = np.pad(x, (half, half))

        if x.shape[0] < spec.n_fft:  # too short for one STFT frame (exact padding pads less than n_fft)
            return np.zeros((spec.n_mels, 0), dtype=np.float32), valid
        window = np.zeros(spec.n_fft, dtype=np.float64)
        left = (spec.n_fft - spec.win_length) // 2
        window[left : left + spec.win_length] = self.window
        frames = np.lib.stride_tricks.sliding_window_view(x, spec.n_fft)[:: spec.hop_length]
        spectrum = np.fft.rfft(frames * window, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        if spec.mag_power != 2.0:
            power = np.sqrt(power) ** spec.mag_power
        mel = (self.filterbank.astype(np.float64) @ power.T).astype(np.float32)

        if spec.log:
            guard = np.float32(spec.log_zero_guard_value)
            mel = np.log(mel + guard) if spec.log_zero_guard_type == "add" else np.log(np.maximum(mel, guard))
        return mel, valid


def _npz_array(archive: zipfile.ZipFile, label: str, key: str, shape: tuple[int, ...]) -> FloatArray:
    """The float32 array ``key`` of an ``.npz`` archive, checked against ``shape`` from its header before its
    data is read, and checked to be finite after.

    Raises:
        ManifestError: no such array, another shape, a dtype other than float32/float64, missing data, or
            NaN/infinite values.
    """
    try:
        member = archive.getinfo(f"{key}.npy")
    except KeyError:
        raise ManifestError(f"{label}: has no {key!r} array") from None
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            found, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            found, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ManifestError(f"{label}: {key} is in .npy format version {version}, expected 1.0 or 2.0")
        if tuple(found) != shape:
            raise ManifestError(f"{label}: {key} has shape {tuple(found)}, expected {shape}")
        if dtype.kind != "f" or dtype.itemsize not in (4, 8) or dtype.hasobject:
            raise ManifestError(f"{label}: {key} has dtype {dtype}, expected float32 or float64")
        size = int(np.prod(shape)) * dtype.itemsize
        data = stream.read(size)
    if len(data) != size:
        raise ManifestError(f"{label}: {key} holds {len(data)} bytes of data, its header announces {size}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    if not np.all(np.isfinite(array)):
        raise ManifestError(f"{label}: {key} contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def _normalize(mel: FloatArray, valid: int, kind: str) -> FloatArray:
    """NeMo's ``normalize_batch`` for one signal, in float32 and in torch's order of operations.

    The statistics are float32 sums as torch's CPU kernel forms them (:func:`torch_float32_sum`). For a
    constant row (digital silence) the standard deviation is nothing but the rounding error of the mean,
    and dividing by it turns that error into an offset of the whole row (NeMo's silence is -0.16, not 0),
    so it has to be NeMo's rounding: such rows come out bit-identical. Elsewhere the normalisation agrees
    with NeMo's to two units in the last place; what differences remain come from the log-mel itself
    (float64 here, float32 and MKL's ``log`` in torch), which nearly-constant rows (DC, near-silence)
    amplify.
    """
    if kind == "per_feature":
        return _normalize_per_feature(mel, valid)
    if kind == "all_features":
        return _normalize_all_features(mel, valid)
    return mel


def _normalize_per_feature(mel: FloatArray, valid: int) -> FloatArray:
    mean, std = per_feature_statistics(mel, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized: FloatArray = (mel - mean[:, None]) / std[:, None]
    return normalized


def per_feature_statistics(mel: FloatArray, valid: int) -> tuple[FloatArray, FloatArray]:
    """The mean and the standard deviation (plus ``NORMALIZE_EPS``) of each row over the first ``valid``
    frames, as NeMo's ``normalize_batch`` computes them on the CPU.

    In torch's order: ``x_mean = where(valid, x, 0).sum(2) / count`` and ``x_std = sqrt((where(valid,
    x - x_mean, 0) ** 2).sum(2) / (count - 1))``, NaN (one valid frame) as 0, then ``+ CONSTANT``; all
    float32. The masked sums run over every frame, padding included, because the row length decides how
    torch splits a sum. The means are bit-identical to torch's; the deviations can differ by one unit in
    the last place, because torch's float32 ``sqrt`` on x86 is MKL's (faithfully, not correctly, rounded).

    Args:
        mel: float32 log-mel features, shape ``(n_mels, frames)``.
        valid: frames that carry signal.

    Returns:
        ``(mean, std)``, each float32 of shape ``(n_mels,)``.
    """
    zero = np.float32(0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        masked = mel.copy()
        masked[:, valid:] = zero
        mean = torch_float32_sum(masked) / np.float32(valid)
        centered = mel - mean[:, None]
        squares = centered * centered
        squares[:, valid:] = zero
        std = np.sqrt(torch_float32_sum(squares) / np.float32(valid - 1.0))
        std[np.isnan(std)] = zero
        std += np.float32(NORMALIZE_EPS)
    return mean, std


def _normalize_in_place(mel: FloatArray, valid: int, kind: str) -> None:
    """:func:`_normalize` of a long signal's features, written into ``mel`` and computed a few rows at a time
    (the statistics' temporary copies stay small). Per-feature: each row's statistics are its own, so the
    values are :func:`_normalize`'s exactly. All features: the float32 mean is formed in the same order; the
    float64 sum of squares is added up in groups of rows (its float32 result can differ in the last place)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "per_feature":
            for first in range(0, mel.shape[0], NORMALIZE_ROWS):
                part = mel[first : first + NORMALIZE_ROWS]
                mean, std = per_feature_statistics(part, valid)
                part -= mean[:, None]
                part /= std[:, None]
        elif kind == "all_features" and valid > 0:
            overall_mean, overall_std = _all_features_statistics(mel, valid, NORMALIZE_ROWS)
            mel -= overall_mean
            mel /= overall_std


def _normalize_all_features(mel: FloatArray, valid: int) -> FloatArray:
    if valid == 0:
        return mel  # no frame to normalise over (the caller returns an empty transcript)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, std = _all_features_statistics(mel, valid, mel.shape[0])
        normalized: FloatArray = (mel - mean) / std
    return normalized


def _all_features_statistics(mel: FloatArray, valid: int, rows_at_once: int) -> tuple[np.float32, np.float32]:
    """The mean and the standard deviation (plus ``NORMALIZE_EPS``) of ``mel[:, :valid]`` (``valid >= 1``), as
    NeMo's ``normalize_batch`` computes them with ``all_features``; the float64 squares are summed
    ``rows_at_once`` rows at a time (all rows: NeMo's one sum; fewer bound the float64 copy, and the sum can then
    differ in its last place).

    x[:, :valid].mean() and .std() of the 2-D slice: torch sums the slice row by row (each row as in
    torch_float32_sum, the row sums added in order) and divides by its size in float32; the standard deviation
    is computed in float64 about that float32 mean and rounded to float32. This is torch's single-threaded
    order, which torch also takes for slices under 32768 elements (its grain size); for larger slices with
    several threads torch splits the sum between threads, and its own result then depends on its thread count
    (by a float32 rounding of the mean, which matters only when the features are nearly constant)."""
    groups = [mel[first : first + rows_at_once, :valid] for first in range(0, mel.shape[0], rows_at_once)]
    size = mel.shape[0] * valid
    if valid == 1:  # a single strided column: one scalar cascade over it
        total = _row_sum(mel[:, :1].reshape(1, -1, 1))[0, 0]
    else:
        total = np.float32(0.0)
        for group in groups:
            for row_sum in torch_float32_sum(group):
                total = np.float32(total + row_sum)
    mean = np.float32(total / np.float32(size))
    squares = sum(float(np.sum((group.astype(np.float64) - float(mean)) ** 2)) for group in groups)
    std = np.float32(np.sqrt(squares / max(0.0, size - 1.0)))
    return mean, np.float32(std + np.float32(NORMALIZE_EPS))


TORCH_SUM_LANES = 8
"""Float32 lanes of torch's vectorised CPU sum on x86. The sum kernel is not registered for AVX-512 (torch
falls back to its AVX2 kernel there), so AVX-512, AVX2 and the scalar default build all sum in 8 lanes
(checked against torch with ``ATEN_CPU_CAPABILITY`` forced to each). Not checked on ARM builds."""

_ILP = 4
"""Independent accumulators ATen's ``row_sum`` interleaves (``ilp_factor``)."""
_LEVELS = 4
"""Levels of ATen's cascade (``num_levels`` in ``multi_row_sum``)."""


def torch_float32_sum(x: FloatArray) -> FloatArray:
    """Sum of each row of ``x`` (shape ``(rows, n)``, float32) rounded exactly as torch's CPU
    ``x.sum(-1)`` rounds it for a contiguous float32 row (ATen ``SumKernel.cpp``, ``cascade_sum``).

    Rows of at least ``TORCH_SUM_LANES`` elements are read as vectors of that many lanes, summed in a
    four-way interleaved cascade (blocks of 16, block sums carried up in levels), then the leftover
    elements and the lanes are added in order; shorter rows go through the same cascade one element at
    a time. Every step is one float32 addition, so the result is bit-identical; the work is vectorised
    over the rows and costs a few numpy calls per 512 vectors.
    """
    rows, n = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    if n < TORCH_SUM_LANES:
        return _row_sum(x[:, :, None])[:, 0]
    vectors = n // TORCH_SUM_LANES
    lanes = _row_sum(x[:, : vectors * TORCH_SUM_LANES].reshape(rows, vectors, TORCH_SUM_LANES))
    total = np.zeros(rows, dtype=np.float32)
    for k in range(vectors * TORCH_SUM_LANES, n):
        total = total + x[:, k]
    for k in range(TORCH_SUM_LANES):
        total = total + lanes[:, k]
    return total


def _row_sum(data: FloatArray) -> FloatArray:
    """ATen ``row_sum``: ``data`` of shape ``(rows, size, lanes)`` -> ``(rows, lanes)``."""
    rows, size = data.shape[:2]
    interleaved = size // _ILP
    partial = _multi_row_sum(data[:, : interleaved * _ILP].reshape(rows, interleaved, _ILP, data.shape[2]))
    first = partial[:, 0]
    for i in range(interleaved * _ILP, size):
        first = first + data[:, i]
    for k in range(1, _ILP):
        first = first + partial[:, k]
    return first


def _multi_row_sum(data: FloatArray) -> FloatArray:
    """ATen ``multi_row_sum``: ``data`` of shape ``(rows, size, columns, lanes)`` -> ``(rows, columns, lanes)``."""
    rows, size = data.shape[:2]
    power = max(4, _ceil_log2(size) // _LEVELS)
    step = 1 << power
    blocks = size // step
    zero = np.zeros((rows, *data.shape[2:]), dtype=np.float32)
    acc = [zero] * _LEVELS
    if blocks:
        # Each block is summed from zero in order ...
        grouped = data[:, : blocks * step].reshape(rows, blocks, step, *data.shape[2:])
        block_sums = _sequential_sum(grouped, axis=2)
        # ... and carried up a level, and further up after every step**level elements.
        for b in range(blocks):
            done = (b + 1) * step
            acc[1] = acc[1] + block_sums[:, b]
            for level in range(2, _LEVELS):
                if done & ((step - 1) << ((level - 1) * power)):
                    break
                acc[level] = acc[level] + acc[level - 1]
                acc[level - 1] = zero
    if size > blocks * step:
        acc[0] = _sequential_sum(data[:, blocks * step :], axis=1)
    result = acc[0]
    for level in range(1, _LEVELS):
        result = result + acc[level]
    return result


def _sequential_sum(data: FloatArray, axis: int) -> FloatArray:
    """Left-to-right float32 sum along ``axis`` (not empty), one addition at a time."""
    parts = np.moveaxis(data, axis, 0)
    total: FloatArray = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def _ceil_log2(x: int) -> int:
    """ATen ``utils::CeilLog2`` (1 for ``x <= 2``)."""
    return 1 if x <= 2 else (x - 1).bit_length()
