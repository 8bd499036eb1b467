"""MP3 files joined one after another (``cat a.mp3 b.mp3 > ab.mp3``, a common way to put a podcast's parts or a
recorder's segments together).

An encoder such as LAME begins each file with a Xing/Info frame that declares how many audio frames follow, so
that players know the length and can trim the encoder's delay and padding (gapless playback). libsndfile's MP3
decoder (mpg123) believes the first file's count: it stops there, and every later file is lost without an error
(it prints a note on standard error, which a server never shows). :func:`appended_mp3s` finds where the first
file ends, from the count and the frame headers (or the Xing frame's byte count, where it holds one and it
agrees), and whether another file begins there; the engine then decodes each file on its own
(:mod:`.audio`), as it does chained Ogg links and FLAC files joined the same way. A file without such a frame
(plain constant-bit-rate frames) is decoded to its end by libsndfile as it is: nothing to find.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

_BITRATES = {  # kbit/s by (MPEG-1?, layer) and the header's index (0: free format, 15: invalid)
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
"""Sample rates by the header's version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5) and rate index."""
ID3V2_HEADER = 10
ID3V1_BYTES = 128
"""An ID3v1 tag (``TAG`` and 125 bytes), which some tools append to any file."""
APE_HEADER = 32
WALK_WINDOW = 1 << 16
"""Bytes read at a time while walking frame headers."""
MAX_WALK_FRAMES = 300_000
"""Frames walked at most to find where a file ends (about two hours of MPEG-1 audio, 0.5–1 s of walking); a file
that declares more is taken as the only one (libsndfile's reading), so that a crafted upload of tiny frames cannot
make the walk cost seconds, twice per request (the server's length check, then the decode)."""


@dataclass(frozen=True)
class MpegFrame:
    """What one MPEG audio frame header says."""

    length: int
    """Bytes of the frame, header included."""
    mpeg1: bool
    layer: int
    mono: bool

    @property
    def xing_offset(self) -> int:
        """Where a Xing/Info tag sits in this frame (Layer III: after the header and the side information)."""
        if self.mpeg1:
            return 4 + (17 if self.mono else 32)
        return 4 + (9 if self.mono else 17)


def frame_at(data: bytes, at: int = 0) -> MpegFrame | None:
    """The MPEG audio frame header at ``data[at]``, or ``None`` if none begins there (free-format bit rates, whose
    frame lengths the header does not give, count as none)."""
    if at + 4 > len(data) or data[at] != 0xFF or data[at + 1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (data[at + 1] >> 3) & 3, (data[at + 1] >> 1) & 3
    rate_index, padding = (data[at + 2] >> 2) & 3, (data[at + 2] >> 1) & 1
    bitrate_index = data[at + 2] >> 4
    if version == 1 or layer_bits == 0 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    else:
        length = (144 if layer == 2 or mpeg1 else 72) * bitrate // rate + padding
    return MpegFrame(length=length, mpeg1=mpeg1, layer=layer, mono=data[at + 3] >> 6 == 3)


def id3v2_size(head: bytes) -> int | None:
    """Bytes of the ID3v2 tag whose 10-byte header is ``head`` (its footer included), or ``None`` if ``head`` is
    not one."""
    if len(head) < ID3V2_HEADER or head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
        return None
    if any(byte & 0x80 for byte in head[6:10]):
        return None
    size = sum(head[6 + i] << (7 * (3 - i)) for i in range(4))
    return ID3V2_HEADER + size + (ID3V2_HEADER if head[5] & 0x10 else 0)


@dataclass(frozen=True)
class _Declared:
    """A file's first frame with a Xing/Info tag that declares its length."""

    first: int
    """Offset of the Xing/Info frame."""
    frame: MpegFrame
    frames: int
    """Audio frames after the Xing/Info frame, as declared."""
    size: int | None
    """Bytes of the file's frames, Xing/Info frame included, where declared."""


def _declared(stream: BinaryIO, start: int) -> _Declared | None:
    """The Xing/Info frame of the MP3 file at ``start`` (after its ID3v2 tag, if any), if it declares a frame count."""
    stream.seek(start)
    head = stream.read(ID3V2_HEADER)
    tag = id3v2_size(head)
    first = start + (tag or 0)
    stream.seek(first)
    data = stream.read(4 + 32 + 16)
    frame = frame_at(data)
    if frame is None or frame.layer != 3:
        return None
    at = frame.xing_offset
    if len(data) < at + 12 or data[at : at + 4] not in (b"Xing", b"Info"):
        return None
    (flags,) = struct.unpack(">I", data[at + 4 : at + 8])
    if not flags & 1:
        return None
    (frames,) = struct.unpack(">I", data[at + 8 : at + 12])
    size = struct.unpack(">I", data[at + 12 : at + 16])[0] if flags & 2 and len(data) >= at + 16 else None
    return _Declared(first, frame, frames, size)


def begins_mp3(stream: BinaryIO, at: int) -> bool:
    """Whether another MP3 file begins at ``at``: an MPEG audio frame followed by another, after an ID3v2 tag or not
    (a tag alone, appended to the end of a file, is no file)."""
    stream.seek(at)
    tag = id3v2_size(stream.read(ID3V2_HEADER))
    at += tag or 0
    stream.seek(at)
    frame = frame_at(stream.read(4))
    if frame is None:
        return False
    stream.seek(at + frame.length)
    return frame_at(stream.read(4)) is not None


def _past_tags(stream: BinaryIO, at: int) -> int:
    """``at``, or the offset after the ID3v1 and APEv2 tags that begin there (tags a file may end with, before the
    next one joined to it)."""
    for _ in range(4):
        stream.seek(at)
        head = stream.read(APE_HEADER)
        if head[:3] == b"TAG" and head[:8] != b"TAGEXTRA":
            at += ID3V1_BYTES
        elif head[:8] == b"APETAGEX" and len(head) == APE_HEADER:
            (size,) = struct.unpack("<I", head[12:16])  # items and footer, without this header
            at += APE_HEADER + size
        else:
            break
    return at


def _end_of(stream: BinaryIO, declared: _Declared, file_end: int) -> int | None:
    """Where the frames a Xing/Info frame declares end, or ``None`` where nothing can follow them. Its byte count,
    where it has one, answers at no cost for a file alone (it reaches the end of the file or past it, tags aside);
    otherwise the frame headers are walked for the declared number of frames (an encoder's count of bytes may be
    off, its count of frames is what the decoder obeys). ``None`` also if the walk meets something that is not a
    frame first (a damaged or cut file: libsndfile decides), or the file declares more than
    :data:`MAX_WALK_FRAMES` frames."""
    if declared.size is not None and _past_tags(stream, declared.first + declared.size) >= file_end:
        return None  # the count reaches the end (or past it: an encoder that counted a tag too)
    if declared.frames > MAX_WALK_FRAMES:
        return None
    position = declared.first + declared.frame.length
    remaining = declared.frames
    while remaining > 0:
        stream.seek(position)
        window = stream.read(WALK_WINDOW)
        at = 0
        while remaining > 0 and at + 4 <= len(window):
            frame = frame_at(window, at)
            if frame is None:
                return None
            at += frame.length
            remaining -= 1
        if at + 4 > len(window) and len(window) < WALK_WINDOW and remaining > 0:
            return None  # the file ends before the frames it declares
        position += at
    return position


def appended_mp3s(stream: BinaryIO, limit: int) -> list[int]:
    """Byte offsets of further MP3 files after the first one in ``stream``, where the file before declares its
    length in a Xing/Info frame (libsndfile stops there, see the module's docstring); at most ``limit`` of them
    (the caller refuses more). Empty for anything else, other formats included. Leaves the stream's position
    anywhere."""
    file_end = stream.seek(0, io.SEEK_END)
    starts: list[int] = []
    start = 0
    while len(starts) < limit:
        declared = _declared(stream, start)
        if declared is None:
            break
        end = _end_of(stream, declared, file_end)
        end = None if end is None else _past_tags(stream, end)
        if end is None or end >= file_end or not begins_mp3(stream, end):
            break
        starts.append(end)
        start = end
    return starts
