"""Render transcripts as text, JSON, SRT or WebVTT.

Every format writes times and durations in seconds rounded to the millisecond (``2.8``, not
``2.8000000000000003``); the :class:`~parakeet_runtime.engine.results.Transcript` objects keep the exact
values (``frame × seconds per frame``), which is what parity with NeMo is checked on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..results import TimedText, Transcript

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


CUE_SECONDS = 7.0
"""Longest subtitle cue: a segment longer than this is split at word boundaries (a reader needs a few seconds
per cue, not one cue for a minute of speech)."""
CUE_CHARACTERS = 84
"""Most characters in a cue: two lines of 42, the common subtitle guideline."""
CUE_LINE = 42
"""Characters per cue line; a longer cue text is broken into two lines at a space."""

Cue = tuple[float, float, str]


def split_cues(segment: TimedText, words: Sequence[TimedText], *, max_seconds: float = CUE_SECONDS,
               max_characters: int = CUE_CHARACTERS) -> list[Cue]:
    """``segment`` as subtitle cues: its words (those inside it) in runs of at most ``max_seconds`` and
    ``max_characters``; one word longer than either is a cue on its own. No words: the segment itself."""
    inside = [w for w in words
              if w.text and segment.start_offset <= w.start_offset and w.end_offset <= segment.end_offset]
    if not inside:  # no words with text: the segment's own text, if it has any (a cue without text is invalid)
        return [(segment.start, segment.end, segment.text)] if segment.text.strip() else []
    cues: list[Cue] = []
    run: list[TimedText] = []
    for word in inside:
        if run and (word.end - run[0].start > max_seconds
                    or len(" ".join(w.text for w in run)) + 1 + len(word.text) > max_characters):
            cues.append((run[0].start, run[-1].end, " ".join(w.text for w in run)))
            run = []
        run.append(word)
    cues.append((run[0].start, run[-1].end, " ".join(w.text for w in run)))
    return cues


def segment_cues(segments: Sequence[TimedText], words: Sequence[TimedText], first: int = 0) -> tuple[list[Cue], int]:
    """``segments`` split by :func:`split_cues`, each with its own words: segments group consecutive words
    (NeMo's grouping: a segment's text is its words' texts joined by spaces), the first starting at
    ``words[first]``. Returns the cues and the index after the last word used. A word of no duration on the border
    of two segments lies inside both spans: only its own segment's cues have it. A segment that does not match
    the words from there on (a transcript not built by NeMo's grouping) gets the words inside its span."""
    found: list[Cue] = []
    for segment in segments:
        end = _segment_end(segment, words, first)
        if end is None:
            found += split_cues(segment, words)
            continue
        found += split_cues(segment, words[first:end])
        first = end
    return found, first


def _segment_end(segment: TimedText, words: Sequence[TimedText], first: int) -> int | None:
    """The index after ``segment``'s last word when its words are ``words[first:end]``, else ``None``."""
    joined: str | None = None
    for end in range(first, len(words)):
        joined = words[end].text if joined is None else f"{joined} {words[end].text}"
        if joined == segment.text:
            return end + 1
        if len(joined) > len(segment.text):
            return None
    return None


def cues(transcript: Transcript) -> list[Cue]:
    """Subtitle cues: each segment split by :func:`split_cues` (a transcript without segments: its words,
    or its text as one cue)."""
    if transcript.segments:
        return segment_cues(transcript.segments, transcript.words)[0]
    if transcript.words:
        first, last = transcript.words[0], transcript.words[-1]
        whole = TimedText(transcript.text, first.start_offset, last.end_offset, first.start, last.end)
        return split_cues(whole, transcript.words)
    return [(0.0, transcript.duration, transcript.text)] if transcript.text.strip() else []


def _lines(text: str) -> str:
    """A cue's text on two lines when it is longer than :data:`CUE_LINE` (broken at the space nearest the
    middle)."""
    if len(text) <= CUE_LINE or " " not in text:
        return text
    middle = len(text) // 2
    spaces = [i for i, c in enumerate(text) if c == " "]
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1 :]


def srt_cue(number: int, cue: Cue) -> str:
    """One SubRip cue block (numbered from 1)."""
    start, end, text = cue
    return f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{_lines(text)}\n"


def _vtt_text(text: str) -> str:
    """Cue text as WebVTT needs it: ``&``, ``<`` and ``>`` escaped (``<`` starts a tag, ``-->`` ends a cue's timing)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt_cue(cue: Cue) -> str:
    """One WebVTT cue block."""
    start, end, text = cue
    return f"{_clock(start, '.')} --> {_clock(end, '.')}\n{_lines(_vtt_text(text))}\n"


VTT_HEADER = "WEBVTT\n\n"


def to_srt(transcript: Transcript) -> str:
    """SubRip subtitles: cues of at most :data:`CUE_SECONDS` and :data:`CUE_CHARACTERS` within segments."""
    return "\n".join(srt_cue(i, cue) for i, cue in enumerate(cues(transcript), start=1))


def to_vtt(transcript: Transcript) -> str:
    """WebVTT subtitles: cues as :func:`to_srt`."""
    return VTT_HEADER + "\n".join(vtt_cue(cue) for cue in cues(transcript))


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
