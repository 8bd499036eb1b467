"""Decoded tokens -> a :class:`~parakeet_runtime.engine.Transcript` (text, token, word and segment times)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parakeet_runtime.decoding import (
    DecodedToken,
    TimestampConfig,
    join_token_text,
    offset_to_seconds,
    segment_spans,
    token_spans,
    word_spans,
)

from ..model.manifest import Manifest
from ..model.tokenizer import Tokenizer
from ..results import Segment, Token, Transcript, Word


def timestamp_config(manifest: Manifest) -> TimestampConfig:
    """The timestamp rules the manifest records (frame stride, subsampling, the tokenizer's text rules)."""
    tokenizer = manifest.tokenizer
    return TimestampConfig(
        window_stride=manifest.features.window_stride,
        subsampling_factor=manifest.encoder.subsampling_factor,
        supported_punctuation=frozenset(tokenizer.supported_punctuation),
        word_separator=tokenizer.word_separator,
        segment_separators=tokenizer.segment_separators,
        segment_gap_threshold=tokenizer.segment_gap_threshold,
        tokenizer_kind=tokenizer.kind,
    )


@dataclass(frozen=True, eq=False)
class TranscriptBuilder:
    """Builds transcripts for one model. Read-only; safe to share."""

    tokenizer: Tokenizer
    config: TimestampConfig

    def __call__(self, decoded: Sequence[DecodedToken], duration: float) -> Transcript:
        """The transcript of ``decoded`` tokens for audio of ``duration`` seconds (NeMo's text and times)."""
        tok = self.tokenizer
        config = self.config
        pieces = [tok.pieces[t.id] for t in decoded]
        texts = [tok.texts[t.id] for t in decoded]
        spans = token_spans(decoded, pieces, texts, config.supported_punctuation)
        words = word_spans(spans, tok.decode_pieces, config)
        segments = segment_spans(words, config)

        def seconds(offset: int) -> float:
            # NeMo's seconds, except that a last token whose predicted duration runs past the final
            # frame is cut at the end of the audio (offsets keep NeMo's values).
            return min(offset_to_seconds(offset, config), duration)

        return Transcript(
            text=join_token_text(pieces, tok.decode_pieces, config.supported_punctuation),
            duration=duration,
            tokens=tuple(
                Token(
                    id=s.id,
                    text=s.text,
                    piece=s.piece,
                    frame=d.frame,
                    duration=d.duration,
                    start_offset=s.start_offset,
                    end_offset=s.end_offset,
                    start=seconds(s.start_offset),
                    end=seconds(s.end_offset),
                )
                for s, d in zip(spans, decoded, strict=True)
            ),
            words=tuple(
                Word(w.text, w.start_offset, w.end_offset, seconds(w.start_offset), seconds(w.end_offset))
                for w in words
            ),
            segments=tuple(
                Segment(s.text, s.start_offset, s.end_offset, seconds(s.start_offset), seconds(s.end_offset))
                for s in segments
            ),
        )
