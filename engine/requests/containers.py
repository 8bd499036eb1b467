"""Containers libsndfile cannot read (MP4/M4A, Matroska/WebM, ADTS AAC), decoded with PyAV when installed.

:func:`read_container` is the fallback ``audio.py`` calls when soundfile refuses an input. Only inputs
whose first bytes say they are one of these containers go to PyAV; anything else gets soundfile's refusal
unchanged. Without PyAV, the refusal names the ``av`` extra that would read it.
"""

from __future__ import annotations

import io
import os

import numpy as np
import numpy.typing as npt

from ..errors import AudioDecodeError

AV_EXTRA_HINT = "install PyAV to read it: pip install 'parakeet-runtime[av]'"


def container_kind(head: bytes) -> str | None:
    """The container the first bytes (12 are enough) announce, or ``None`` for anything else."""
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:  # ADTS sync word, MPEG layer 0
        return "AAC (ADTS)"
    return None


def _head(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:12]
    try:
        with open(source, "rb") as handle:
            return handle.read(12)
    except OSError:
        return b""


def _as_float(array: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "i":
        return (array.astype(np.float64) / float(2 ** (8 * array.dtype.itemsize - 1))).astype(np.float32)
    if array.dtype.kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - half) / half).astype(np.float32)
    raise AudioDecodeError(f"PyAV returned samples of dtype {array.dtype}")


def read_container(
    source: str | os.PathLike[str] | bytes, refusal: AudioDecodeError
) -> tuple[npt.NDArray[np.float32], int]:
    """Decode ``source``'s first audio stream with PyAV, as float32 of shape ``(n, channels)`` and its rate.

    Args:
        source: the path or encoded bytes that soundfile refused.
        refusal: soundfile's error; raised as it is for inputs that are not a known container.

    Raises:
        AudioDecodeError: not a known container (``refusal``), PyAV missing (the message names the extra),
            or PyAV cannot decode it either.
    """
    kind = container_kind(_head(source))
    if kind is None:
        raise refusal
    try:
        import av
    except ImportError:
        raise AudioDecodeError(f"{refusal}; it is an {kind} container: {AV_EXTRA_HINT}") from refusal
    handle: str | io.BytesIO = os.fspath(source) if not isinstance(source, bytes) else io.BytesIO(source)
    chunks: list[npt.NDArray[np.float32]] = []
    try:
        with av.open(handle, mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{refusal}; the {kind} container has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or 0)
            channels = 0
            for frame in container.decode(stream):
                array = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
                channels = len(frame.layout.channels)
                samples = array.T if frame.format.is_planar else array.reshape(-1, channels)
                chunks.append(_as_float(samples))
                rate = int(frame.sample_rate) or rate
    except av.FFmpegError as exc:
        raise AudioDecodeError(f"{refusal}; PyAV cannot decode the {kind} container either: {exc}") from exc
    if not chunks:
        return np.zeros((0, max(channels, 1)), dtype=np.float32), rate
    return np.concatenate(chunks, axis=0), rate
