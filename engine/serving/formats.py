"""Render transcripts as text, JSON, SRT or WebVTT.

Every format writes times and durations in seconds rounded to the millisecond (``2.8``, not
``2.8000000000000003``); the :class:`~parakeet_runtime.engine.results.Transcript` objects keep the exact
values (``frame × seconds per frame``), which is what parity with NeMo is checked on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..results import Transcript

FORMATS = ("text", "json", "srt", "vtt", "jsonl")
"""Output formats; ``jsonl`` is one compact JSON object per input and line."""
EXTENSIONS = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt", "jsonl": "jsonl"}
"""File extension of each format (``--output-dir`` appends it to the input's name)."""
TIME_KEYS = ("start", "end", "duration")
"""Keys of ``Transcript.to_dict()`` that hold seconds (a token's integer ``duration`` counts frames and
stays as it is)."""


def round_time(seconds: float) -> float:
    """Seconds rounded to the millisecond, as every output format writes them."""
    return round(seconds, 3)


def transcript_dict(transcript: Transcript) -> dict[str, Any]:
    """``transcript.to_dict()`` with every time and duration in seconds rounded to the millisecond."""

    def rounded(item: dict[str, Any]) -> dict[str, Any]:
        return {key: round_time(value) if key in TIME_KEYS and isinstance(value, float) else value
                for key, value in item.items()}

    body = rounded(transcript.to_dict())
    for key in ("segments", "words", "tokens"):
        body[key] = [rounded(item) for item in body[key]]
    return body


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(round_time(seconds) * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    if transcript.segments:
        return [(s.start, s.end, s.text) for s in transcript.segments]
    return [(0.0, transcript.duration, transcript.text)] if transcript.text else []


def to_srt(transcript: Transcript) -> str:
    """SubRip subtitles, one cue per segment."""
    blocks = [
        f"{i}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT subtitles, one cue per segment."""
    blocks = [f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n" for start, end, text in _cues(transcript)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(transcripts: Sequence[tuple[str, Transcript]], fmt: str) -> str:
    """Render ``(name, transcript)`` pairs; several inputs are labelled by name (JSON: a list; JSON lines:
    one line each)."""
    if fmt in ("json", "jsonl"):
        items = [{"file": name, **transcript_dict(t)} for name, t in transcripts]
        if fmt == "jsonl":
            return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        return json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False, indent=2) + "\n"
    renderers: dict[str, Callable[[Transcript], str]] = {"text": lambda t: t.text + "\n", "srt": to_srt,
                                                          "vtt": to_vtt}
    render_one = renderers[fmt]
    if len(transcripts) == 1:
        return render_one(transcripts[0][1])
    return "".join(f"==> {name} <==\n{render_one(t)}\n" for name, t in transcripts)
