"""Confidence scores for greedy TDT decoding, computed exactly as NeMo computes them.

Mirrors ``asr_confidence_utils`` (the measure bank and the aggregation bank), the per-step confidence of
``GreedyBatchedTDTLabelLoopingComputer`` (``_get_step_confidence``: the measure of the log-softmax over the
label logits, blank included, and with ``include_duration`` also of the log-softmax over the duration
logits), ``AbstractRNNTDecoding.compute_confidence`` for TDT (token confidence, with or without the blank
steps that follow a token) and ``_aggregate_token_confidence_subwords_sentencepiece`` (word confidence).

The searches record one :class:`StepConfidence` per joint decision they read (only the non-blank ones
when ``exclude_blank``, as NeMo does); the functions here turn those into token and word confidences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .arrays import FloatArray

Method = Literal["max_prob", "entropy"]
EntropyType = Literal["gibbs", "tsallis", "renyi"]
EntropyNorm = Literal["lin", "exp"]
Aggregation = Literal["mean", "min", "max", "prod"]

_METHODS = ("max_prob", "entropy")
_ENTROPY_TYPES = ("gibbs", "tsallis", "renyi")
_ENTROPY_NORMS = ("lin", "exp")
_AGGREGATIONS = ("mean", "min", "max", "prod")


@dataclass(frozen=True)
class ConfidenceOptions:
    """What confidence to compute; the defaults are NeMo's (``ConfidenceConfig`` and
    ``ConfidenceMethodConfig``)."""

    method: Method = "entropy"
    """``"max_prob"``: the largest probability; ``"entropy"``: a normalized entropy (NeMo's ``method_cfg.name``)."""
    entropy_type: EntropyType = "tsallis"
    """Which entropy with ``method="entropy"``: ``"gibbs"``, ``"tsallis"`` or ``"renyi"``."""
    alpha: float = 0.33
    """Power scale of the log-probabilities (the entropies' α; ``max_prob`` with α ≠ 1 too); > 0."""
    entropy_norm: EntropyNorm = "exp"
    """How an entropy maps to [0, 1]: ``"lin"`` (linear) or ``"exp"`` (exponential with a linear shift)."""
    exclude_blank: bool = True
    """Token confidence from the token's own step only; ``False``: aggregated with the blank steps that
    follow the token up to the next one (blanks before the first token count for nothing), as NeMo does."""
    aggregation: Aggregation = "min"
    """How token confidences combine into a word's (and here a segment's, over its words):
    ``"mean"``, ``"min"``, ``"max"`` or ``"prod"``. With ``include_duration`` it also combines a step's
    label and duration confidence."""
    include_duration: bool = False
    """Combine each step's label confidence with the confidence of its duration distribution (NeMo's
    ``tdt_include_duration``). As in NeMo, the duration measure normalizes by the label vocabulary size."""

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if self.entropy_type not in _ENTROPY_TYPES:
            raise ValueError(f"entropy_type must be one of {_ENTROPY_TYPES}, got {self.entropy_type!r}")
        if self.entropy_norm not in _ENTROPY_NORMS:
            raise ValueError(f"entropy_norm must be one of {_ENTROPY_NORMS}, got {self.entropy_norm!r}")
        if self.aggregation not in _AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {_AGGREGATIONS}, got {self.aggregation!r}")
        if isinstance(self.alpha, bool) or not (
                isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        for name in ("exclude_blank", "include_duration"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class StepConfidence:
    """The confidence of one decision of the search (one joint evaluation it read)."""

    label: int
    """The label chosen (the blank id for a blank)."""
    frame: int
    """Encoder frame of the decision."""
    confidence: float
    """Confidence of the label distribution."""
    duration_confidence: float | None = None
    """Confidence of the duration distribution (only with ``include_duration``)."""
    log_prob: float | None = None
    """Natural log of the chosen label's probability under the label distribution (the log-softmax of the label
    logits, blank included, at ``label``): what a caller averages into a log-likelihood (OpenAI's
    ``avg_logprob``). Comes free with the confidence measure, which reads the same log-softmax; ``None`` where
    a step was made by hand."""


def log_softmax(logits: FloatArray) -> FloatArray:
    """``log_softmax`` over the last axis in float32 (NaN and infinities replaced as ``torch.nan_to_num``)."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - np.max(x, axis=-1, keepdims=True)
    out = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    result: FloatArray = np.nan_to_num(out).astype(np.float32, copy=False)
    return result


def measure(log_probs: FloatArray, vocab_size: int, options: ConfidenceOptions) -> FloatArray:
    """NeMo's confidence measure of log-probabilities ``(..., n)``: shape ``(...)``, float32, in [0, 1].

    Args:
        log_probs: log-softmax output.
        vocab_size: NeMo's ``v``: the label vocabulary with the blank (also for the duration measure).
        options: method, entropy type, norm and ``alpha``.
    """
    x = np.asarray(log_probs, dtype=np.float32)
    v = float(vocab_size)
    t = float(options.alpha)
    if options.method == "max_prob":
        top = np.max(x, axis=-1)
        if t == 1.0:
            return _f32((np.exp(top) * v - 1) / (v - 1))
        return _f32((np.exp(top * t) * math.pow(v, t) - 1) / (math.pow(v, t) - 1))
    if t == 1.0:  # every entropy is the Gibbs (Shannon) entropy
        neg_gibbs = np.sum(np.exp(x) * x, axis=-1)
        if options.entropy_norm == "lin":
            return _f32(1 + neg_gibbs / math.log(v))
        return _f32((np.exp(neg_gibbs) * v - 1) / (v - 1))
    scaled = np.exp(x * t)
    kind = (options.entropy_type, options.entropy_norm)
    if kind == ("gibbs", "lin"):
        return _f32(1 + np.sum(scaled * x, axis=-1) / math.log(v) / math.pow(v, 1 - t))
    if kind == ("gibbs", "exp"):
        floor = math.pow(v, -t * math.pow(v, 1 - t))
        return _f32((np.exp(np.sum(scaled * x, axis=-1) * t) - floor) / (1 - floor))
    neg_alpha = np.sum(scaled, axis=-1)
    if kind == ("tsallis", "lin"):
        return _f32(1 + (1 - neg_alpha) / (math.pow(v, 1 - t) - 1))
    if kind == ("tsallis", "exp"):
        floor = math.exp((1 - math.pow(v, 1 - t)) / (1 - t))
        return _f32((np.exp((1 - neg_alpha) / (1 - t)) - floor) / (1 - floor))
    if kind == ("renyi", "lin"):
        return _f32(1 + np.log2(neg_alpha) / (t - 1) / math.log(v, 2))
    return _f32((np.power(neg_alpha, 1 / (t - 1)) * v - 1) / (v - 1))  # renyi, exp


def step_confidence(
    logits: FloatArray, num_labels: int, options: ConfidenceOptions
) -> tuple[FloatArray, FloatArray | None]:
    """The confidence of each row of joint logits ``(..., num_labels + num_durations)``: of the label
    distribution, and (with ``include_duration``, else ``None``) of the duration distribution; shape
    ``(...)`` each, float32."""
    labels, durations, _ = _step_measures(logits, num_labels, options)
    return labels, durations


def scored_steps(
    logits: FloatArray, labels: Sequence[int], frames: Sequence[int], num_labels: int, options: ConfidenceOptions
) -> list[StepConfidence]:
    """The recorded steps of a search, scored: one :class:`StepConfidence` per row of joint logits
    ``(n, num_labels + num_durations)``, with the label chosen there and its frame (``n`` each). One log-softmax
    per row gives both the confidence measure and the chosen label's ``log_prob``."""
    label_conf, duration_conf, log_probs = _step_measures(logits, num_labels, options)
    chosen = np.asarray(labels, dtype=np.int64)
    chosen_log_probs = np.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0] if chosen.size else chosen
    durations: list[float | None] = [None] * chosen.size if duration_conf is None else duration_conf.tolist()
    return [
        StepConfidence(label, frame, value, duration_value, log_prob)
        for label, frame, value, duration_value, log_prob in zip(
            chosen.tolist(), frames, label_conf.tolist(), durations, chosen_log_probs.tolist(), strict=True
        )
    ]


def _step_measures(
    logits: FloatArray, num_labels: int, options: ConfidenceOptions
) -> tuple[FloatArray, FloatArray | None, FloatArray]:
    """:func:`step_confidence`, and the label log-softmax it measured (``(..., num_labels)``, float32)."""
    log_probs = log_softmax(logits[..., :num_labels])
    labels = measure(log_probs, num_labels, options)
    if not options.include_duration:
        return labels, None, log_probs
    return labels, measure(log_softmax(logits[..., num_labels:]), num_labels, options), log_probs


def aggregate(values: Sequence[float], aggregation: Aggregation) -> float:
    """NeMo's aggregation of confidence values (``mean`` is ``sum / len``, ``prod`` is ``math.prod``);
    float32 values are combined in float32 as NeMo's tensors are.

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("cannot aggregate an empty list of confidences")
    return _AGGREGATE[aggregation](values)


_AGGREGATE: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": lambda x: sum(x) / len(x),
    "min": min,
    "max": max,
    "prod": math.prod,
}


def token_confidence(
    steps: Sequence[StepConfidence], blank_id: int, options: ConfidenceOptions
) -> tuple[float, ...]:
    """The confidence of each emitted token, from the steps the search recorded, as NeMo's
    ``compute_confidence`` for TDT.

    With ``exclude_blank``, a token's confidence is its step's (with ``include_duration``: its label and
    duration confidence aggregated). Without, it is the aggregate of its step and the blank steps after it
    up to the next token (NeMo walks backwards and aggregates ``[token] + blanks``, latest blank first);
    NeMo keeps these as float32 tensors, so this path computes in float32.
    """
    if options.exclude_blank:
        out = []
        for step in steps:
            if step.label == blank_id:
                continue
            if step.duration_confidence is None:
                out.append(step.confidence)
            else:
                out.append(aggregate([step.confidence, step.duration_confidence], options.aggregation))
        return tuple(out)

    def value(step: StepConfidence) -> float:
        own = np.float32(step.confidence)
        if step.duration_confidence is None:
            return own  # type: ignore[return-value]  # a float32 scalar, combined in float32
        return aggregate([own, np.float32(step.duration_confidence)], options.aggregation)  # type: ignore[list-item]

    reversed_tokens: list[float] = []
    blanks_after: list[float] = []
    for step in reversed(steps):
        if step.label == blank_id:
            blanks_after.append(value(step))
        elif not blanks_after:
            reversed_tokens.append(value(step))
        else:
            reversed_tokens.append(aggregate([value(step), *blanks_after], options.aggregation))
            blanks_after = []
    return tuple(float(c) for c in reversed(reversed_tokens))


def word_confidence(
    token_confidences: Sequence[float],
    pieces: Sequence[str],
    texts: Sequence[str],
    aggregation: Aggregation,
    unk_piece: str = "<unk>",
) -> tuple[float, ...]:
    """Word confidences from token confidences, grouped as NeMo's
    ``_aggregate_token_confidence_subwords_sentencepiece`` groups them: a token whose piece differs from
    its text (it carries the ``▁`` word marker), or that follows ``<unk>``, starts a word; a lone ``▁``
    piece makes no word of its own.

    Args:
        token_confidences: one per token.
        pieces: each token's vocabulary entry.
        texts: each token decoded on its own.
        aggregation: how a word's token confidences combine.
        unk_piece: the unknown-token piece.

    Raises:
        ValueError: the three sequences differ in length.
    """
    if not (len(token_confidences) == len(pieces) == len(texts)):
        raise ValueError("token_confidences, pieces and texts must have the same length")
    words: list[float] = []
    if not pieces:
        return ()
    start = 0
    prev_unk = False
    prev_underline = False
    for i, (piece, text) in enumerate(zip(pieces, texts, strict=True)):
        if (piece != text or prev_unk) and i > start:
            if not prev_underline:
                words.append(aggregate(token_confidences[start:i], aggregation))
            start = i
        prev_unk = piece == unk_piece
        prev_underline = piece == "▁"
    if not prev_underline:
        words.append(aggregate(token_confidences[start:], aggregation))
    return tuple(float(w) for w in words)


def _f32(values: FloatArray | float) -> FloatArray:
    return np.asarray(values, dtype=np.float32)
