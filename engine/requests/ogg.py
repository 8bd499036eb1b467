"""Chained Ogg files: where each chained logical stream begins, so that every one is decoded.

An Ogg file may hold several logical streams one after another ("chaining", Ogg's framing spec, RFC 3533 §4):
``cat a.ogg b.ogg > ab.ogg`` makes one, and so does an internet-radio capture, which starts a new stream with
every track. libsndfile decodes only the first and then reports the end of the file: the rest of the audio was
lost without an error. :func:`ogg_layout` walks the page headers (nothing is decoded, nothing but the headers
is read into memory) and returns each chained stream's byte range (:class:`OggLink`); ``audio.py`` decodes each
range on its own (:class:`ByteRange`, a window onto the file, so a long file is never copied) and joins the
samples.

A page is the capture pattern ``OggS``, a 27-byte header (version, header type: 0x02 begins a logical stream,
0x04 ends one; granule position, serial number, sequence number, CRC) and a segment table whose lacing values
add up to the page's body. A link of the chain starts with the beginning-of-stream pages of all its logical
streams; several of them at once is a multiplexed link (video with audio, say), which :func:`ogg_layout`
reports as such (:attr:`OggLink.streams`) and which ``audio.py`` leaves to libsndfile as before.

Damaged pages are stepped over the way libogg does: a page counts only if its CRC (Ogg's CRC-32 over the page,
its own CRC field zeroed) is right, else the walk searches for the next capture pattern, and takes it only when
another page header (or the end of the file) follows where it says it ends and its CRC is right. So a stray
``OggS`` inside compressed data does not split a stream, a link cut inside a page does not swallow the next link
(the cut page's segment table claims bytes of the next one), and a flipped bit in a header does not start a link.
The CRCs read every byte once (zlib's, a few milliseconds per 10 MB); the candidates a resynchronisation tries
are bounded (:data:`CRC_BUDGET`), so a crafted file of fake page headers costs time in proportion to its size.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import BinaryIO

CAPTURE = b"OggS"
"""The capture pattern every page begins with."""
HEADER_BYTES = 27
"""A page header's size before its segment table."""
BEGINS_STREAM = 0x02
"""Header type flag: the first page of a logical stream."""
ENDS_STREAM = 0x04
"""Header type flag: the last page of a logical stream."""
WINDOW = 1 << 20
"""Bytes read at a time while walking the pages."""
CRC_BUDGET = 8
"""Bytes whose CRC a walk computes, at most, per byte of the file (plus :data:`WINDOW`): an ordinary file needs 1; a
crafted one of fake page headers, each claiming a 64 kB body, would need thousands. Past it the walk stops and the
rest of the file belongs to the link it was in (libsndfile says what it makes of it)."""
MAX_LINKS = 100_000
"""Chained streams decoded at most: a day of internet radio has a few hundred; a file of many thousands of tiny
streams would cost a decoder set-up each (refused by ``audio.py``, never cut short)."""


@dataclass(frozen=True)
class OggLink:
    """One link of a chain: logical streams that begin together, up to where the next link begins."""

    start: int
    """Byte offset of its first beginning-of-stream page."""
    end: int
    """Byte offset where the next link begins (or the file's size for the last one)."""
    streams: int
    """Logical streams that begin at its start (1 unless multiplexed)."""
    ended: bool = True
    """Its last page ends a logical stream: a link without (cut short, or a capture that stopped mid-stream) has
    lost the audio of its missing pages."""


@dataclass(frozen=True)
class OggLayout:
    """The links of an Ogg file, in order."""

    links: tuple[OggLink, ...]
    """The chained links (one for an ordinary file)."""
    cut_short: bool
    """The file ends inside a page, or without the last link's end-of-stream page: it was cut short (a recording
    or capture that stopped, a partial download); libsndfile decodes what its complete pages hold. (An earlier link
    without its end-of-stream page says so in :attr:`OggLink.ended`.)"""


class _Reader:
    """Bytes of a seekable binary stream by absolute offset, read :data:`WINDOW` bytes at a time."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self.size = size
        self._start = 0
        self._data = b""

    def at(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes from ``offset`` (fewer at the end of the stream)."""
        end = self._start + len(self._data)
        if not (self._start <= offset and offset + count <= end):
            self._stream.seek(offset)
            self._start = offset
            self._data = self._stream.read(max(count, WINDOW))
        return self._data[offset - self._start : offset - self._start + count]

    def find(self, pattern: bytes, offset: int) -> int:
        """The offset of the next ``pattern`` at or after ``offset``, or -1. Searches the window already read
        where ``offset`` lies in it (a resynchronisation tries many candidates close together: re-reading a
        window from each would copy a megabyte per candidate)."""
        while offset < self.size:
            if not self._start <= offset <= self._start + len(self._data) - len(pattern):
                self.at(offset, WINDOW)  # a window from ``offset``
            found = self._data.find(pattern, offset - self._start)
            if found >= 0:
                return self._start + found
            end = self._start + len(self._data)
            if end >= self.size:
                return -1
            offset = end - len(pattern) + 1
        return -1


@dataclass(frozen=True)
class _Page:
    offset: int
    header_type: int
    length: int
    """Header, segment table and body, in bytes (it may run past the end of a file cut short)."""


_BIT_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def ogg_crc(page: bytes) -> int:
    """Ogg's page CRC (CRC-32, polynomial 0x04C11DB7, not reflected, initial value and final xor 0) of ``page``
    with its CRC field already zeroed: zlib's reflected CRC-32 over the bit-reversed bytes, bit-reversed."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


class _Checker:
    """CRC checks of pages, within the walk's budget (:data:`CRC_BUDGET`)."""

    def __init__(self, reader: _Reader) -> None:
        self._reader = reader
        self.left = CRC_BUDGET * reader.size + WINDOW

    def valid(self, page: _Page) -> bool:
        """Whether ``page`` (whole within the file) has the CRC its header says."""
        self.left -= page.length
        data = bytearray(self._reader.at(page.offset, page.length))
        stored = int.from_bytes(data[22:26], "little")
        data[22:26] = bytes(4)
        return len(data) == page.length and ogg_crc(bytes(data)) == stored


def _page_at(reader: _Reader, offset: int) -> _Page | None:
    """The page whose header begins at ``offset``, or ``None`` if none does."""
    header = reader.at(offset, HEADER_BYTES)
    if len(header) < HEADER_BYTES or header[:4] != CAPTURE or header[4] != 0:  # stream structure version 0
        return None
    segments = header[26]
    table = reader.at(offset + HEADER_BYTES, segments)
    body = sum(table)
    if len(table) < segments:  # cut inside the segment table
        body = 255 * segments
    return _Page(offset, header[5], HEADER_BYTES + segments + body)


def _resync(reader: _Reader, offset: int, checker: _Checker) -> _Page | None:
    """The next page at or after ``offset`` that is followed by another page or by the end of the file and whose
    CRC is right (libogg's resynchronisation, with a check that a stray ``OggS`` inside compressed data cannot
    pass); a page cut by the end of the file (no CRC to check) when no whole one follows. ``None`` past the CRC
    budget."""
    while checker.left > 0 and (found := reader.find(CAPTURE, offset)) >= 0:
        page = _page_at(reader, found)
        if page is not None:
            after = page.offset + page.length
            if after > reader.size:
                return page  # cut by the end of the file
            if (after == reader.size or _page_at(reader, after) is not None) and checker.valid(page):
                return page
        offset = found + 1
    return None


def is_ogg(head: bytes) -> bool:
    """Whether the first bytes of a file are an Ogg page's."""
    return head[:4] == CAPTURE


def ogg_layout(stream: BinaryIO) -> OggLayout:
    """The links of the Ogg file ``stream`` (seekable; read from the start, left anywhere). A file that is not
    Ogg, or whose pages cannot be found, is one link over the whole file: libsndfile then says what it makes of
    it."""
    size = stream.seek(0, io.SEEK_END)
    reader = _Reader(stream, size)
    checker = _Checker(reader)
    links: list[OggLink] = []
    begins: int | None = None  # where the current link began
    streams = 0
    previous_began = False
    ended = False  # the last page seen ends a logical stream
    cut_short = False
    offset = 0
    while offset < size and checker.left > 0:
        found = _page_at(reader, offset)
        damaged = found is None or found.offset + found.length > size or not checker.valid(found)
        if damaged:
            # a damaged page, or one cut by the end of the file (or cut where the next link begins)
            cut = found if found is not None and found.offset + found.length > size else None
            found = _resync(reader, offset if found is None else offset + 1, checker) or cut
        if found is None:
            break  # bytes after the last page (a tag, junk, a damaged last page): not audio
        page = found
        if damaged:
            previous_began = False  # beginning-of-stream pages across damage: not one multiplexed link
        if page.header_type & BEGINS_STREAM:
            if not previous_began:  # beginning-of-stream pages after others: a new link of the chain
                if begins is not None:
                    links.append(OggLink(begins, page.offset, streams, ended))
                begins, streams = page.offset, 0
            streams += 1
        previous_began = bool(page.header_type & BEGINS_STREAM)
        ended = bool(page.header_type & ENDS_STREAM)
        if page.offset + page.length > size:
            cut_short = True
            break
        offset = page.offset + page.length
    if begins is None:
        return OggLayout((OggLink(0, size, 1),), cut_short=False)
    links.append(OggLink(begins, size, streams, ended and not cut_short))
    return OggLayout(tuple(links), cut_short=cut_short or not ended)


class ByteRange(io.RawIOBase):
    """Bytes ``start``..``end`` of a seekable binary file, as a file of their own (position 0 is ``start``). Several
    may share one file: each seeks it to its own position before reading. Closing it leaves the file open."""

    def __init__(self, raw: BinaryIO, start: int, end: int) -> None:
        super().__init__()
        self._raw = raw
        self._start = start
        self._size = end - start
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._position))
        if count == 0:
            return 0
        self._raw.seek(self._start + self._position)
        data = self._raw.read(count)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

