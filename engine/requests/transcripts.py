"""Decoded tokens -> a :class:`~parakeet_runtime.engine.Transcript` (text, token, word and segment times)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parakeet_runtime.decoding import (
    ConfidenceOptions,
    DecodedToken,
    StepConfidence,
    TimestampConfig,
    aggregate,
    join_token_text,
    offset_to_seconds,
    segment_spans,
    segment_tokens,
    token_confidence,
    token_spans,
    word_confidence,
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
    blank_id: int = -1
    """The blank label (reads the confidence steps)."""
    confidence: ConfidenceOptions | None = None
    """How ``steps`` turn into token, word and segment confidence (``None``: no confidence)."""

    def __call__(
        self, decoded: Sequence[DecodedToken], duration: float, steps: Sequence[StepConfidence] | None = None, *,
        warnings: tuple[str, ...] = (),
    ) -> Transcript:
        """The transcript of ``decoded`` tokens for audio of ``duration`` seconds (NeMo's text and times);
        with ``confidence`` set, the search's ``steps`` give each token, word and segment its confidence.
        ``warnings``: what the audio reader accepted imperfect in the input (``Transcript.warnings``)."""
        tok = self.tokenizer
        config = self.config
        pieces = [tok.pieces[t.id] for t in decoded]
        texts = [tok.texts[t.id] for t in decoded]
        spans = token_spans(decoded, pieces, texts, config.supported_punctuation)
        words = word_spans(spans, tok.decode_pieces, config)
        segments = segment_spans(words, config)
        token_conf: Sequence[float | None] = [None] * len(decoded)
        token_log_probs: Sequence[float | None] = [None] * len(decoded)
        word_conf: Sequence[float | None] = [None] * len(words)
        segment_conf: list[float | None] = [None] * len(segments)
        if self.confidence is not None and steps is not None:
            token_conf = token_confidence(steps, self.blank_id, self.confidence)
            if len(token_conf) != len(decoded):
                raise RuntimeError(f"{len(token_conf)} token confidences for {len(decoded)} tokens")
            token_log_probs = [step.log_prob for step in steps if step.label != self.blank_id]
            found = word_confidence(token_conf, pieces, texts, self.confidence.aggregation)
            # NeMo's word confidence belongs to the words of the text (``text.split()``): the timed words
            # less the empty ones (a run of lone ``▁`` pieces), which carry none. Should the two ever not
            # match one to one, no word carries confidence rather than a wrong one.
            spoken = [i for i, w in enumerate(words) if w.text]
            if len(found) == len(spoken):
                by_word: list[float | None] = [None] * len(words)
                for i, value in zip(spoken, found, strict=True):
                    by_word[i] = value
                word_conf = by_word
                for k, s in enumerate(segments):
                    inside = [c for c in by_word[s.first_word : s.end_word] if c is not None]
                    segment_conf[k] = aggregate(inside, self.confidence.aggregation) if inside else None

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
                    confidence=c,
                    log_prob=lp,
                )
                for s, d, c, lp in zip(spans, decoded, token_conf, token_log_probs, strict=True)
            ),
            words=tuple(
                Word(w.text, w.start_offset, w.end_offset, seconds(w.start_offset), seconds(w.end_offset), c,
                     w.first_token, w.end_token)
                for w, c in zip(words, word_conf, strict=True)
            ),
            segments=tuple(
                Segment(s.text, s.start_offset, s.end_offset, seconds(s.start_offset), seconds(s.end_offset), c,
                        first, end)
                for s, c, (first, end) in zip(segments, segment_conf, segment_tokens(segments, words, len(spans)),
                                              strict=True)
            ),
            warnings=warnings,
        )

