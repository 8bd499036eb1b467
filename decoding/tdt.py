"""Greedy decoding of a Token-and-Duration Transducer (TDT), identical to NeMo's label-looping search.

The search follows ``GreedyBatchedTDTLabelLoopingComputer.torch_impl`` for one utterance:

* at frame ``t`` the joint gives label logits (vocabulary + blank) and duration logits; the label and
  the duration are chosen by two independent argmaxes, and the duration *index* maps through the
  model's ``durations`` list;
* a blank whose duration is 0 advances by one frame (a blank must move time forward);
* blanks do not update the predictor; the search keeps evaluating the joint with the same predictor
  output until it finds a non-blank label or runs out of frames;
* a non-blank label is emitted at the frame where it was found, with its predicted duration, and
  only then the predictor consumes it;
* after ``max_symbols`` labels emitted at the same frame, time is forced one frame ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from .arrays import FloatArray, IntArray
from .confidence import ConfidenceOptions, StepConfidence, scored_steps
from .rules import JointOutput, JointReader, blank_skip, forced_ahead, labels_at_frame, logits_for_confidence

StateT = TypeVar("StateT")

CONFIDENCE_BLOCK = 256
"""Recorded steps whose confidence the single-utterance search computes in one call (bounds the logits it
keeps: 256 rows of Parakeet's ~8200 logits are 8 MB)."""


@dataclass(frozen=True)
class TdtConfig:
    """Everything the greedy search needs to know about the model's output layout."""

    blank_id: int
    """Index of the blank label in the label logits (NeMo puts it right after the vocabulary)."""
    durations: tuple[int, ...]
    """Frame skips that the duration logits stand for, in logit order (e.g. ``(0, 1, 2, 3, 4)``)."""
    max_symbols: int | None
    """Most labels emitted at one frame before time is forced forward; ``None`` means no limit."""

    def __post_init__(self) -> None:
        if not self.durations:
            raise ValueError("a TDT model needs at least one duration")
        if any(d < 0 for d in self.durations):
            raise ValueError(f"durations must be non-negative, got {self.durations}")
        if not any(d > 0 for d in self.durations):  # every label would stay on its frame
            raise ValueError(f"durations must include a positive one, got {self.durations}")
        if self.max_symbols is not None and self.max_symbols < 1:
            raise ValueError(f"max_symbols must be >= 1 or None, got {self.max_symbols}")


@dataclass(frozen=True)
class DecodedToken:
    """One emitted label."""

    id: int
    """Token id (never the blank)."""
    frame: int
    """Encoder frame at which the label was emitted."""
    duration: int
    """Predicted duration in encoder frames (may be 0)."""


class StepModel(Protocol[StateT]):
    """The predictor and the joint of a transducer, one step at a time.

    Implementations must not keep per-call state: the predictor state travels through ``predict``.
    """

    def initial_state(self) -> StateT:
        """The predictor state before any label (NeMo: zeros)."""
        ...

    def start(self) -> tuple[FloatArray, StateT]:
        """``predict(blank_id, initial_state())``: the start of every utterance (an implementation may
        compute it once)."""
        ...

    def predict(self, label: int, state: StateT) -> tuple[FloatArray, StateT]:
        """Feed ``label`` (the blank id stands for start-of-sequence) and return the projected
        predictor output, shape ``(joint_hidden,)``, and the new state."""
        ...

    def joint_frames(self, encoder_frames: FloatArray, predictor_output: FloatArray) -> JointOutput:
        """Joint logits for ``k`` consecutive projected encoder frames ``(k, joint_hidden)``, each with the
        same projected predictor output ``(joint_hidden,)``: shape ``(k, blank_id + 1 + len(durations))``
        (or their :class:`~.rules.JointChoices`, without confidence). One call, so that a large joint's weights
        are read once for the frames a run of blanks visits."""
        ...

    def predict_joint(
        self, label: int, state: StateT, encoder_frames: FloatArray
    ) -> tuple[FloatArray, StateT, JointOutput]:
        """``predict(label, state)``, then the joint logits ``(k, blank_id + 1 + len(durations))`` of ``k``
        consecutive projected encoder frames ``(k, joint_hidden)`` with its output: the projected predictor
        output, the new state and the logits. One call, so that an implementation can run both in one
        graph (after every emitted label the search needs the joint from the next frame on) and read the
        joint's weights once for the frames a run of blanks after the label visits."""
        ...


@dataclass(frozen=True)
class TdtCarry(Generic[StateT]):
    """Where a search over one piece of an utterance's frames stopped: what the search of the next piece
    (the frames right after it) starts from, so that decoding piece by piece is one continuous search."""

    predictor_output: FloatArray
    """The projected predictor output after the last emitted label (or after the start of the sequence)."""
    state: StateT
    """The predictor state that goes with it."""
    skip: int
    """Frames of the next piece the search steps over before its first decision: the part of the last
    decision's duration that ran past the end of this piece (0 when it ended exactly there)."""


@dataclass(frozen=True)
class TdtResult(Generic[StateT]):
    """The result of decoding one utterance (or one piece of it)."""

    tokens: tuple[DecodedToken, ...]
    """Emitted labels in order."""
    state: StateT
    """Predictor state after the last emitted label."""
    carry: TdtCarry[StateT] | None = None
    """Where the search stopped, to continue it over the frames that follow (:func:`tdt_greedy_decode`
    always sets it)."""
    steps: tuple[StepConfidence, ...] | None = None
    """With confidence on: the confidence of each decision the search read, in order (only the emitted
    labels' when ``exclude_blank``); ``None`` when off."""


def tdt_greedy_decode(
    encoder_frames: FloatArray,
    length: int,
    model: StepModel[StateT],
    config: TdtConfig,
    carry: TdtCarry[StateT] | None = None,
    lookahead: int = 1,
    confidence: ConfidenceOptions | None = None,
    label_lookahead: int | None = None,
) -> TdtResult[StateT]:
    """Greedy TDT search over one utterance, or over one piece of it.

    Decoding the frames of an utterance in consecutive pieces, each piece starting from the ``carry`` of the
    one before it, gives the same tokens as one search over all of them (token frames count from the start
    of each piece).

    Args:
        encoder_frames: projected encoder output, shape ``(T, joint_hidden)``, float32.
        length: number of valid frames (``<= T``).
        model: predictor and joint step functions.
        config: blank id, durations and ``max_symbols``.
        carry: where the search of the previous piece of the same utterance stopped (its result's
            ``carry``); ``None`` starts an utterance (the model's start-of-sequence output and state).
        lookahead: frames whose joint one call computes while looking for a non-blank label (the
            predictor output does not change between blanks, so a run of blanks can use them); the
            tokens do not depend on it.
        label_lookahead: frames whose joint the step after an emitted label computes with the new predictor
            output (``None``: ``lookahead``). The next label often comes within a frame or two, so fewer frames
            here than in a run of blanks save the rows nobody reads; the tokens do not depend on it either.
        confidence: record each decision's confidence (see :mod:`.confidence`); ``None``: nothing is
            recorded and nothing is computed.

    Returns:
        The emitted tokens (id, frame, duration), the final predictor state, the carry for the frames
        that follow and, with ``confidence``, the recorded steps.
    """
    if carry is not None and carry.skip < 0:
        raise ValueError(f"a carry's skip must be >= 0, got {carry.skip}")
    if length < 0 or length > encoder_frames.shape[0]:
        raise ValueError(f"length {length} is outside [0, {encoder_frames.shape[0]}]")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")
    label_lookahead = lookahead if label_lookahead is None else label_lookahead
    if label_lookahead < 1:
        raise ValueError(f"label_lookahead must be >= 1, got {label_lookahead}")
    reader = JointReader.of(config.blank_id, config.durations)

    if carry is None:
        predictor_output, current_state = model.start()
    else:
        predictor_output, current_state = carry.predictor_output, carry.state

    tokens: list[DecodedToken] = []
    last_emit_frame = -1
    emitted_at_last_frame = 0
    time = 0 if carry is None else carry.skip
    # The label and the duration that the joint gives at frames window_start... with the current predictor
    # output: up to ``lookahead`` frames read from ``joint_frames``, or ``label_lookahead`` that ``predict_joint``
    # brings.
    window: tuple[IntArray, IntArray] | None = None
    window_start = 0
    # With confidence on: the window's logits, the steps read, and the steps whose confidence is not
    # computed yet (computed together, a block at a time: one measure call per step costs more than the
    # measure itself).
    window_logits: FloatArray | None = None
    steps: list[StepConfidence] | None = None if confidence is None else []
    pending: list[tuple[int, int, FloatArray]] = []
    record_blanks = confidence is not None and not confidence.exclude_blank

    def read(logits: JointOutput) -> tuple[IntArray, IntArray]:
        nonlocal window_logits
        if confidence is not None:
            window_logits = logits_for_confidence(logits)
        return reader.choose(logits)

    def record(label: int, frame: int, offset: int) -> None:
        assert window_logits is not None
        pending.append((label, frame, window_logits[offset]))
        if len(pending) >= CONFIDENCE_BLOCK:
            flush()

    def flush() -> None:
        assert steps is not None and confidence is not None
        if not pending:
            return
        labels, frames, logits = zip(*pending, strict=True)
        steps.extend(scored_steps(np.stack(logits), labels, frames, reader.num_labels, confidence))
        pending.clear()

    while time < length:
        if window is None or time >= window_start + window[0].shape[0]:
            window_start = time
            window = read(
                model.joint_frames(encoder_frames[time : min(time + lookahead, length)], predictor_output)
            )
        label, duration = int(window[0][time - window_start]), int(window[1][time - window_start])
        if label == config.blank_id:
            if record_blanks:
                record(label, time, time - window_start)
            # Keep looking for a non-blank label without touching the predictor.
            time += blank_skip(duration)
            continue
        if steps is not None:
            record(label, time, time - window_start)

        tokens.append(DecodedToken(id=label, frame=time, duration=duration))
        emitted_at_last_frame = labels_at_frame(emitted_at_last_frame, last_emit_frame, time)
        last_emit_frame = time
        time += duration + forced_ahead(duration, emitted_at_last_frame, config.max_symbols)
        # The predictor consumes the label; the joint from the next frame on comes with it. After the
        # last frame there is no next frame: the joint of the last one is computed and not used.
        window_start = min(time, length - 1)
        predictor_output, current_state, logits = model.predict_joint(
            label, current_state, encoder_frames[window_start : min(window_start + label_lookahead, length)]
        )
        window = read(logits)

    if steps is not None:
        flush()
    return TdtResult(
        tokens=tuple(tokens),
        state=current_state,
        carry=TdtCarry(predictor_output, current_state, max(time - length, 0)),
        steps=None if steps is None else tuple(steps),
    )
