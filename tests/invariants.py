"""Properties every transcript must have, whatever the model and audio."""

from __future__ import annotations

from collections.abc import Iterable

from parakeet_runtime.engine import Segment, Token, Transcript, Word


def check_invariants(result: Transcript) -> None:
    starts = [t.start_offset for t in result.tokens]
    assert starts == sorted(starts), "token start offsets decrease"
    frames = [t.frame for t in result.tokens]
    assert frames == sorted(frames), "token frames decrease"
    items: list[Token | Word | Segment] = [*result.tokens, *result.words, *result.segments]
    for item in items:
        assert 0 <= item.start <= item.end <= result.duration + 1e-9, item
        assert item.start_offset <= item.end_offset, item
    for seq in (result.words, result.segments):
        assert [w.start for w in seq] == sorted(w.start for w in seq), "starts decrease"
        assert [w.end for w in seq] == sorted(w.end for w in seq), "ends decrease"
    # Words join to the text up to spacing: NeMo (and so this engine) can produce an empty word for a
    # lone "▁" piece, and a word of bare punctuation that the text attaches to the previous word.
    assert _squash(w.text for w in result.words) == _squash([result.text]), "words do not join to text"
    assert _squash(s.text for s in result.segments) == _squash(w.text for w in result.words)
    if not result.tokens:
        assert result.text == "" and not result.words and not result.segments


def _squash(texts: Iterable[str]) -> str:
    return "".join("".join(texts).split())
