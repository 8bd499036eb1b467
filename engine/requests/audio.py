"""Audio input: files or arrays to mono float32 at the model's sample rate.

Files are read with soundfile (WAV, FLAC, OGG/Vorbis, Opus, MP3 where libsndfile has it, ...).
Integer PCM is scaled to [-1, 1); several channels are averaged; other sample rates are resampled with NeMo's
own filter (``scipy.signal.resample_poly``'s, computed block by block: :mod:`.resample`).

Nothing a file holds is dropped silently: every logical stream of a chained Ogg file (``cat a.ogg b.ogg``, an
internet-radio capture) is decoded in order, each resampled from its own rate (:mod:`.ogg`; libsndfile alone
decodes the first), and so is every FLAC stream of files joined with ``cat`` (:func:`.flac.appended_streams`),
and every frame of a FLAC whose header understates its length (:func:`.flac.frames_total`; libsndfile stops at
the declared length), every WAV of files joined with ``cat`` (:func:`.riff.appended_wavs`; libsndfile refuses
them), every MP3 of files joined with ``cat`` whose first declares its length (:func:`.mpeg.appended_mp3s`;
libsndfile stops there) and the audio after a WAV ``data`` chunk that understates its size
(:func:`.riff.data_size`);
a FLAC cut short at its end gives the audio before the cut with a logged warning, while one damaged in the
middle is refused (:mod:`.flac`); and a file that holds less audio than its header declares
(an MP3 or Ogg file cut short) is read as far as it goes, with a logged warning. (A WAV cut short reads every
whole sample it holds, without a warning: libsndfile corrects its declared length to the file's.) Each warning
is also kept in :attr:`Audio.warnings`, and the request's transcript carries it (``Transcript.warnings``): a
caller who configured no logging, or a server's client, still learns that part of the recording was missing.

Hostile input is refused early with :class:`AudioDecodeError`: sample rates outside
:data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE` (and rates that are not integers, ``True`` included)
before anything is resampled, arrays without channels or of an ambiguous orientation, non-finite samples
and samples beyond :data:`MAX_ABS_SAMPLE`; audio longer than the caller's limit
(:class:`AudioTooLongError`) is refused from its declared length before it is decoded or resampled.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeAlias

import numpy as np
import numpy.typing as npt
import soundfile

try:  # libsndfile's own read, through soundfile's handle (see _read_block)
    from soundfile import _ffi as _sndfile_ffi
    from soundfile import _snd as _sndfile
except ImportError:  # a soundfile without these internals: its public read
    _sndfile = _sndfile_ffi = None

from parakeet_runtime.decoding import FloatArray

from ..errors import AudioDecodeError, AudioFileNotFoundError, AudioTooLongError
from ..model.manifest import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .containers import container_blocks
from .flac import FlacInfo, TooManyCandidatesError, appended_streams, content_end, flac_info, frames_total, last_frame
from .mpeg import appended_mp3s
from .ogg import MAX_LINKS, ByteRange, OggLayout, is_ogg, ogg_layout
from .resample import PolyphaseStream, resample
from .riff import PatchedReader, appended_wavs, data_size
from .riff import patched as riff_patched

logger = logging.getLogger(__name__)

MAX_CHANNELS = 8
"""An array axis this short (or shorter) and shorter than the other axis is the channel axis."""
MAX_ABS_SAMPLE = 1e6
"""Samples beyond this magnitude are refused. Float audio is normally within [-1, 1]; floats at integer
PCM scale (int16: ±32768, int24: ±8.4e6 is beyond) still transcribe, because the features are normalised.
Values near 1e15 overflow the float32 mel power and turn the transcript into "⁇"; the bound leaves a wide
margin below that and is far beyond any plausible signal."""

AudioInput: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | npt.NDArray[np.generic]"
    " | tuple[npt.NDArray[np.generic], int]"
)
"""A path, encoded file bytes (``bytes``, ``bytearray``, ``memoryview``, or a binary file object such as an open file
or ``io.BytesIO``, read to its end), an array (at the model rate unless a rate is given), or ``(array, rate)``."""


@dataclass(frozen=True)
class Audio:
    """Decoded mono audio."""

    samples: FloatArray
    """Mono float32 samples, shape ``(n,)``."""
    sample_rate: int
    """Samples per second."""
    warnings: tuple[str, ...] = ()
    """What the reader accepted imperfect, one human-readable sentence each (a FLAC or Ogg file cut short, a file
    holding less audio than its header declares): the transcript of this audio carries them
    (``Transcript.warnings``), so that a caller learns that part of the recording was missing without reading the
    log. Empty for a clean file and for arrays."""

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


BLOCK_FRAMES = 1 << 18
"""Frames a file is read (and resampled) in at a time: about 6 s at 44.1 kHz. A long file never sits in memory
at its source rate and channel count, and an undecodable one fails in its first block."""
MAX_PREALLOCATED = 1 << 26
"""Samples reserved at most from a file's declared length (256 MiB, 70 minutes at 16 kHz; pages are touched only
as samples arrive): a FLAC header can declare any length (libsndfile trusts its STREAMINFO), so a longer file's
buffer grows as it is read instead."""
UNKNOWN_LENGTH = 1 << 62
"""libsndfile reports ``SF_COUNT_MAX`` (2^63 - 1) frames for a stream of unknown length (a FLAC written to a
pipe): any declared length from here on means "unknown", not a length to check or reserve."""


MAX_PIPE_BYTES = 4 << 30
"""Most bytes read from a named pipe (a FIFO, a shell's process substitution), which is read whole first."""


def _is_pipe(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _read_pipe(path: str, label: str) -> bytes:
    """The bytes of a named pipe, up to :data:`MAX_PIPE_BYTES`. Read with Python's own I/O, which lets other
    threads (and the main thread's signal handlers) run while it waits for a writer; libsndfile's open held the
    GIL, so one FIFO nothing wrote to froze the whole process, Ctrl-C and SIGTERM included."""
    chunks: list[bytes] = []
    size = 0
    try:
        with open(path, "rb") as pipe:
            while chunk := pipe.read(1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_PIPE_BYTES:
                    raise AudioDecodeError(f"{label}: more than {MAX_PIPE_BYTES >> 30} GiB from a pipe; save the "
                                           "audio to a file first")
    except OSError as exc:
        raise AudioDecodeError(f"{label}: cannot read the pipe: {exc.strerror or exc}") from exc
    return b"".join(chunks)  # one full-size copy (a bytearray turned into bytes held two)


def _open_file(source: str | os.PathLike[str] | bytes) -> str | io.BytesIO:
    """A path checked to name a readable file (or a pipe), or the bytes of an encoded file."""
    if not isinstance(source, (str, os.PathLike)):
        if not source:  # an empty upload: libsndfile would say "Format not recognised", as for an empty file
            raise AudioDecodeError(f"cannot decode audio from {_describe(source)}: the file is empty")
        return io.BytesIO(source)
    path = os.fspath(source)
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise AudioFileNotFoundError(f"audio file not found: {path}") from None
    except PermissionError:  # a folder on the way that cannot be entered: the file may well exist
        raise AudioDecodeError(f"cannot read {path}: permission denied (a folder on its path cannot be entered)"
                               ) from None
    except (OSError, ValueError) as exc:  # a name too long, a loop of links, a NUL character
        raise AudioDecodeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    mode = found.st_mode
    if stat.S_ISDIR(mode):
        raise AudioDecodeError(f"expected an audio file, found a directory: {path}")
    if not stat.S_ISFIFO(mode) and not os.access(path, os.R_OK):
        raise AudioDecodeError(f"cannot read {path}: permission denied")
    if stat.S_ISREG(mode) and found.st_size == 0:  # libsndfile would say "Format not recognised"
        raise AudioDecodeError(f"cannot decode audio from {path}: the file is empty (0 bytes)")
    return path


class _Samples:
    """Mono float32 blocks gathered into one array (grown geometrically when the header's length was short)."""

    def __init__(self) -> None:
        self._data = np.empty(0, dtype=np.float32)
        self._size = 0

    def reserve(self, expected: int) -> None:
        """Room for ``expected`` more samples (at most :data:`MAX_PREALLOCATED`: a header can declare anything):
        exactly that for the first part, at least double for a later one (a chained Ogg file of thousands of
        short links would otherwise copy everything decoded so far once per link)."""
        needed = self._size + min(max(expected, 0), MAX_PREALLOCATED)
        if needed > self._data.shape[0]:
            grown = np.empty(needed if self._size == 0 else max(needed, 2 * self._data.shape[0]), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown

    def append(self, block: npt.NDArray[np.float32]) -> None:
        needed = self._size + block.shape[0]
        if needed > self._data.shape[0]:
            grown = np.empty(max(needed, 2 * self._data.shape[0]), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = block
        self._size = needed

    def array(self) -> npt.NDArray[np.float32]:
        return self._data[: self._size] if self._size == self._data.shape[0] else self._data[: self._size].copy()


@dataclass(frozen=True)
class _Part:
    """One stream soundfile decodes: the whole file, or one link of a chained Ogg file."""

    opened: str | io.BytesIO | io.RawIOBase
    """What soundfile opens: a path, or a file object (the bytes of an upload, a patched WAV, a link's range)."""
    where: str = ""
    """Where it lies, for errors: empty for the whole file, else which chained stream."""


@dataclass(frozen=True)
class _Plan:
    parts: tuple[_Part, ...]
    ogg: OggLayout | None = None
    """The page layout of an Ogg file (``None`` for other formats)."""
    warnings: tuple[str, ...] = ()
    """What the plan works around (a FLAC header that understates its length), for the transcript."""


@contextlib.contextmanager
def _planned(handle: str | io.BytesIO, label: str) -> Iterator[_Plan]:
    """What to decode: the file as it is, or (a chained Ogg file) each of its links through a :class:`ByteRange`
    onto one open file, so that a long file is never copied; a WAV whose ``data`` chunk leaves audio unread, or a
    FLAC stream whose header understates its length, through a :class:`PatchedReader` that declares what it holds.
    A path is opened once; files it opens are closed on exit.

    Raises:
        AudioDecodeError: a chain with a multiplexed link (several logical streams at once, e.g. video), or with
            more than :data:`~.ogg.MAX_LINKS` links.
    """
    with contextlib.ExitStack() as stack:
        raw: BinaryIO
        if isinstance(handle, io.BytesIO):
            raw = handle
        else:
            try:
                raw = stack.enter_context(open(handle, "rb"))
            except OSError:  # libsndfile says why
                yield _Plan((_Part(handle),))
                return
        try:
            unfinished = data_size(raw)  # a WAV's data chunk that leaves audio unread: read to the end, as FFmpeg does
            raw.seek(0)  # libsndfile reads from where the file stands
        except OSError:  # a read error: the search for joined streams below meets it too
            unfinished = None
        if unfinished is not None:
            reader = stack.enter_context(contextlib.closing(riff_patched(raw, unfinished, owns=False)))
            yield _Plan((_Part(reader),), warnings=(f"{label}: {reader.note}",) if reader.note else ())
            return
        try:
            streams = _joined_streams(raw)
            raw.seek(0)
        except OSError:  # a read error: libsndfile says why
            yield _Plan((_Part(handle),))
            return
        ranges, kind, layout = streams.ranges, streams.kind, streams.ogg
        if len(ranges) <= 1:  # one stream (a multiplexed Ogg one included: libsndfile's as before)
            fix = None if streams.flac is None else _flac_fix(raw, streams.flac, label, "")
            if fix is None:
                yield _Plan((_Part(handle),), layout)
            else:
                yield _Plan((_Part(fix[0]),), layout, (fix[1],))
            return
        most = MAX_LINKS if layout is not None else MAX_FILES
        if len(ranges) > most:
            raise AudioDecodeError(f"cannot decode audio from {label}: {len(ranges)} {kind}s one after another; at "
                                   f"most {most} are decoded")
        for number, link in enumerate(layout.links if layout is not None else (), 1):
            if link.streams > 1:
                raise AudioDecodeError(
                    f"cannot decode audio from {label}: chained Ogg stream {number} of {len(ranges)} (from byte "
                    f"{link.start}) multiplexes {link.streams} logical streams (video with audio?); extract the "
                    "audio first (ffmpeg -vn)")
        logger.debug("%s: %d %ss, decoded one after another", label, len(ranges), kind)
        parts, warnings = [], []
        for number, (start, end) in enumerate(ranges, 1):
            where = f"{kind} {number} of {len(ranges)} (from byte {start})"
            stream, warning = _fixed_range(raw, start, end, kind, label, where)
            if warning:
                warnings.append(warning)
            parts.append(_Part(stream, where))
        yield _Plan(tuple(parts), layout, tuple(warnings))


def _understated(raw: BinaryIO, info: FlacInfo, label: str, where: str) -> tuple[int, str] | None:
    """Where a FLAC stream's STREAMINFO understates its length (its frames run past the samples it declares, where
    libsndfile would stop, silently): the samples per channel its frames hold (:func:`.flac.frames_total`) and the
    warning that says so; ``None`` for a stream whose header declares no length, or enough."""
    if not info.total_samples or info.sample_rate <= 0:
        return None
    try:
        total = frames_total(raw, info)
    except OSError:  # a read error: libsndfile says why when it decodes
        return None
    finally:
        raw.seek(0)
    if total is None or total <= info.total_samples:
        return None
    rate = info.sample_rate
    return total, (
        f"{label}{where}: the FLAC header declares {info.total_samples / rate:.2f} s of audio, but its frames run to "
        f"{total / rate:.2f} s (a header that understates the length); transcribing all of them")


def _fixed_range(raw: BinaryIO, start: int, end: int, kind: str, label: str,
                 where: str) -> tuple[io.RawIOBase, str | None]:
    """One of several streams joined in a file, as libsndfile should read it: its bytes, or a view whose header
    declares what it holds (a FLAC whose STREAMINFO understates its length, a WAV whose ``data`` chunk does), and
    the warning that goes with it."""
    stream = typing.cast(BinaryIO, ByteRange(raw, start, end))
    if kind == _WAV_FILES:
        found = data_size(stream)
        stream.seek(0)  # libsndfile reads from where the stream stands
        if found is not None:
            patched = riff_patched(stream, found, owns=False)
            return patched, f"{label} ({where}): {patched.note}" if patched.note else None
    info = flac_info(stream) if kind == _FLAC_STREAMS else None
    fix = None if info is None else _flac_fix(stream, info, label, f" ({where})")
    return fix if fix is not None else (ByteRange(raw, start, end), None)


def _flac_fix(stream: BinaryIO, info: FlacInfo, label: str, where: str) -> tuple[PatchedReader, str] | None:
    """A view of the FLAC stream ``stream`` (left open) whose STREAMINFO declares what its frames hold, where its
    own understates it, and the warning that says so; ``None`` where the header is honest."""
    declared = _understated(stream, info, label, where)
    if declared is None:
        return None
    return PatchedReader(stream, *info.declaring(declared[0]), owns=False), declared[1]


_WAV_FILES = "WAV file"
_FLAC_STREAMS = "FLAC stream"
MAX_FILES = 1000
"""Files joined with ``cat`` (WAV, FLAC, MP3) decoded at most: each costs a decoder set-up, and a joined "file" can
be a few dozen bytes, so an upload of many thousands is refused (chained Ogg links: :data:`~.ogg.MAX_LINKS`)."""
MAX_SKIP_WARNINGS = 10
"""Streams of a joined file named in warnings of one kind (could not be decoded, declare less than they hold); past
these, one warning counts the rest."""


@dataclass(frozen=True)
class _Streams:
    """The streams one file holds one after another: the links of a chained Ogg file, or FLAC files joined."""

    ranges: tuple[tuple[int, int], ...]
    """Each stream's byte range, in order (one range over the whole file when it holds one stream)."""
    kind: str
    """What a stream is called in messages: ``chained Ogg stream`` or ``FLAC stream``."""
    ogg: OggLayout | None = None
    """The page layout of an Ogg file (``None`` for other formats)."""
    flac: FlacInfo | None = None
    """STREAMINFO of a FLAC file's first stream (``None`` for other formats)."""


def _joined_streams(raw: BinaryIO) -> _Streams:
    """Where the streams of ``raw`` (seekable; left anywhere) begin and end: the one place that finds them, for
    decoding (:func:`_planned`) and for the length check before it (:func:`joined_seconds`)."""
    raw.seek(0)
    if is_ogg(raw.read(4)):
        layout = ogg_layout(raw)
        return _Streams(tuple((link.start, link.end) for link in layout.links), "chained Ogg stream", layout)
    info = flac_info(raw)
    end = raw.seek(0, io.SEEK_END)
    if info is None:
        for find, kind in ((appended_wavs, _WAV_FILES), (appended_mp3s, "MP3 file")):
            starts = find(raw, MAX_FILES)
            if starts:
                return _Streams(tuple(zip([0, *starts], [*starts, end], strict=True)), kind)
    starts = [0, *appended_streams(raw, info)] if info is not None else [0]
    return _Streams(tuple(zip(starts, [*starts[1:], end], strict=True)), _FLAC_STREAMS, flac=info)


def _warn(warnings: list[str], message: str) -> None:
    """Log ``message`` and keep it in ``warnings`` (the request's own list), for the transcript to carry."""
    logger.warning("%s", message)
    warnings.append(message)


def joined_seconds(data: bytes) -> float | None:
    """The length the headers of a chained Ogg file's links, or of files joined with ``cat`` (WAV, FLAC, MP3),
    declare all together, a FLAC stream's as its frames hold where its header understates it (nothing is decoded);
    ``None`` when ``data`` is none of these (or one stream whose header is honest: ``soundfile.info`` reads its
    length), or a stream's header says no length. ``soundfile.info`` sees only the first stream, and believes a
    FLAC header that understates, so a length check before decoding needs this one."""
    raw = io.BytesIO(data)
    streams = _joined_streams(raw)
    ranges = streams.ranges
    if len(ranges) <= 1:
        info = streams.flac
        declared = None if info is None else _understated(raw, info, "", "")
        return None if info is None or declared is None else declared[0] / info.sample_rate
    seconds = 0.0
    for start, end in ranges[: MAX_LINKS if streams.ogg is not None else MAX_FILES]:
        try:
            opened, _ = _fixed_range(raw, start, end, streams.kind, "", "")
            info = soundfile.info(opened)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
            continue  # a stream libsndfile cannot open is skipped when decoded (and declares nothing)
        frames, rate = int(info.frames), int(info.samplerate)
        if rate <= 0 or not 0 <= frames < UNKNOWN_LENGTH:
            return None
        seconds += frames / rate
    return seconds


def _read_file(
    source: str | os.PathLike[str] | bytes, target_rate: int, max_seconds: float | None
) -> tuple[npt.NDArray[np.float32], tuple[str, ...]]:
    """A file decoded block by block, each block mixed to mono, checked and resampled (:class:`PolyphaseStream`:
    the same samples as resampling all at once) to ``target_rate``; a chained Ogg file link by link. Returns the
    samples and the warnings of what was accepted imperfect (:attr:`Audio.warnings`), in the order they arose."""
    label = _describe(source)
    handle = _open_file(source)
    if isinstance(handle, str) and _is_pipe(handle):
        source = _read_pipe(handle, label)  # read here: libsndfile would wait for a writer holding the GIL
        if not source:  # libsndfile would say "Format not recognised"
            raise AudioDecodeError(f"cannot decode audio from {label}: the pipe gave no bytes (its writer wrote "
                                   "nothing)")
        handle = io.BytesIO(source)
    part = _Part(handle)
    try:
        with _planned(handle, label) as plan:
            samples = _Samples()
            warnings: list[str] = []
            for message in plan.warnings[:MAX_SKIP_WARNINGS]:
                _warn(warnings, message)
            if len(plan.warnings) > MAX_SKIP_WARNINGS:
                _warn(warnings, f"{label}: {len(plan.warnings) - MAX_SKIP_WARNINGS} more of its streams declare less "
                                "audio than they hold; all of it transcribed")
            seconds = 0.0
            skipped: list[soundfile.LibsndfileError] = []
            for part in plan.parts:
                try:
                    seconds += _decode_part(part, samples, label, target_rate, max_seconds, warnings,
                                            before=seconds)
                except soundfile.LibsndfileError as exc:
                    # a link of a chain that libsndfile cannot open (header pages only, a malformed or empty
                    # stream): the other links' audio is kept, and the transcript says what was skipped
                    if len(plan.parts) == 1 or isinstance(exc, _DecodeStopped):
                        raise
                    skipped.append(exc)
                    if len(skipped) <= MAX_SKIP_WARNINGS:
                        _warn(warnings, f"{label} ({part.where}): could not be decoded ({_reason(exc)}); skipped")
            if len(skipped) == len(plan.parts):
                raise skipped[0]
            if len(skipped) > MAX_SKIP_WARNINGS:
                _warn(warnings, f"{label}: {len(skipped) - MAX_SKIP_WARNINGS} more of its {len(plan.parts)} streams "
                                "could not be decoded either; skipped")
            links = plan.ogg.links if plan.ogg is not None else ()
            for number, link in enumerate(links[:-1], 1):
                if not link.ended:
                    _warn(warnings, f"{label}: chained Ogg stream {number} of {len(links)} (from byte {link.start}) "
                                    "ends without its stream's last page (cut short where the next stream begins); "
                                    "transcribing what its complete pages hold")
            if plan.ogg is not None and plan.ogg.cut_short:
                _warn(warnings, f"{label}: the Ogg data is cut short (it ends inside a page, or before its stream's "
                                f"last page); transcribing the {seconds:.2f} s its complete pages hold")
            return samples.array(), tuple(warnings)
    except MemoryError as exc:
        raise AudioDecodeError(f"{label}: not enough memory to decode this audio") from exc
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        if isinstance(exc, (AudioDecodeError, AudioTooLongError)):
            raise
        where = f" ({part.where})" if part.where else ""
        refusal = AudioDecodeError(f"cannot decode audio from {label}{where}: {_reason(exc)}")
        refusal.__cause__ = exc
        # PyAV (MP4/M4A, WebM, AAC): it warns of nothing
        return _read_container(source, refusal, target_rate, max_seconds, label), ()


def _decode_part(part: _Part, samples: _Samples, label: str, target_rate: int, max_seconds: float | None,
                 warnings: list[str], *, before: float) -> float:
    """Decode ``part`` block by block onto ``samples``; its length in seconds. ``before``: seconds decoded
    before it (earlier links of a chain), counted against ``max_seconds``; what it accepts imperfect (a FLAC cut
    short, less audio than the header declares) is logged and added to ``warnings``."""
    with soundfile.SoundFile(part.opened) as audio_file:
        rate = _check_rate(int(audio_file.samplerate), label)
        declared = int(audio_file.frames)
        known = 0 <= declared < UNKNOWN_LENGTH
        if max_seconds is not None and known:
            _check_duration(declared, rate, max_seconds, label, before=before)
        resampler = None if rate == target_rate else PolyphaseStream(rate, target_rate)
        samples.reserve(-(-declared * target_rate // rate) + 16 if known else BLOCK_FRAMES)
        per_read = max(1, min(BLOCK_FRAMES, 2 * BLOCK_FRAMES // max(1, audio_file.channels)))
        read = 0
        while True:
            # never past the declared length: a decoder reading on into bytes after the audio (an ID3 tag
            # after a FLAC stream) fails there, where soundfile (and so NeMo) stops at the declared length
            wanted = min(per_read, declared - read) if known else per_read
            cut = False
            try:
                block = _read_block(audio_file, wanted)
            except _DecodeStopped as stopped:
                block, message = _cut_short(stopped, audio_file, part, read, label)
                _warn(warnings, message)
                cut = True
            last = cut or block.shape[0] < wanted or (known and read + block.shape[0] >= declared)
            read += block.shape[0]
            if max_seconds is not None:  # a header that could not say: counted as it is decoded
                _check_duration(read, rate, max_seconds, label, before=before, at_least=True)
            mono = _checked(_mono(block, label, channels_last=True), label)
            samples.append(mono if resampler is None else resampler.push(mono, last=last))
            if last:
                if known and read < declared and not cut:
                    _warn(warnings, f"{label}{_where(part)}: the file holds {read / rate:.2f} s of audio where its "
                                    f"header declares {declared / rate:.2f} s (cut short?); transcribing the "
                                    f"{read / rate:.2f} s it holds")
                return float(read) / rate


def _where(part: _Part) -> str:
    return f" ({part.where})" if part.where else ""


def _cut_short(stopped: _DecodeStopped, audio_file: soundfile.SoundFile, part: _Part, read: int,
               label: str) -> tuple[npt.NDArray[np.float32], str]:
    """The last block of a FLAC cut short at its end (the frames libsndfile decoded before the cut), and the
    warning that says so; a FLAC damaged where audio follows, or any other format's decoding error, is raised.

    Raises:
        AudioDecodeError: a FLAC that valid frames follow after the damage, or more bytes than a frame can hold
            (zeros at the end aside: a preallocated recording), or cut short within its first frame.
        _DecodeStopped: not a FLAC (libsndfile's error as it is).
    """
    if audio_file.format != "FLAC":
        raise stopped
    with contextlib.ExitStack() as stack:
        stream: BinaryIO
        if isinstance(part.opened, str):
            try:
                stream = stack.enter_context(open(part.opened, "rb"))
            except OSError:
                raise stopped from None
        elif isinstance(part.opened, (io.BytesIO, ByteRange, PatchedReader)):
            # bytes, one of several FLAC streams joined in one file, or a FLAC whose declared length was patched
            stream = typing.cast(BinaryIO, part.opened)
        else:
            raise stopped
        info = flac_info(stream)
        try:
            last = None if info is None else last_frame(stream, info)
        except TooManyCandidatesError as exc:
            raise AudioDecodeError(f"cannot decode audio from {label}{_where(part)}: {_reason(stopped)}, and {exc} "
                                   "follow: the file is damaged, not cut short") from stopped
        after = 0 if info is None or last is None else content_end(stream, last.offset) - last.offset
    if info is None:
        raise stopped
    decoded = read + stopped.block.shape[0]
    rate = int(audio_file.samplerate)
    reason = _reason(stopped)
    if last is not None and last.sample > decoded:
        raise AudioDecodeError(
            f"cannot decode audio from {label}{_where(part)}: {reason} after {decoded / rate:.2f} s of audio, and "
            f"audio follows (a frame at {last.sample / rate:.2f} s): the file is damaged there, not cut short"
        ) from stopped
    if after > info.frame_bound:  # a cut-off last frame is shorter than any frame can be
        raise AudioDecodeError(
            f"cannot decode audio from {label}{_where(part)}: {reason} after {decoded / rate:.2f} s of audio, and "
            f"{after} bytes that are not FLAC frames follow the last frame (more than a frame of this stream can "
            "hold): the file is damaged there, not cut short"
        ) from stopped
    if decoded == 0:
        raise AudioDecodeError(f"cannot decode audio from {label}{_where(part)}: {reason}: the file is cut short "
                               "within its first frame") from stopped
    declared = int(audio_file.frames)
    of = f" of the {declared / rate:.2f} s its header declares" if 0 < declared < UNKNOWN_LENGTH else ""
    return stopped.block, (f"{label}{_where(part)}: the FLAC file is cut short: decoding stopped after "
                           f"{decoded / rate:.2f} s{of} ({reason}) and no frame follows; transcribing the "
                           f"{decoded / rate:.2f} s before the cut")


def _read_container(source: str | os.PathLike[str] | bytes, refusal: AudioDecodeError, target_rate: int,
                    max_seconds: float | None, label: str) -> npt.NDArray[np.float32]:
    """A container soundfile refused, decoded by PyAV in mono blocks (:func:`container_blocks`, which counts the
    length against ``max_seconds``), each checked and resampled as it comes, as :func:`_read_file` does."""
    samples = _Samples()
    samples.reserve(BLOCK_FRAMES)
    resampler: PolyphaseStream | None = None
    rate: int | None = None
    try:
        with contextlib.closing(container_blocks(source, refusal, max_seconds)) as blocks:  # closes PyAV's file
            for block, block_rate in blocks:
                if rate is None:
                    rate = _check_rate(block_rate, label)
                    resampler = None if rate == target_rate else PolyphaseStream(rate, target_rate)
                mono = _checked(block, label)
                samples.append(mono if resampler is None else resampler.push(mono))
        if resampler is not None:
            samples.append(resampler.push(np.zeros(0, dtype=np.float32), last=True))
    except MemoryError as exc:
        raise AudioDecodeError(f"{label}: not enough memory to decode this audio") from exc
    return samples.array()


def _read_block(audio_file: soundfile.SoundFile, frames: int) -> npt.NDArray[np.float32]:
    """The next ``frames`` frames (fewer at the end) as float32 ``(frames, channels)``.

    Read with libsndfile's own ``sf_readf_float`` on soundfile's handle (soundfile's private ``_snd``/``_ffi``):
    soundfile's ``read`` asks libsndfile for the position before and after every read, and for a FLAC whose
    header overstates its length (any number a hostile file declares) or leaves it unknown (written to a pipe)
    that seek fails although the data reads fine. libsndfile itself still stops at a FLAC's declared length
    when the header understates it, as soundfile (and so NeMo) does: :func:`_planned` gives it a view whose header
    declares what the frames hold (:func:`_understated`). The samples are soundfile's: its
    ``read(dtype="float32")`` calls the same function."""
    handle = getattr(audio_file, "_file", None)
    if _sndfile is None or _sndfile_ffi is None or handle is None:
        block: npt.NDArray[np.float32] = audio_file.read(frames, dtype="float32", always_2d=True)
        return block
    out = np.empty((frames, audio_file.channels), dtype=np.float32)
    count = int(_sndfile.sf_readf_float(handle, _sndfile_ffi.cast("float *", out.ctypes.data), frames))
    error = int(_sndfile.sf_error(handle))
    if error:
        raise _DecodeStopped(error, out[:count])
    return out[:count]


class _DecodeStopped(soundfile.LibsndfileError):  # type: ignore[misc]  # soundfile has no type hints
    """libsndfile's error in a read, with the frames that read gave before it (a FLAC cut short: the frames
    before the cut)."""

    def __init__(self, code: int, block: npt.NDArray[np.float32]) -> None:
        super().__init__(code)
        self.block = block


def _checked(data: npt.NDArray[np.float32], label: str) -> npt.NDArray[np.float32]:
    """``data``, unless it holds NaN, infinity or samples beyond ±:data:`MAX_ABS_SAMPLE`."""
    _check_peak(data, label)
    return data


def _check_peak(data: npt.NDArray[np.generic], label: str) -> None:
    """Refuse float samples holding NaN, infinity or values beyond ±:data:`MAX_ABS_SAMPLE`."""
    if data.size > 0:
        peak = max(abs(float(np.max(data))), abs(float(np.min(data))))  # NaN if any sample is NaN
        if not np.isfinite(peak):
            raise AudioDecodeError(f"{label}: samples contain NaN or infinity")
        if peak > MAX_ABS_SAMPLE:
            raise AudioDecodeError(
                f"{label}: samples reach {peak:.3g}; expected float audio within [-1, 1] (at most "
                f"±{MAX_ABS_SAMPLE:g} is accepted)"
            )


def _resampled(data: npt.NDArray[np.float32], rate: int, target_rate: int) -> npt.NDArray[np.float32]:
    if rate == target_rate or data.shape[0] == 0:
        return data
    return resample(data, rate, target_rate)


def check_sample_rate_argument(sample_rate: object) -> None:
    """A ``sample_rate=`` argument that no input could use, refused before any input is read (for a list, not
    reported as one of its items).

    Raises:
        AudioDecodeError: not an integer, or outside the rates the engine takes.
    """
    if sample_rate is not None:
        _check_rate(sample_rate, "sample_rate argument")


def _check_rate(rate: object, label: str) -> int:
    """``rate`` as an int, or a typed error before anything is resampled."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise AudioDecodeError(f"{label}: sample rate must be an integer number of Hz, found {rate!r:.80}")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"{label}: sample rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, found {rate}"
        )
    return int(rate)


def _check_duration(frames: int, rate: int, max_seconds: float, label: str, *, before: float = 0.0,
                    at_least: bool = False) -> None:
    """Refuse audio whose declared length exceeds ``max_seconds``, before decoding or resampling it (``before``:
    seconds of audio already decoded ahead of these frames, earlier links of a chained Ogg file; ``at_least``:
    ``frames`` were counted while decoding, more may follow)."""
    seconds = before + frames / rate
    if seconds > max_seconds:
        how = "at least " if at_least else ""
        raise AudioTooLongError(
            f"{label}: audio of {how}{seconds:.1f} s is longer than the {max_seconds:g} s accepted "
            "(LongFormOptions.max_audio_seconds)", seconds=seconds, limit=max_seconds, at_least=at_least,
        )


def _mono(data: npt.NDArray[np.float32], label: str, *, channels_last: bool) -> npt.NDArray[np.float32]:
    """One channel from ``(n,)``, or the mean of the channels of a 2-D array.

    A decoded file is ``(frames, channels)``. For an array the orientation is inferred: the shorter axis
    is the channel axis when it has at most :data:`MAX_CHANNELS` entries and the other axis is longer, so
    ``(n, 2)`` and ``(2, n)`` are both stereo; ``(0, c)`` and ``(c, 0)`` (``c`` at most :data:`MAX_CHANNELS`)
    are empty audio; a shape where neither axis is clearly the channel axis (``(3, 3)``, ``(100, 200)``) is
    refused, as is an axis of no channels.
    """
    if data.ndim == 1:
        return data
    if data.ndim != 2:
        raise AudioDecodeError(f"{label}: expected shape (n,) or (n, channels), found {data.shape}")
    rows, columns = data.shape
    if not channels_last and rows > 0:
        if columns == 0 and rows > MAX_CHANNELS:
            raise AudioDecodeError(f"{label}: an array of shape {data.shape} has no channels")
        if (rows <= MAX_CHANNELS and columns > rows) or columns == 0:  # (c, 0): c channels of no samples
            data = data.T
        elif not (columns <= MAX_CHANNELS and rows > columns) and data.shape != (1, 1):
            raise AudioDecodeError(
                f"{label}: ambiguous shape {data.shape}: expected (n,), (n, channels) or (channels, n) "
                f"with at most {MAX_CHANNELS} channels"
            )
    if data.shape[1] == 0:
        raise AudioDecodeError(f"{label}: an array of shape {data.shape} has no channels")
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


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
        if array.dtype.itemsize > 4:  # refused before float32 would round it to infinity
            _check_peak(array, label)
        return np.asarray(array, dtype=np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize > 4:
        # no audio format stores 64-bit PCM: this is NumPy's default integer type (np.array of a list of ints),
        # whose 16-bit values scaled as 64-bit PCM would be silence (about 1e-15), transcribed without a word
        raise AudioDecodeError(f"{label}: {array.dtype} samples are not PCM (NumPy's default integer type); give "
                               "int16 or int32 PCM (e.g. array.astype(np.int16) for 16-bit values), or float in "
                               "[-1, 1]")
    if array.dtype.kind == "i":
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    if array.dtype.kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - half) / half).astype(np.float32)
    raise AudioDecodeError(f"{label}: expected float or integer PCM samples, found dtype {array.dtype}")


def load_audio(
    source: AudioInput, target_rate: int, *, sample_rate: int | None = None, max_seconds: float | None = None
) -> Audio:
    """Decode ``source`` to mono float32 at ``target_rate``.

    Args:
        source: a path, encoded file bytes (or a binary file object, read to its end), an array, or
            ``(array, sample_rate)``. Arrays are
            ``(n,)``, ``(n, channels)`` or ``(channels, n)`` (the shorter axis, of at most
            :data:`MAX_CHANNELS`, holds the channels; other 2-D shapes are ambiguous and refused).
        target_rate: the model's sample rate.
        sample_rate: rate of a bare array (default: ``target_rate``); ignored for files.
        max_seconds: the longest audio accepted; longer audio is refused from its declared length
            (samples / rate for arrays, the header for files) before it is decoded or resampled.

    Raises:
        AudioFileNotFoundError: a path that does not exist.
        AudioDecodeError: anything that is not decodable audio; an array of the wrong shape/dtype; a sample
            rate that is not an integer between :data:`MIN_SAMPLE_RATE` and :data:`MAX_SAMPLE_RATE`; NaN,
            infinite samples or samples beyond ±:data:`MAX_ABS_SAMPLE`.
        AudioTooLongError: audio longer than ``max_seconds``.
    """
    given = _encoded_bytes(source)
    label = _describe(given)
    if isinstance(given, (str, os.PathLike, bytes)):
        data, warnings = _read_file(given, target_rate, max_seconds)
        return Audio(samples=np.ascontiguousarray(data, dtype=np.float32), sample_rate=target_rate,
                     warnings=warnings)
    if isinstance(given, tuple):
        if len(given) != 2 or not isinstance(given[0], np.ndarray):
            raise AudioDecodeError("expected an (array, sample_rate) pair")
        array, rate = given[0], _check_rate(given[1], label)
    elif isinstance(given, np.ndarray):
        array, rate = given, _check_rate(target_rate if sample_rate is None else sample_rate, label)
    else:
        raise AudioDecodeError(f"unsupported audio input of type {type(given).__name__}")
    if max_seconds is not None:
        _check_duration(_length(array), rate, max_seconds, label)
    data = _checked(_mono(_as_float(array, label), label, channels_last=False), label)
    return Audio(samples=np.ascontiguousarray(_resampled(data, rate, target_rate)), sample_rate=target_rate)


def _encoded_bytes(source: object) -> object:
    """``source`` with encoded audio given as ``bytearray``, ``memoryview`` or a binary file object (anything with
    ``read``, read to its end) as ``bytes``; anything else as it is.

    Raises:
        AudioDecodeError: a file object that cannot be read, or gives text (opened without ``'b'``)."""
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)
    read = getattr(source, "read", None)
    if read is None or isinstance(source, (str, bytes, os.PathLike, np.ndarray, tuple)):
        return source
    try:
        data = read()
    except (OSError, ValueError) as exc:  # a closed file, a socket that failed
        raise AudioDecodeError(f"<{type(source).__name__}>: cannot read the file object ({exc})") from exc
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioDecodeError(f"<{type(source).__name__}>: the file object gave {type(data).__name__}, not bytes "
                               "(open it in binary mode, 'rb')")
    return bytes(data)


def _length(array: npt.NDArray[np.generic]) -> int:
    """Samples per channel of an array as :func:`_mono` will read it (the longer axis of a 2-D array)."""
    return int(array.shape[0]) if array.ndim != 2 else int(max(array.shape))
