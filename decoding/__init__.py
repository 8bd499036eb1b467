"""Pure decoding functions for TDT transducers: greedy search and timestamps.

Nothing in this package holds state between calls: every function takes what it needs
(encoder frames, a step model, the decoding configuration) and returns new immutable values. The
single-utterance search (``tdt``) and the batched one (``tdt_batch``) share their rules (``rules``) and
array types (``arrays``); with confidence on, both record each decision's confidence (``confidence``).
"""

from .arrays import FloatArray, IntArray
from .confidence import (
    ConfidenceOptions,
    StepConfidence,
    aggregate,
    measure,
    scored_steps,
    step_confidence,
    token_confidence,
    word_confidence,
)
from .rules import JointChoices, JointOutput
from .tdt import DecodedToken, StepModel, TdtCarry, TdtConfig, TdtResult, tdt_greedy_decode
from .tdt_batch import BatchResult, BatchStepModel, tdt_greedy_decode_batch
from .timestamps import (
    SegmentSpan,
    TimestampConfig,
    TokenSpan,
    WordSpan,
    join_token_text,
    offset_to_seconds,
    segment_spans,
    segment_tokens,
    token_spans,
    word_spans,
)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parakeet-runtime")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _package_version()
"""The installed parakeet-runtime distribution's version (``0+unknown`` when it is not installed)."""


__all__ = [
    "BatchResult",
    "BatchStepModel",
    "ConfidenceOptions",
    "DecodedToken",
    "FloatArray",
    "IntArray",
    "JointChoices",
    "JointOutput",
    "SegmentSpan",
    "StepConfidence",
    "StepModel",
    "TdtCarry",
    "TdtConfig",
    "TdtResult",
    "TimestampConfig",
    "TokenSpan",
    "WordSpan",
    "__version__",
    "aggregate",
    "join_token_text",
    "measure",
    "offset_to_seconds",
    "scored_steps",
    "segment_spans",
    "segment_tokens",
    "step_confidence",
    "tdt_greedy_decode",
    "tdt_greedy_decode_batch",
    "token_confidence",
    "token_spans",
    "word_confidence",
    "word_spans",
]
