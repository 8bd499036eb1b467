"""WAV files whose writer never filled in the length of their audio.

A WAV written to a pipe or socket (a recorder streaming an upload, a tool writing to standard output) cannot go
back to its header when it ends, so its ``data`` chunk declares the size it was given at the start: often
``0xFFFFFFFF`` (libsndfile then reads to the end of the file), but often ``0``, which libsndfile takes at its
word: a file holding minutes of audio read as no audio at all, and transcribed as nothing, without an error.
FFmpeg reads such a chunk to the end of the file (``wavdec.c``: a zero size means "until the end"); so does this
module, by presenting the chunk's size to libsndfile as ``0xFFFFFFFF`` (:class:`PatchedReader`). A WAV that
really is empty (a ``data`` chunk of size 0 followed by another chunk, a trailing ``LIST`` say) stays empty.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

UNKNOWN_SIZE = b"\xff\xff\xff\xff"
"""The ``data`` chunk size that tells libsndfile the audio runs to the end of the file."""
MAX_CHUNKS = 64
"""Chunks looked at before the ``data`` chunk (``fmt``, ``fact``, ``LIST``, ``bext``, ``JUNK``, ...)."""


def _is_chunk_header(header: bytes, room: int) -> bool:
    """Whether ``header`` reads as a chunk's: a four-character code and a size within the ``room`` left."""
    return (len(header) == 8 and all(0x20 <= byte <= 0x7E for byte in header[:4])
            and struct.unpack("<I", header[4:8])[0] <= room)


def unfinished_data_size(stream: BinaryIO) -> int | None:
    """The offset of the size field of the ``data`` chunk of a RIFF/WAVE ``stream`` whose writer left that
    size 0 with bytes after it that are not another chunk (audio, then); ``None`` for anything else (other
    formats included). Leaves the stream's position anywhere."""
    stream.seek(0)
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position = 12
    for _ in range(MAX_CHUNKS):
        stream.seek(position)
        header = stream.read(8)
        if len(header) < 8:
            return None
        (size,) = struct.unpack("<I", header[4:8])
        payload = position + 8
        if header[:4] == b"data":
            end = stream.seek(0, io.SEEK_END)
            if size != 0 or end <= payload:
                return None
            stream.seek(payload)
            return None if _is_chunk_header(stream.read(8), end - payload - 8) else position + 4
        position = payload + size + (size & 1)  # chunks are padded to even lengths
    return None


class PatchedReader(io.RawIOBase):
    """A seekable binary file read with the bytes at ``offset`` replaced by ``replacement`` (by default 4 bytes that
    declare a RIFF chunk's size unknown); closing it closes the file where ``owns`` says so."""

    def __init__(self, raw: BinaryIO, offset: int, replacement: bytes = UNKNOWN_SIZE, *, owns: bool = True) -> None:
        super().__init__()
        self._raw = raw
        self._offset = offset
        self._replacement = replacement
        self._owns = owns

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


def finished_header(source: str | io.BytesIO) -> str | io.BytesIO | PatchedReader:
    """``source`` (a path or the bytes of a file), or a :class:`PatchedReader` of it that declares an unfinished
    WAV's ``data`` chunk to run to the end of the file (the caller closes it). A path that cannot be opened is
    given back unchanged: libsndfile says why."""
    if isinstance(source, io.BytesIO):
        offset = unfinished_data_size(source)
        source.seek(0)
        return source if offset is None else PatchedReader(source, offset)
    try:
        raw = open(source, "rb")  # noqa: SIM115 - handed to PatchedReader, which closes it
    except OSError:
        return source
    try:
        offset = unfinished_data_size(raw)
    except OSError:
        offset = None
    if offset is None:
        raw.close()
        return source
    raw.seek(0)  # libsndfile reads from where the file stands
    return PatchedReader(raw, offset)
