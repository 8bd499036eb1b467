"""Searching a seekable binary file for a byte pattern, a window at a time (never the whole file in memory)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import BinaryIO

WINDOW = 1 << 20
"""Bytes searched at a time."""


def pattern_offsets(stream: BinaryIO, pattern: re.Pattern[bytes], start: int, span: int) -> Iterator[int]:
    """Offsets at or after ``start`` where ``pattern`` (which matches at most ``span`` bytes) matches ``stream``, in
    order, reading :data:`WINDOW` bytes (and the ``span - 1`` after them) at a time. A window's matches are found
    before the first is yielded, so the caller may read the stream between offsets."""
    end = stream.seek(0, io.SEEK_END)
    offset = start
    while offset < end:
        stream.seek(offset)
        data = stream.read(WINDOW + span - 1)
        yield from [offset + found.start() for found in pattern.finditer(data) if found.start() < WINDOW]
        offset += WINDOW
