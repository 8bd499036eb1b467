"""Audio input: files or arrays to mono float32 at the model's sample rate.

Files are read with soundfile (WAV, FLAC, OGG/Vorbis, Opus, MP3 where libsndfile has it, ...).
Integer PCM is scaled to [-1, 1); several channels are averaged; other sample rates are resampled
with soxr's high-quality filter (what librosa, and so NeMo, uses by default).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from parakeet_runtime.decoding import FloatArray

from ..errors import AudioDecodeError, AudioFileNotFoundError
from .containers import read_container

AudioInput: TypeAlias = "str | os.PathLike[str] | bytes | npt.NDArray[np.generic] | tuple[npt.NDArray[np.generic], int]"
"""A path, encoded file bytes, an array (at the model rate unless a rate is given), or ``(array, rate)``."""


@dataclass(frozen=True)
class Audio:
    """Decoded mono audio."""

    samples: FloatArray
    """Mono float32 samples, shape ``(n,)``."""
    sample_rate: int
    """Samples per second."""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return float(self.samples.shape[0]) / self.sample_rate


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return f"{len(source)} bytes of encoded audio"
    return f"<{type(source).__name__}>"


def _read_file(source: str | os.PathLike[str] | bytes) -> tuple[npt.NDArray[np.float32], int]:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise AudioFileNotFoundError(f"audio file not found: {path}")
        if os.path.isdir(path):
            raise AudioDecodeError(f"expected an audio file, found a directory: {path}")
        handle: str | io.BytesIO = path
    else:
        handle = io.BytesIO(source)
    try:
        data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        refusal = AudioDecodeError(f"cannot decode audio from {_describe(source)}: {_reason(exc)}")
        refusal.__cause__ = exc
        return read_container(source, refusal)  # PyAV for MP4/M4A, WebM, AAC; else raises the refusal
    return data, int(rate)


def _reason(exc: Exception) -> str:
    """Why soundfile refused, in libsndfile's words: its exception text names the file object it was given
    (``<_io.BytesIO object at 0x...>`` for bytes), which means nothing to the caller and must not reach a
    server's response. Other exceptions get a plain sentence; the original stays chained as ``__cause__``."""
    if isinstance(exc, soundfile.LibsndfileError):
        reason = str(exc.error_string).strip().rstrip(".")
        if reason:
            return reason
    if isinstance(exc, EOFError):
        return "the data ends before the audio it announces"
    return f"not an audio format libsndfile can read ({type(exc).__name__})"


def _as_float(array: npt.NDArray[np.generic], label: str) -> npt.NDArray[np.float32]:
    if array.dtype.kind == "f":
        return np.asarray(array, dtype=np.float32)
    if array.dtype.kind == "i":
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    if array.dtype.kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - half) / half).astype(np.float32)
    raise AudioDecodeError(f"{label}: expected float or integer PCM samples, found dtype {array.dtype}")


def load_audio(source: AudioInput, target_rate: int, *, sample_rate: int | None = None) -> Audio:
    """Decode ``source`` to mono float32 at ``target_rate``.

    Args:
        source: a path, encoded file bytes, an array, or ``(array, sample_rate)``. Arrays are
            ``(n,)`` or ``(n, channels)``.
        target_rate: the model's sample rate.
        sample_rate: rate of a bare array (default: ``target_rate``); ignored for files.

    Raises:
        AudioFileNotFoundError: a path that does not exist.
        AudioDecodeError: anything that is not decodable audio, or an array of the wrong shape/dtype.
    """
    label = _describe(source)
    if isinstance(source, tuple):
        if len(source) != 2 or not isinstance(source[0], np.ndarray):
            raise AudioDecodeError("expected an (array, sample_rate) pair")
        array, rate = source[0], source[1]
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
            raise AudioDecodeError(f"sample rate must be an integer, found {rate!r}")
        data, rate = _as_float(array, label), int(rate)
    elif isinstance(source, np.ndarray):
        data, rate = _as_float(source, label), sample_rate or target_rate
    elif isinstance(source, (str, os.PathLike, bytes)):
        data, rate = _read_file(source)
    else:
        raise AudioDecodeError(f"unsupported audio input of type {type(source).__name__}")

    if rate <= 0:
        raise AudioDecodeError(f"{label}: sample rate must be positive, found {rate}")
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    elif data.ndim != 1:
        raise AudioDecodeError(f"{label}: expected shape (n,) or (n, channels), found {data.shape}")
    if not np.all(np.isfinite(data)):
        raise AudioDecodeError(f"{label}: samples contain NaN or infinity")
    if rate != target_rate and data.shape[0] > 0:
        data = soxr.resample(data, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    return Audio(samples=np.ascontiguousarray(data, dtype=np.float32), sample_rate=target_rate)
