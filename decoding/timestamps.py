"""Token, word and segment timestamps, computed exactly as NeMo computes them for TDT models.

Mirrors ``AbstractRNNTDecoding.compute_rnnt_timestamps`` (TDT offsets and punctuation refinement),
``timestamp_utils.get_words_offsets``, ``timestamp_utils.get_segment_offsets`` and
``process_timestamp_outputs`` (offsets to seconds). Offsets are in encoder frames.

Detokenisation is passed in as a function so that this module stays free of any tokenizer library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .tdt import DecodedToken

WORD_MARKERS = (" ", "_", "▁")
"""Pieces that NeMo drops before a punctuation mark is glued onto a word."""


@dataclass(frozen=True)
class TimestampConfig:
    """Settings that shape timestamps, all taken from the model's manifest."""

    window_stride: float
    """Seconds between feature frames (NeMo's ``preprocessor.window_stride``)."""
    subsampling_factor: int
    """Feature frames per encoder frame."""
    supported_punctuation: frozenset[str]
    """Punctuation marks found in the vocabulary (NeMo's ``extract_punctuation_from_vocab``)."""
    word_separator: str = " "
    """NeMo's ``word_seperator`` decoding setting."""
    segment_separators: tuple[str, ...] = (".", "?", "!")
    """Word endings that close a segment."""
    segment_gap_threshold: int | None = None
    """Frames of silence between words that close a segment (``None``: only punctuation does)."""
    tokenizer_kind: str = "bpe"
    """``"bpe"`` for SentencePiece vocabularies, ``"wpe"`` for WordPiece ones (``##`` continuations)."""


@dataclass(frozen=True)
class TokenSpan:
    """A token with its frame offsets."""

    id: int
    """Token id."""
    piece: str
    """The vocabulary entry (with SentencePiece's ``▁`` word marker)."""
    text: str
    """The token decoded on its own."""
    start_offset: int
    """First encoder frame."""
    end_offset: int
    """Encoder frame after the token (``start + duration``; punctuation is pinned to its predecessor)."""


@dataclass(frozen=True)
class WordSpan:
    """A word with its frame offsets."""

    text: str
    """The word's text."""
    start_offset: int
    """First encoder frame of its first token."""
    end_offset: int
    """Encoder frame after its last token."""
    first_token: int = 0
    """Index of its first token in the token spans it was grouped from."""
    end_token: int = 0
    """Index after its last token (punctuation glued onto the word included)."""


@dataclass(frozen=True)
class SegmentSpan:
    """A segment (sentence-like run of words) with its frame offsets."""

    text: str
    """The segment's text."""
    start_offset: int
    """First encoder frame of its first token."""
    end_offset: int
    """Encoder frame after its last token."""
    first_word: int = 0
    """Index of its first word in the words it was grouped from."""
    end_word: int = 0
    """Index after its last word."""


def offset_to_seconds(offset: int, config: TimestampConfig) -> float:
    """Frame offset to seconds, with NeMo's operation order (bit-identical floats)."""
    return offset * config.window_stride * config.subsampling_factor


def token_spans(
    tokens: Sequence[DecodedToken],
    pieces: Sequence[str],
    texts: Sequence[str],
    supported_punctuation: frozenset[str],
) -> tuple[TokenSpan, ...]:
    """TDT token offsets: ``start = frame``, ``end = frame + duration``.

    A punctuation token that is not the first one is moved to the end of the token before it,
    with zero length (NeMo's ``_refine_timestamps_tdt``).

    Args:
        tokens: decoded tokens.
        pieces: vocabulary entry of each token.
        texts: each token decoded on its own.
        supported_punctuation: punctuation marks of the vocabulary.
    """
    if not (len(tokens) == len(pieces) == len(texts)):
        raise ValueError("tokens, pieces and texts must have the same length")
    spans: list[TokenSpan] = []
    for i, (token, piece, text) in enumerate(zip(tokens, pieces, texts, strict=True)):
        start, end = token.frame, token.frame + token.duration
        if supported_punctuation and i > 0 and text in supported_punctuation:
            start = end = spans[i - 1].end_offset
        spans.append(TokenSpan(token.id, piece, text, start, end))
    return tuple(spans)


def _word_start_rule(config: TimestampConfig) -> Callable[[str, str, str | None], bool]:
    punctuation = config.supported_punctuation
    separator = config.word_separator
    if config.tokenizer_kind in ("bpe", "wpe") and separator == " ":
        if config.tokenizer_kind == "wpe":
            return lambda piece, text, next_text: bool(
                (text and not text.startswith("##")) or (text == separator and next_text not in punctuation)
            )
        return lambda piece, text, next_text: piece != text or (
            text == separator and next_text not in punctuation
        )
    if separator == " ":
        return lambda piece, text, next_text: text == separator and next_text not in punctuation
    return lambda piece, text, next_text: text == separator


def word_spans(
    spans: Sequence[TokenSpan],
    decode_pieces: Callable[[Sequence[str]], str],
    config: TimestampConfig,
) -> tuple[WordSpan, ...]:
    """Group token spans into words, as NeMo's ``get_words_offsets`` does.

    Args:
        spans: token spans from :func:`token_spans`.
        decode_pieces: the tokenizer's pieces-to-text function.
        config: word separator, punctuation and tokenizer kind.
    """
    punctuation = config.supported_punctuation
    separator = config.word_separator
    starts_word = _word_start_rule(config)

    words: list[WordSpan] = []
    built: list[str] = []
    first_index = 0
    for i, span in enumerate(spans):
        text = span.text
        is_punctuation = bool(punctuation) and text in punctuation and text != separator

        next_text: str | None = None
        j = i
        while not next_text and j < len(spans) - 1:
            j += 1
            next_text = spans[j].text
            next_text = next_text if next_text != separator else None

        if starts_word(span.piece, text, next_text) and not is_punctuation:
            if built:
                words.append(WordSpan(
                    decode_pieces(built), spans[first_index].start_offset, spans[i - 1].end_offset, first_index, i
                ))
            built = []
            if text != separator:
                built.append(span.piece)
                first_index = i
        elif is_punctuation and not built and words:
            last = words[-1]
            word = last.text[:-1] if last.text.endswith(" ") else last.text
            words[-1] = replace(last, text=word + text, end_offset=span.end_offset, end_token=i + 1)
        elif is_punctuation and built:
            if built[-1] in WORD_MARKERS:
                built = built[:-1]
            built.append(span.piece)
        else:
            if not built:
                first_index = i
            built.append(span.piece)

    if not words:
        if built:
            words.append(WordSpan(decode_pieces(built), spans[0].start_offset, spans[-1].end_offset, 0, len(spans)))
    else:
        words[0] = replace(words[0], start_offset=spans[0].start_offset, first_token=0)
        if built:
            words.append(WordSpan(
                decode_pieces(built), spans[first_index].start_offset, spans[-1].end_offset, first_index, len(spans)
            ))
    return tuple(words)


def segment_spans(words: Sequence[WordSpan], config: TimestampConfig) -> tuple[SegmentSpan, ...]:
    """Group words into segments, as NeMo's ``get_segment_offsets`` does.

    A segment closes after a word that ends with (or is) a segment separator; with a
    ``segment_gap_threshold`` a long enough pause also closes it.
    """
    separators = config.segment_separators
    gap_threshold = config.segment_gap_threshold
    segments: list[SegmentSpan] = []
    current: list[str] = []
    first_index = 0
    for i, word in enumerate(words):
        text = word.text
        if gap_threshold and current:
            # NeMo checks the pause first and, in this branch, never looks at separators.
            if word.start_offset - words[i - 1].end_offset >= gap_threshold:
                segments.append(SegmentSpan(
                    " ".join(current), words[first_index].start_offset, words[i - 1].end_offset, first_index, i
                ))
                current = [text]
                first_index = i
                continue
        elif text and (text[-1] in separators or text in separators):
            current.append(text)
            segments.append(
                SegmentSpan(" ".join(current), words[first_index].start_offset, word.end_offset, first_index, i + 1)
            )
            current = []
            first_index = i + 1
            continue
        current.append(text)
    if current:
        segments.append(SegmentSpan(
            " ".join(current), words[first_index].start_offset, words[-1].end_offset, first_index, len(words)
        ))
    return tuple(segments)


def segment_tokens(segments: Sequence[SegmentSpan], words: Sequence[WordSpan], count: int) -> list[tuple[int, int]]:
    """Each segment's token range ``(first, end)`` among the ``count`` tokens its words were grouped from: from
    just after the previous segment's last word (the first segment: from the first token) through its own last
    word (the last segment: through the last token). The ranges cover every token once, in order, as Whisper's
    segments cover its tokens; a token between two segments' words (a lone word separator) goes with the later."""
    ranges: list[tuple[int, int]] = []
    first = 0
    for k, segment in enumerate(segments):
        own_end = words[segment.end_word - 1].end_token if segment.end_word > segment.first_word else first
        end = count if k == len(segments) - 1 else max(first, own_end)
        ranges.append((first, end))
        first = end
    return ranges


def join_token_text(
    pieces: Sequence[str],
    decode_pieces: Callable[[Sequence[str]], str],
    supported_punctuation: frozenset[str],
) -> str:
    """The transcript text: pieces decoded together, then one space before punctuation removed."""
    text = decode_pieces(pieces)
    if supported_punctuation:
        pattern = "|".join(re.escape(p) for p in sorted(supported_punctuation))
        text = re.sub(r"(\s)(" + pattern + ")", r"\2", text)
    return text
