"""Containers libsndfile cannot read (MP4/M4A, Matroska/WebM, ADTS AAC), decoded with PyAV when installed.

:func:`container_blocks` is the fallback ``audio.py`` calls when soundfile refuses an input. Only inputs
whose first bytes say they are one of these containers go to PyAV; anything else gets soundfile's refusal
unchanged. Without PyAV, the refusal names the ``av`` extra that would read it.

Cost is bounded before the work: the length a container declares (MP4's track header, Matroska's segment
duration; :func:`declared_seconds`) is held to the caller's ``max_seconds`` before anything is decoded, and so
is the stream's sample rate (``MIN_SAMPLE_RATE``..``MAX_SAMPLE_RATE``). Decoding is incremental, and the decoded
samples are counted as they come: a container whose header lies about its length, or declares none (ADTS, a
WebM recorded live), is refused as soon as it has decoded past ``max_seconds``, never after decoding all of it;
and the samples are handed on in mono blocks, so a long container never sits in memory at its source rate and
channel count.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Generator
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import AudioDecodeError, AudioTooLongError
from ..model.manifest import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

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


def _describe(source: str | os.PathLike[str] | bytes) -> str:
    """How ``audio.py`` names an input in its errors."""
    return f"{len(source)} bytes of encoded audio" if isinstance(source, bytes) else os.fspath(source)


def _too_long(label: str, seconds: float, max_seconds: float, how: str) -> AudioTooLongError:
    return AudioTooLongError(
        f"{label}: audio of {how}{seconds:.1f} s is longer than the {max_seconds:g} s accepted "
        "(LongFormOptions.max_audio_seconds)", seconds=seconds, limit=max_seconds, at_least=bool(how),
    )


def _declared(container: Any, stream: Any, kind: str) -> float | None:
    """The length in seconds the container's header declares, or ``None``. ADTS declares none (FFmpeg's figure
    for it is an estimate from the bitrate, which can be wrong either way, so it is not used)."""
    if kind == "AAC (ADTS)":
        return None
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE
    return None


def declared_seconds(source: str | os.PathLike[str] | bytes) -> float | None:
    """The length a known container declares in its header (nothing is decoded), or ``None``: not a known
    container, no PyAV, unreadable, or no declared length (ADTS, a WebM written live). The header may lie; the
    decoder counts what it decodes all the same (:func:`container_blocks`)."""
    kind = container_kind(_head(source))
    if kind is None:
        return None
    try:
        import av
    except ImportError:
        return None
    handle: str | io.BytesIO = os.fspath(source) if not isinstance(source, bytes) else io.BytesIO(source)
    try:
        with av.open(handle, mode="r", metadata_errors="replace") as container:
            if not container.streams.audio:
                return None
            seconds = _declared(container, container.streams.audio[0], kind)
    except (av.FFmpegError, ValueError, OverflowError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


CONTAINER_BLOCK = 1 << 16
"""Decoded samples (per channel) gathered before a block is handed on: codec frames are small (AAC's are 1,024
samples), and each block costs a resampling step."""


def container_blocks(
    source: str | os.PathLike[str] | bytes, refusal: AudioDecodeError, max_seconds: float | None = None
) -> Generator[tuple[npt.NDArray[np.float32], int], None, None]:
    """Decode ``source``'s first audio stream with PyAV, block by block: mono float32 blocks (each decoded
    frame's channels averaged, so a stream whose channel count changes is read frame by frame) and their rate.
    Nothing is held beyond :data:`CONTAINER_BLOCK` samples at the source rate. A stream that decodes to
    nothing yields one empty block at its declared rate.

    Args:
        source: the path or encoded bytes that soundfile refused.
        refusal: soundfile's error; raised as it is for inputs that are not a known container.
        max_seconds: the longest audio accepted: a longer declared length is refused before decoding, and
            decoding stops as soon as more than this has been decoded.

    Raises:
        AudioDecodeError: not a known container (``refusal``), PyAV missing (the message names the extra),
            a sample rate outside ``MIN_SAMPLE_RATE``..``MAX_SAMPLE_RATE`` or one that changes within the
            stream (concatenated ADTS files), or PyAV cannot decode it either.
        AudioTooLongError: the container declares, or decodes to, more than ``max_seconds``.
    """
    kind = container_kind(_head(source))
    if kind is None:
        raise refusal
    try:
        import av
    except ImportError:
        raise AudioDecodeError(f"{refusal}; it is an {kind} container: {AV_EXTRA_HINT}") from refusal
    label = _describe(source)
    handle: str | io.BytesIO = os.fspath(source) if not isinstance(source, bytes) else io.BytesIO(source)
    pending: list[npt.NDArray[np.float32]] = []
    gathered = 0
    seconds = 0.0
    stream_rate = 0
    rate: int | None = None
    yielded = False
    try:
        with av.open(handle, mode="r", metadata_errors="replace") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{refusal}; the {kind} container has no audio stream")
            stream = container.streams.audio[0]
            stream_rate = _check_rate(int(stream.codec_context.sample_rate or 0), label, kind, allow_unknown=True)
            if max_seconds is not None:
                declared = _declared(container, stream, kind)
                if declared is not None and declared > max_seconds:
                    raise _too_long(label, declared, max_seconds, "")
            for frame in container.decode(stream):
                array = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
                channels = max(len(frame.layout.channels), 1)
                samples = array.T if frame.format.is_planar else array.reshape(-1, channels)
                frame_rate = _check_rate(int(frame.sample_rate) or stream_rate, label, kind, allow_unknown=False)
                if rate is not None and frame_rate != rate:
                    raise AudioDecodeError(
                        f"{label}: the sample rate changes from {rate} to {frame_rate} Hz after {seconds:.2f} s "
                        f"(joined {kind} streams?); convert it to one rate first")
                rate = frame_rate
                seconds += samples.shape[0] / rate
                if max_seconds is not None and seconds > max_seconds:
                    raise _too_long(label, seconds, max_seconds, "at least ")
                floats = _as_float(samples)
                pending.append(floats.mean(axis=1, dtype=np.float32) if floats.shape[1] > 1 else floats[:, 0])
                gathered += samples.shape[0]
                if gathered >= CONTAINER_BLOCK:
                    yield np.concatenate(pending), rate
                    yielded = True
                    pending, gathered = [], 0
    except av.FFmpegError as exc:
        reason = str(getattr(exc, "strerror", None) or exc)  # FFmpeg's words, without its errno and file name
        raise AudioDecodeError(f"{refusal}; PyAV cannot decode the {kind} container either: {reason}") from exc
    except UnicodeError as exc:  # text PyAV reads from the file (its metadata is read with replacement)
        raise AudioDecodeError(f"{refusal}; the {kind} container holds text that is not UTF-8: {exc}") from exc
    if pending or not yielded:
        block = np.concatenate(pending) if pending else np.zeros(0, dtype=np.float32)
        yield block, stream_rate if rate is None else rate


def _check_rate(rate: int, label: str, kind: str, *, allow_unknown: bool) -> int:
    """``rate``, or an error before anything (more) is decoded; 0 (not declared) passes when ``allow_unknown``
    (the decoded frames then say)."""
    if rate == 0 and allow_unknown:
        return rate
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"{label}: sample rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, found {rate} (the "
            f"{kind} container's audio stream)"
        )
    return rate
