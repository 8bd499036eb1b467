"""Immutable transcription results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias


@dataclass(frozen=True)
class Token:
    """One emitted token."""

    id: int
    """Token id in the model's vocabulary."""
    text: str
    """The token decoded on its own."""
    piece: str
    """The vocabulary entry (SentencePiece piece, with its ``▁`` word marker)."""
    frame: int
    """Encoder frame at which it was emitted."""
    duration: int
    """Predicted duration in encoder frames."""
    start_offset: int
    """Start in encoder frames (NeMo's ``start_offset``; punctuation is pinned to the previous token)."""
    end_offset: int
    """End in encoder frames."""
    start: float
    """Start in seconds."""
    end: float
    """End in seconds."""
    confidence: float | None = None
    """Confidence in [0, 1] as NeMo's ``token_confidence`` (``None`` unless the engine computes confidence)."""
    log_prob: float | None = None
    """Natural log of the token's probability under the model where it was emitted (the log-softmax of the
    label logits, blank included); ``None`` unless the engine computes confidence, which reads the same
    log-softmax. Not in :meth:`Transcript.to_dict` (its JSON keeps its shape)."""


@dataclass(frozen=True)
class TimedText:
    """A word, or a segment (a sentence-like run of words closed by ``.``, ``?`` or ``!``, or the model's
    separators), with its place in time."""

    text: str
    """The word with attached punctuation, or the segment's words joined by spaces."""
    start_offset: int
    """Start in encoder frames."""
    end_offset: int
    """End in encoder frames."""
    start: float
    """Start in seconds."""
    end: float
    """End in seconds."""
    confidence: float | None = None
    """Confidence in [0, 1]: a word's is NeMo's ``word_confidence``; a segment's aggregates its words' the
    same way (``None`` unless the engine computes confidence)."""
    first_token: int | None = None
    """Index in :attr:`Transcript.tokens` of its first token (``None`` where not known, e.g. built by hand). A
    word's tokens are its own pieces and the punctuation glued to it; a segment's run from just after the
    previous segment's last token, so that the segments' tokens are all the transcript's, in order, once."""
    end_token: int | None = None
    """Index after its last token (``None`` where not known). Neither index is in :meth:`Transcript.to_dict`."""


Word: TypeAlias = TimedText
"""One word of a transcript."""
Segment: TypeAlias = TimedText
"""One segment of a transcript."""


@dataclass(frozen=True)
class Transcript:
    """The result of transcribing one input."""

    text: str
    """The transcript."""
    duration: float
    """Length of the audio in seconds."""
    tokens: tuple[Token, ...] = ()
    """Tokens in order."""
    words: tuple[Word, ...] = ()
    """Words in order."""
    segments: tuple[Segment, ...] = ()
    """Segments in order."""
    strategy: Literal["one_pass", "chunked"] = "one_pass"
    """How the input was transcribed: encoded in ``one_pass`` (NeMo's own results), or ``chunked`` (NeMo's
    buffered algorithm for inputs beyond the one-pass memory budget; see ``LongFormOptions``). Empty audio
    (nothing encoded either way) records the strategy chosen for it: ``chunked`` where
    ``LongFormOptions.strategy`` forces it, else ``one_pass``."""
    warnings: tuple[str, ...] = ()
    """What the audio reader accepted imperfect in this input, one human-readable sentence each: a FLAC or Ogg
    file cut short, a file holding less audio than its header declares (the transcript covers the audio before
    the cut). The same sentences are logged as warnings; they are here so that a caller who reads no log (a
    library user without logging set up, a server's client) still learns that part of the recording was missing.
    Empty for a clean file and for arrays."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (``confidence`` keys only where confidence was computed; ``warnings`` only where
        there are any, so that a clean input's JSON keeps the shape it had before the field existed)."""
        body: dict[str, Any] = {
            "text": self.text,
            "duration": self.duration,
            "strategy": self.strategy,
            "segments": [_fields(s) for s in self.segments],
            "words": [_fields(w) for w in self.words],
            "tokens": [_fields(t) for t in self.tokens],
        }
        if self.warnings:
            body["warnings"] = list(self.warnings)
        return body


_NOT_IN_DICT = ("log_prob", "first_token", "end_token")
"""Fields that :meth:`Transcript.to_dict` leaves out, so that the JSON it feeds (the CLI's ``json`` and ``jsonl``)
keeps the shape it had before they existed; the HTTP server's ``verbose_json`` reads them instead."""


def _fields(item: Token | TimedText) -> dict[str, Any]:
    fields = {key: value for key, value in vars(item).items() if key not in _NOT_IN_DICT}
    if fields.get("confidence") is None:
        fields.pop("confidence", None)
    return fields


@dataclass(frozen=True)
class TranscriptUpdate:
    """One step of :meth:`Engine.transcribe_iter`: what became final since the previous update."""

    words: tuple[Word, ...]
    """Words that are final now and were not in an earlier update."""
    segments: tuple[Segment, ...]
    """Segments that are final now and were not in an earlier update."""
    processed: float
    """Seconds of audio transcribed so far."""
    duration: float
    """Length of the audio in seconds."""
    transcript: Transcript | None = None
    """The whole transcript, on the last update only (its words and segments are those of all updates; its
    ``warnings`` are the input's)."""
    warnings: tuple[str, ...] = ()
    """The input's :attr:`Transcript.warnings`, on every update: the audio is read before the first update, so a
    caller showing segments as they come (or stopping early) learns from the first that part of the recording was
    missing."""
