"""WAV files whose writer never filled in the length of their audio.

A WAV written to a pipe or socket (a recorder streaming an upload, a tool writing to standard output) cannot go
back to its header when it ends, so its ``data`` chunk declares the size it was given at the start: often
``0xFFFFFFFF`` (libsndfile then reads to the end of the file), but often ``0``, which libsndfile takes at its
word: a file holding minutes of audio read as no audio at all, and transcribed as nothing, without an error.
FFmpeg reads such a chunk to the end of the file (``wavdec.c``: a zero size means "until the end"); so does this
module, by presenting the chunk's size to libsndfile as ``0xFFFFFFFF`` (:class:`PatchedReader`). A WAV that
really is empty (a ``data`` chunk of size 0 followed by another chunk, a trailing ``LIST`` say) stays empty.

The same view reads on past a ``data`` chunk whose size *understates* the audio (a recorder that updated its
header now and then and died, a tool that appended samples without fixing the header): more bytes follow the
declared end than :data:`MIN_AUDIO_AFTER`, and they are not another chunk (nor an ID3v1 tag). libsndfile stops at
the declared size without a word; here the rest is read too, and the request is warned
(:attr:`PatchedReader.note`).
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

from .mpeg import ID3V1_BYTES, begins_mp3
from .scan import pattern_offsets

UNKNOWN_SIZE = b"\xff\xff\xff\xff"
"""The ``data`` chunk size that tells libsndfile the audio runs to the end of the file."""
MAX_CHUNKS = 64
"""Chunks looked at before the ``data`` chunk (``fmt``, ``fact``, ``LIST``, ``bext``, ``JUNK``, ...)."""
MIN_AUDIO_AFTER = 64
"""Bytes after a ``data`` chunk's declared end (that are not another chunk) read as more of its audio; fewer are
taken for padding or a stray tail, and left alone."""
TAIL_SAMPLE = 4096
"""Bytes after a ``data`` chunk's declared end looked at to tell audio from padding."""
MIN_DISTINCT_BYTES = 16
"""Distinct byte values those bytes must hold to be read as audio: samples take many, while padding (zeros, 0xFF),
line ends or a short stray tail take a few."""
_RIFF_WAVE = re.compile(rb"RIFF.{4}WAVE", re.DOTALL)
KNOWN_CHUNKS = frozenset({b"LIST", b"id3 ", b"ID3 ", b"bext", b"cue ", b"JUNK", b"junk", b"smpl", b"iXML", b"fact",
                          b"PEAK", b"inst", b"acid", b"_PMX", b"axml", b"DISP", b"plst", b"cart", b"umid", b"levl",
                          b"PAD ", b"FLLR", b"RIFF"})
"""Chunks writers put after the audio, recognised by name alone (a trailing chunk may be cut short, its size then
past the end of the file): anything else there must also have a size that fits to count as a chunk."""
OTHER_FILES = (b"ID3", b"fLaC", b"OggS", b"RIFF", b"FORM")
"""How a tag or another kind of audio file appended to a WAV begins."""


def _is_chunk_id(code: bytes) -> bool:
    """Whether ``code`` reads as a chunk's four-character code."""
    return len(code) == 4 and all(0x20 <= byte <= 0x7E for byte in code)


def _is_chunk_header(header: bytes, room: int) -> bool:
    """Whether ``header`` reads as a chunk's: a four-character code and a size within the ``room`` left."""
    return len(header) == 8 and _is_chunk_id(header[:4]) and struct.unpack("<I", header[4:8])[0] <= room


@dataclass(frozen=True)
class DataSize:
    """A ``data`` chunk whose declared size the bytes after it contradict."""

    field: int
    """Offset of the chunk's size field."""
    declared: int
    """The size it declares, in bytes (0: a writer that streamed the file and could not go back)."""
    following: int
    """Bytes from the chunk's audio to the end of the file."""
    byte_rate: int = 0
    """The ``fmt`` chunk's bytes per second (0: not found before the ``data`` chunk)."""

    def seconds(self, size: int) -> str:
        """``size`` bytes of audio in words: seconds where the byte rate is known, else bytes."""
        return f"{size / self.byte_rate:.2f} s" if self.byte_rate > 0 else f"{size} bytes"


def data_size(stream: BinaryIO) -> DataSize | None:
    """The ``data`` chunk of a RIFF/WAVE ``stream`` whose declared size leaves audio unread: 0 with bytes after it
    that are not another chunk, or a size after whose end at least :data:`MIN_AUDIO_AFTER` bytes follow that are
    not another chunk (aligned as the standard pads chunks, or as writers that forget the padding do), another
    RIFF file, or an ID3v1 tag; ``None`` for anything else (other formats included). Leaves the stream's position
    anywhere."""
    stream.seek(0)
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position = 12
    byte_rate = 0
    for _ in range(MAX_CHUNKS):
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            return None
        (size,) = struct.unpack("<I", header[4:8])
        payload = position + 8
        if header[:4] == b"fmt " and size >= 12:
            fields = stream.read(12)
            byte_rate = struct.unpack("<I", fields[8:12])[0] if len(fields) == 12 else 0
        if header[:4] == b"data":
            end = stream.seek(0, io.SEEK_END)
            if size == 0:
                if end <= payload:
                    return None
                stream.seek(payload)
                if _is_chunk_header(stream.read(8), end - payload - 8) or _find_riff(stream, payload, end) is not None:
                    return None  # really empty; or another WAV follows (files joined: each is read on its own)
                return DataSize(position + 4, 0, end - payload, byte_rate)
            if size == 0xFFFFFFFF or end - (payload + size) < MIN_AUDIO_AFTER:
                return None
            for after in (payload + size + (size & 1), payload + size):  # padded, or not (a common slip)
                stream.seek(after)
                following = stream.read(12)
                if _is_chunk_header(following[:8], end - after - 8) or following[:4] in KNOWN_CHUNKS:
                    return None  # another chunk (a known one may be cut short), another RIFF file
            if end - (payload + size) <= ID3V1_BYTES + 1:
                stream.seek(end - ID3V1_BYTES)
                if stream.read(3) == b"TAG":
                    return None
            stream.seek(payload + size)
            tail = stream.read(TAIL_SAMPLE)
            if tail.startswith(OTHER_FILES) or len(set(tail)) < MIN_DISTINCT_BYTES:  # a tag, another kind of file;
                return None  # zeros, padding, line ends
            if begins_mp3(stream, payload + size):  # an MP3 appended (no tag first): not this file's samples
                return None
            if _find_riff(stream, payload + size, end) is not None:  # another WAV follows: files joined
                return None
            return DataSize(position + 4, size, end - payload, byte_rate)
        position = payload + size + (size & 1)  # chunks are padded to even lengths
    return None


def appended_wavs(stream: BinaryIO, limit: int) -> list[int]:
    """Byte offsets of further RIFF/WAVE files after the first one in ``stream`` (``cat a.wav b.wav``: libsndfile
    refuses the whole file, "No 'RIFF' chunk marker"), found by walking each file's chunks to the next ``RIFF``
    header; at most ``limit`` of them (the caller refuses more). Empty for anything else. Leaves the stream's
    position anywhere."""
    stream.seek(0)
    end = stream.seek(0, io.SEEK_END)
    starts: list[int] = []
    start = 0
    while len(starts) < limit:
        stream.seek(start)
        head = stream.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return starts if start else []
        following = _next_riff(stream, start + 12, end)
        if following is None:
            return starts
        starts.append(following)
        start = following
    return starts


def _next_riff(stream: BinaryIO, position: int, end: int) -> int | None:
    """Where the next RIFF/WAVE file begins after the chunks of the one at hand (from its first chunk at
    ``position``), or ``None``."""
    for _ in range(MAX_CHUNKS):
        stream.seek(position)
        header = stream.read(12)
        if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
            return position
        if not _is_chunk_header(header[:8], end - position - 8):
            # not a chunk (a tag, a pad byte the writer forgot, audio past a size that understates it): the next
            # file, if any, begins at the next RIFF header (from one byte back: the pad byte may be missing)
            return _find_riff(stream, position - 1, end)
        (size,) = struct.unpack("<I", header[4:8])
        position += 8 + size + (size & 1)
    return None


def _find_riff(stream: BinaryIO, start: int, end: int) -> int | None:
    """The offset of the first RIFF/WAVE header at or after ``start`` whose first chunk header is one (a file, not
    the 12 bytes quoted in a tag's text); ``None`` if none."""
    for at in pattern_offsets(stream, _RIFF_WAVE, start, 12):
        stream.seek(at + 12)
        if _is_chunk_header(stream.read(8), end - at - 20):
            return at
    return None


class PatchedReader(io.RawIOBase):
    """A seekable binary file read with the bytes at ``offset`` replaced by ``replacement`` (by default 4 bytes that
    declare a RIFF chunk's size unknown); closing it closes the file where ``owns`` says so."""

    def __init__(self, raw: BinaryIO, offset: int, replacement: bytes = UNKNOWN_SIZE, *, owns: bool = True,
                 note: str = "") -> None:
        super().__init__()
        self._raw = raw
        self._offset = offset
        self._replacement = replacement
        self._owns = owns
        self.note = note
        """What the patch corrects, for a warning (empty: nothing the caller needs to hear of)."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        start = self._raw.tell()
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        count = len(data)
        view[:count] = data
        first = max(start, self._offset)
        last = min(start + count, self._offset + len(self._replacement))
        if first < last:
            view[first - start : last - start] = self._replacement[first - self._offset : last - self._offset]
        return count

    def close(self) -> None:
        if not self.closed and self._owns:
            self._raw.close()
        super().close()


def finished_header(source: io.BytesIO) -> io.BytesIO | PatchedReader:
    """The bytes of a file, or a :class:`PatchedReader` of them that declares a WAV's ``data`` chunk to run to the end
    of the file, where its writer left the size 0 or the size understates the audio (the reader's
    :attr:`~PatchedReader.note` then says so)."""
    found = data_size(source)
    source.seek(0)
    return source if found is None else patched(source, found)


def patched(raw: BinaryIO, found: DataSize, *, owns: bool = True) -> PatchedReader:
    """``raw`` read with the ``data`` chunk ``found`` declared to run to the end of the file; its note says so where
    the header understated the length (a size of 0 is a streamed WAV's convention: nothing to say)."""
    note = "" if found.declared == 0 else (
        f"the WAV header declares {found.seconds(found.declared)} of audio, but its audio runs on to the end of the "
        f"file, {found.seconds(found.following)} (a header that understates the length); transcribing all of it")
    return PatchedReader(raw, found.field, owns=owns, note=note)
