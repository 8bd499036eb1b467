"""Pure decoding functions for TDT transducers: greedy search and timestamps.

Nothing in this package holds state between calls: every function takes what it needs
(encoder frames, a step model, the decoding configuration) and returns new immutable values. The
single-utterance search (``tdt``) and the batched one (``tdt_batch``) share their rules (``rules``) and
array types (``arrays``).
"""

from .arrays import FloatArray, IntArray
from .tdt import DecodedToken, StepModel, TdtConfig, TdtResult, tdt_greedy_decode
from .tdt_batch import BatchResult, BatchStepModel, tdt_greedy_decode_batch
from .timestamps import (
    SegmentSpan,
    TimestampConfig,
    TokenSpan,
    WordSpan,
    join_token_text,
    offset_to_seconds,
    segment_spans,
    token_spans,
    word_spans,
)

__all__ = [
    "BatchResult",
    "BatchStepModel",
    "DecodedToken",
    "FloatArray",
    "IntArray",
    "SegmentSpan",
    "StepModel",
    "TdtConfig",
    "TdtResult",
    "TimestampConfig",
    "TokenSpan",
    "WordSpan",
    "join_token_text",
    "offset_to_seconds",
    "segment_spans",
    "tdt_greedy_decode",
    "tdt_greedy_decode_batch",
    "token_spans",
    "word_spans",
]
