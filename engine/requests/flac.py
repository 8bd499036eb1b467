"""A FLAC that libsndfile stops decoding: cut short at its end, or damaged with audio after the damage?

libsndfile stops at the first frame libFLAC cannot decode ("flac decoder lost sync", "flac decoder CRC
mismatch") and gives the frames before it. When the file was cut short (a recorder that died, a partial
download, a copy that ran out of disk) that frame is the last one, cut off, and everything before it is the
recording; when bytes in the middle were garbled, valid frames follow, and keeping only what came before would
silently drop them. :func:`last_frame_sample` tells the two apart without decoding: it searches the file from its
end for the last valid frame header (the sync code, fields consistent with STREAMINFO, the header's CRC-8) and
returns the sample it starts at. If that is after the sample where decoding stopped, audio follows the damage;
if more bytes follow that last header than one frame of the stream can hold (:attr:`FlacInfo.frame_bound`; zeros
at the very end aside, a recording preallocated on disk), something that is not this FLAC's frames follows it
(garbled frames, another file appended): damage too, not a cut.

The same search, not stopping at the declared length, finds a header that *understates* it
(:func:`frames_total`): libsndfile stops decoding at the declared length, silently, so the audio after it would
be lost. The engine then hands libsndfile a view of the file whose STREAMINFO declares what the frames hold
(:meth:`FlacInfo.declaring`). That costs one read of the file's last window for every FLAC whose header declares
a length; the cut-or-damaged question is asked only on the error path.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import BinaryIO

from .scan import WINDOW, pattern_offsets

MAGIC = b"fLaC"
STREAMINFO_BYTES = 34
SCAN_WINDOW = WINDOW
"""Bytes searched at a time, backwards from the end of the file."""
MAX_HEADER_BYTES = 16
"""A frame header's longest form: sync and codes (4), a 7-byte coded number, 2 + 2 bytes of block size and
sample rate, the CRC-8."""
_SYNC = re.compile(rb"\xff[\xf8\xf9]")
MAX_CANDIDATES = 50_000
"""Sync codes a backward search examines before giving up: compressed audio holds one by chance every 32 kB or so,
and the search stops at the first valid header; a file of crafted near-headers would cost seconds per megabyte."""


class TooManyCandidatesError(ValueError):
    """The search for the last frame header met more false sync codes than :data:`MAX_CANDIDATES`."""


_RATES = {1: 88200, 2: 176400, 3: 192000, 4: 8000, 5: 16000, 6: 22050, 7: 24000, 8: 32000, 9: 44100,
          10: 48000, 11: 96000}
_BITS = {1: 8, 2: 12, 4: 16, 5: 20, 6: 24, 7: 32}


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


@dataclass(frozen=True)
class FlacInfo:
    """What STREAMINFO says, and where the frames begin."""

    audio_start: int
    """Byte offset of the first frame (after the metadata blocks)."""
    max_block: int
    """Samples per frame of a fixed-block-size stream (STREAMINFO's maximum block size)."""
    sample_rate: int
    channels: int
    bits: int
    total_samples: int
    """Samples per channel declared; 0: unknown."""
    max_frame_bytes: int = 0
    """STREAMINFO's largest frame in bytes; 0: unknown."""
    info_offset: int = 0
    """Byte offset of STREAMINFO's 34 bytes in the file."""
    min_block: int = 0
    """STREAMINFO's minimum block size (equal to :attr:`max_block` in a fixed-block-size stream's honest header)."""

    @property
    def frame_bound(self) -> int:
        """Bytes no frame of this stream exceeds: STREAMINFO's maximum frame size where the encoder wrote it, else a
        verbatim frame's (every sample at full width, plus a header and footer)."""
        if self.max_frame_bytes:
            return self.max_frame_bytes
        return max(self.max_block, 1) * self.channels * (self.bits + 1) // 8 + 64


    def declaring(self, total: int) -> tuple[int, bytes]:
        """The byte offset and the 8 bytes of STREAMINFO (sample rate, channels, bits, total) that declare ``total``
        samples per channel instead (0, unknown, when it does not fit STREAMINFO's 36 bits)."""
        total = total if 0 <= total < (1 << 36) else 0
        packed = (self.sample_rate << 44) | ((self.channels - 1) << 41) | ((self.bits - 1) << 36) | total
        return self.info_offset + 10, packed.to_bytes(8, "big")


@dataclass(frozen=True)
class FrameAt:
    """A valid frame header: the sample its frame starts at, and its byte offset in the file."""

    sample: int
    offset: int
    samples: int = 0
    """Samples per channel the frame holds (its header's block size)."""
    variable: bool = False
    """Its stream numbers frames by their first sample (variable block sizes), not by frame."""


def flac_info(stream: BinaryIO) -> FlacInfo | None:
    """STREAMINFO of the FLAC file ``stream`` (an ID3v2 tag before it skipped), or ``None`` if it is not one."""
    stream.seek(0)
    offset = 0
    head = stream.read(10)
    if head[:3] == b"ID3" and len(head) == 10:  # size: four 7-bit bytes; a footer adds 10 more
        offset = 10 + sum((head[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4)) + (10 if head[5] & 0x10 else 0)
    stream.seek(offset)
    if stream.read(4) != MAGIC:
        return None
    offset += 4
    info: bytes | None = None
    while True:
        header = stream.read(4)
        if len(header) < 4:
            return None
        length = int.from_bytes(header[1:4], "big")
        if header[0] & 0x7F == 0 and info is None:
            info_offset = offset + 4
            info = stream.read(STREAMINFO_BYTES)
            stream.seek(offset + 4 + length)
        else:
            stream.seek(length, io.SEEK_CUR)
        offset += 4 + length
        if header[0] & 0x80:
            break
    if info is None or len(info) < STREAMINFO_BYTES:
        return None
    packed = int.from_bytes(info[10:18], "big")  # rate 20 bits, channels - 1: 3, bits - 1: 5, total: 36
    return FlacInfo(audio_start=offset, max_block=int.from_bytes(info[2:4], "big"),
                    min_block=int.from_bytes(info[0:2], "big"),
                    sample_rate=packed >> 44, channels=((packed >> 41) & 0x7) + 1, bits=((packed >> 36) & 0x1F) + 1,
                    total_samples=packed & ((1 << 36) - 1), max_frame_bytes=int.from_bytes(info[7:10], "big"),
                    info_offset=info_offset)


def _coded_number(data: bytes, at: int) -> tuple[int, int] | None:
    """The UTF-8-like coded frame or sample number at ``at``, and the offset after it."""
    if at >= len(data):
        return None
    first = data[at]
    if first < 0x80:
        return first, at + 1
    extra = next((n for n, mark in ((1, 0xC0), (2, 0xE0), (3, 0xF0), (4, 0xF8), (5, 0xFC), (6, 0xFE))
                  if first & (0xFF << (6 - n)) & 0xFF == mark), None)
    if extra is None or at + 1 + extra > len(data):
        return None
    value = first & (0x3F >> extra)
    for byte in data[at + 1 : at + 1 + extra]:
        if byte & 0xC0 != 0x80:
            return None
        value = (value << 6) | (byte & 0x3F)
    return value, at + 1 + extra


def frame_sample(data: bytes, at: int, info: FlacInfo) -> int | None:
    """The first sample of the frame whose header begins at ``data[at]``, or ``None`` if no valid header (one
    that agrees with STREAMINFO, its declared length included, and passes its CRC-8) begins there."""
    header = frame_header(data, at, info)
    if header is None or (info.total_samples and header[0] >= info.total_samples):
        return None
    return header[0]


def frame_header(data: bytes, at: int, info: FlacInfo) -> tuple[int, int, bool] | None:
    """The first sample and the block size (samples per channel) of the frame whose header begins at
    ``data[at]``, and whether its stream has variable block sizes; ``None`` if no valid header (one that agrees
    with STREAMINFO's format and passes its CRC-8; the declared length is not consulted) begins there."""
    if at + 6 > len(data) or data[at] != 0xFF or data[at + 1] not in (0xF8, 0xF9):
        return None
    block_code, rate_code = data[at + 2] >> 4, data[at + 2] & 0x0F
    channel_code, bits_code = data[at + 3] >> 4, (data[at + 3] >> 1) & 0x07
    if block_code == 0 or rate_code == 15 or channel_code > 10 or bits_code == 3 or data[at + 3] & 1:
        return None
    if (channel_code + 1 if channel_code < 8 else 2) != info.channels:
        return None
    if bits_code and _BITS[bits_code] != info.bits:
        return None
    if rate_code in _RATES and _RATES[rate_code] != info.sample_rate:
        return None
    coded = _coded_number(data, at + 4)
    if coded is None:
        return None
    number, end = coded
    variable = data[at + 1] == 0xF9
    if not variable and number > (1 << 31) - 1:
        return None
    sized = {6: 1, 7: 2}.get(block_code, 0)
    if end + sized > len(data):
        return None
    block = _block_size(block_code, data[end : end + sized])
    end += sized + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if end >= len(data) or _crc8(data[at:end]) != data[end]:
        return None
    return (number if variable else number * info.max_block), block, variable


def _block_size(code: int, extra: bytes) -> int:
    """Samples per channel of a frame from its header's block-size code (and the 8 or 16 bits after the coded
    number that codes 6 and 7 add)."""
    if code == 1:
        return 192
    if code <= 5:
        return 576 << (code - 2)
    if code <= 7:
        return int.from_bytes(extra, "big") + 1
    return 256 << (code - 8)


def last_frame_sample(stream: BinaryIO, info: FlacInfo) -> int | None:
    """The first sample of the last valid frame header in the FLAC file ``stream`` (:func:`last_frame`); ``None``
    if it holds none."""
    found = last_frame(stream, info)
    return None if found is None else found.sample


def last_frame(stream: BinaryIO, info: FlacInfo, *, past_declared: bool = False,
               within: int | None = None) -> FrameAt | None:
    """The last valid frame header in the FLAC file ``stream``, searched backwards from its end (a window of
    :data:`SCAN_WINDOW` bytes at a time); ``None`` if it holds none. A header of a frame at or after the declared
    length counts only with ``past_declared`` (a header that understates the length). ``within``: search only the
    file's last ``within`` bytes."""
    end = stream.seek(0, io.SEEK_END)
    floor = info.audio_start if within is None else max(info.audio_start, end - within)
    examined = 0
    while end > floor:
        start = max(floor, end - SCAN_WINDOW)
        stream.seek(start)
        data = stream.read(end - start + MAX_HEADER_BYTES)  # a header may run past the window's end
        for match in reversed([m.start() for m in _SYNC.finditer(data, 0, end - start + 1)]):
            examined += 1
            if examined > MAX_CANDIDATES:
                raise TooManyCandidatesError(f"more than {MAX_CANDIDATES} sync codes that begin no valid frame header")
            if match >= end - start or (header := frame_header(data, match, info)) is None:
                continue
            if past_declared or not info.total_samples or header[0] < info.total_samples:
                return FrameAt(header[0], start + match, header[1], header[2])
        end = start
    return None


def frames_total(stream: BinaryIO, info: FlacInfo) -> int | None:
    """Samples per channel that the frames of the FLAC file ``stream`` hold, read from its last valid frame header
    (the sample it starts at, plus its block size) whatever STREAMINFO declares; ``None`` if no header is found.
    More than the declared length: the header understates it (libsndfile stops there, silently).

    Only the file's last :data:`SCAN_WINDOW` bytes are searched (a decode pays this on every FLAC that declares a
    length), and a fixed-block-size stream's frame numbers count only where STREAMINFO's block sizes agree (its
    minimum and maximum equal, 16 or more): each frame's first sample is its number times that size, so a header
    that lies about it would misplace the end."""
    try:
        last = last_frame(stream, info, past_declared=True, within=SCAN_WINDOW)
    except TooManyCandidatesError:
        return None
    if last is None:
        return None
    if not last.variable and (info.min_block != info.max_block or info.max_block < 16):
        return None
    return last.sample + last.samples


def content_end(stream: BinaryIO, start: int) -> int:
    """The offset after the last non-zero byte of ``stream`` at or after ``start`` (``start`` if there is none): a
    recording preallocated with zeros ends its content there."""
    end = stream.seek(0, io.SEEK_END)
    while end > start:
        window = max(start, end - SCAN_WINDOW)
        stream.seek(window)
        kept = len(stream.read(end - window).rstrip(b"\0"))
        if kept:
            return window + kept
        end = window
    return start


_APPENDED = re.compile(rb"fLaC[\x00\x80]\x00\x00\x22")
"""Another FLAC stream's start: the magic, then a STREAMINFO block header (type 0, last-block flag either way, 34
bytes). Eight fixed bytes: compressed audio holds them by chance about once in 2**60 positions."""


def appended_streams(stream: BinaryIO, info: FlacInfo) -> list[int]:
    """Byte offsets of further FLAC streams after the first one's metadata (``cat a.flac b.flac``): libsndfile stops
    at the first stream's declared length and says nothing of the rest. Reads the file once, a window at a time."""
    return list(pattern_offsets(stream, _APPENDED, info.audio_start, 8))

