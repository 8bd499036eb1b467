"""The comparison every parity test makes: an engine transcript against NeMo's, field by field."""

from __future__ import annotations

from typing import Any


def _clamp(seconds: float, duration: float) -> float:
    return min(seconds, duration)


def assert_identical(result: Any, expected: dict[str, Any]) -> None:
    """Token ids, frames, durations, text and every timestamp of ``result`` equal NeMo's ``expected``."""
    duration = result.duration

    assert [t.id for t in result.tokens] == expected["ids"]
    assert [t.frame for t in result.tokens] == expected["frames"]
    assert [t.duration for t in result.tokens] == expected["durations"]
    assert result.text == expected["text"]
    assert [(t.text, t.start_offset, t.end_offset) for t in result.tokens] == [c[:3] for c in expected["chars"]]
    assert [(w.text, w.start_offset, w.end_offset) for w in result.words] == [w[:3] for w in expected["words"]]
    assert [(s.text, s.start_offset, s.end_offset) for s in result.segments] == [
        s[:3] for s in expected["segments"]
    ]
    assert [(t.start, t.end) for t in result.tokens] == [
        (_clamp(c[3], duration), _clamp(c[4], duration)) for c in expected["chars"]
    ]
    assert [(w.start, w.end) for w in result.words] == [
        (_clamp(w[3], duration), _clamp(w[4], duration)) for w in expected["words"]
    ]
    assert [(s.start, s.end) for s in result.segments] == [
        (_clamp(s[3], duration), _clamp(s[4], duration)) for s in expected["segments"]
    ]
