"""Greedy TDT decoding of several utterances at once, identical to decoding each one alone.

Each utterance runs the same search as :func:`~parakeet_runtime.decoding.tdt.tdt_greedy_decode`, written
as a state machine in ticks. In a tick every utterance still searching walks through the blanks of its
window (the joint of up to ``lookahead`` frames with its current predictor output) up to its first
label: one batched joint call per tick fills the windows that ran out, and one batched predictor call
feeds the labels found, which also gives each of those utterances its joint at the next frame.
Utterances whose time runs past their length drop out. Because no utterance's transitions depend on
another's, the tokens of each are exactly those of a solo search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from .arrays import BoolArray, FloatArray, IntArray
from .confidence import ConfidenceOptions, StepConfidence, scored_steps
from .rules import JointOutput, JointReader, blank_skip, forced_ahead, labels_at_frame, logits_for_confidence
from .tdt import CONFIDENCE_BLOCK, DecodedToken, TdtConfig

StateT = TypeVar("StateT")


class BatchStepModel(Protocol[StateT]):
    """The predictor and the joint of a transducer, over rows of a batch.

    Implementations must be pure: states go in and come out, nothing is kept between calls.
    """

    def start_rows(self, batch_size: int) -> tuple[FloatArray, StateT]:
        """Projected predictor outputs ``(batch_size, joint_hidden)`` and state of ``batch_size`` rows after
        the start-of-sequence input (NeMo: the blank id fed to a zero state). The outputs may be modified
        by the caller."""
        ...

    def joint_rows(self, encoder_frames: FloatArray, predictor_outputs: FloatArray) -> JointOutput:
        """Joint logits ``(n, blank_id + 1 + len(durations))`` for ``n`` pairs of projected encoder frames
        ``(n, joint_hidden)`` and projected predictor outputs ``(n, joint_hidden)`` (or their
        :class:`~.rules.JointChoices`, without confidence)."""
        ...

    def predict_joint_rows(
        self, labels: IntArray, state: StateT, rows: IntArray, encoder_frames: FloatArray
    ) -> tuple[FloatArray, StateT, JointOutput]:
        """Feed ``labels[i]`` to row ``rows[i]`` of ``state``, then take the joint of ``encoder_frames[i]``
        (shape ``(len(rows), joint_hidden)``) with each row's new output, in one call (so that an
        implementation can run both in one graph).

        Returns the projected predictor outputs ``(len(rows), joint_hidden)``, a new state in which only
        ``rows`` have changed, and the logits ``(len(rows), blank_id + 1 + len(durations))``.
        """
        ...


@dataclass(frozen=True)
class BatchResult(Generic[StateT]):
    """The result of decoding a batch."""

    tokens: tuple[tuple[DecodedToken, ...], ...]
    """Emitted labels of each utterance, in batch order."""
    state: StateT
    """Predictor state of every row after its last emitted label."""
    steps: tuple[tuple[StepConfidence, ...], ...] | None = None
    """With confidence on: per utterance, the confidence of each decision its search read, in order (only
    the emitted labels' when ``exclude_blank``); ``None`` when off."""


def tdt_greedy_decode_batch(
    encoder_frames: FloatArray,
    lengths: Sequence[int] | IntArray,
    model: BatchStepModel[StateT],
    config: TdtConfig,
    lookahead: int = 1,
    confidence: ConfidenceOptions | None = None,
) -> BatchResult[StateT]:
    """Greedy TDT search over a padded batch.

    Args:
        encoder_frames: projected encoder output, shape ``(B, T, joint_hidden)``.
        lengths: valid frames of each utterance (each ``<= T``).
        model: batched predictor and joint step functions.
        config: blank id, durations and ``max_symbols``.
        lookahead: frames of each row whose joint one call computes while the row looks for a non-blank
            label; in one tick a row walks through the blanks of its window. The tokens do not depend on
            it.
        confidence: record each decision's confidence (see :mod:`.confidence`); ``None``: nothing is
            recorded and nothing is computed.

    Returns:
        Per utterance, the emitted tokens (id, frame, duration) and, with ``confidence``, the recorded
        steps; and the final predictor state.
    """
    batch, max_time = encoder_frames.shape[0], encoder_frames.shape[1]
    length = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if length.shape[0] != batch:
        raise ValueError(f"{length.shape[0]} lengths for a batch of {batch}")
    if np.any(length < 0) or np.any(length > max_time):
        raise ValueError(f"lengths {length.tolist()} outside [0, {max_time}]")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")

    search = _BatchSearch.begin(encoder_frames, length, model, config, lookahead, confidence)
    active = search.rows_searching(np.arange(batch, dtype=np.int64))
    while active.size:
        search.refill(active)
        search.emit(search.walk_blanks(active))
        active = search.rows_searching(active)
    search.flush()
    return BatchResult(
        tokens=tuple(tuple(t) for t in search.tokens),
        state=search.state,
        steps=None if search.steps is None else tuple(tuple(s) for s in search.steps),
    )


@dataclass
class _BatchSearch(Generic[StateT]):
    """The state of one :func:`tdt_greedy_decode_batch` call, one entry per row; made by the call and
    dropped when it returns.

    Each row's window holds the label and the frames to move (a label's duration; a blank's, at least one)
    that the joint gives at frames ``window_start...`` (``window_size`` of them) with the row's current
    predictor output.
    """

    encoder_frames: FloatArray
    length: IntArray
    model: BatchStepModel[StateT]
    config: TdtConfig
    reader: JointReader
    lookahead: int
    predictor_output: FloatArray
    state: StateT
    time: IntArray
    last_emit_frame: IntArray
    emitted_at_last_frame: IntArray
    window_label: IntArray
    window_skip: IntArray
    window_start: IntArray
    window_size: IntArray
    offsets: IntArray
    """``0 ... lookahead - 1``: the positions of a window."""
    tokens: list[list[DecodedToken]]
    confidence: ConfidenceOptions | None
    window_logits: FloatArray
    """Joint logits at the window's frames ``(batch, lookahead, width)`` (empty when confidence is off)."""
    steps: list[list[StepConfidence]] | None
    pending: list[tuple[IntArray, IntArray, IntArray, FloatArray]]
    """Recorded steps whose confidence is not computed yet: rows, labels, frames, logits (computed
    together, a block at a time)."""
    pending_count: int = 0

    @classmethod
    def begin(
        cls,
        encoder_frames: FloatArray,
        length: IntArray,
        model: BatchStepModel[StateT],
        config: TdtConfig,
        lookahead: int,
        confidence: ConfidenceOptions | None = None,
    ) -> _BatchSearch[StateT]:
        batch = length.shape[0]
        on = confidence is not None
        width = config.blank_id + 1 + len(config.durations)
        predictor_output, state = model.start_rows(batch)  # fresh rows: updated in place below
        return cls(
            encoder_frames=encoder_frames,
            length=length,
            model=model,
            config=config,
            reader=JointReader.of(config.blank_id, config.durations),
            lookahead=lookahead,
            predictor_output=np.asarray(predictor_output, dtype=np.float32),
            state=state,
            time=np.zeros(batch, dtype=np.int64),
            last_emit_frame=np.full(batch, -1, dtype=np.int64),
            emitted_at_last_frame=np.zeros(batch, dtype=np.int64),
            window_label=np.zeros((batch, lookahead), dtype=np.int64),
            window_skip=np.zeros((batch, lookahead), dtype=np.int64),
            window_start=np.zeros(batch, dtype=np.int64),
            window_size=np.zeros(batch, dtype=np.int64),
            offsets=np.arange(lookahead, dtype=np.int64),
            tokens=[[] for _ in range(batch)],
            confidence=confidence,
            window_logits=np.zeros((batch, lookahead, width) if on else (0, 0, 0), dtype=np.float32),
            steps=[[] for _ in range(batch)] if on else None,
            pending=[],
        )

    def rows_searching(self, rows: IntArray) -> IntArray:
        """Those of ``rows`` whose time has not run past their length."""
        return rows[self.time[rows] < self.length[rows]]

    def read(self, logits: JointOutput) -> tuple[IntArray, IntArray]:
        """The label and the frames to move at each position of ``logits``."""
        label, duration = self.reader.choose(logits)
        return label, np.where(label == self.config.blank_id, blank_skip(duration), duration)

    def refill(self, active: IntArray) -> None:
        """Give the rows whose window does not reach their time the joint of up to ``lookahead`` frames
        from there on, in one batched joint call."""
        missing = active[self.time[active] >= self.window_start[active] + self.window_size[active]]
        if not missing.size:
            return
        offsets = self.offsets
        start = self.time[missing]
        size = np.minimum(self.lookahead, self.length[missing] - start)
        frame_ok = offsets[None, :] < size[:, None]
        frame_rows = np.repeat(missing, size)
        frames = (start[:, None] + offsets[None, :])[frame_ok]
        logits = self.model.joint_rows(self.encoder_frames[frame_rows, frames], self.predictor_output[frame_rows])
        label, skip = self.read(logits)
        if self.confidence is not None:
            window_rows, window_offsets = np.nonzero(frame_ok)
            self.window_logits[missing[window_rows], window_offsets] = logits_for_confidence(logits)
        self.window_label[missing[:, None], offsets[None, :]] = _scatter(label, frame_ok)
        self.window_skip[missing[:, None], offsets[None, :]] = _scatter(skip, frame_ok)
        self.window_start[missing] = start
        self.window_size[missing] = size

    def walk_blanks(self, active: IntArray) -> IntArray:
        """Move each row through the blanks of its window up to its first label; return the rows that found
        one (in row order), standing at the label's frame."""
        found: list[IntArray] = []
        walking = active
        for _ in range(self.lookahead):
            offset = self.time[walking] - self.window_start[walking]
            inside = (offset < self.window_size[walking]) & (self.time[walking] < self.length[walking])
            walking, offset = walking[inside], offset[inside]
            if not walking.size:
                break
            is_blank = self.window_label[walking, offset] == self.config.blank_id
            found.append(walking[~is_blank])
            walking = walking[is_blank]
            if self.confidence is not None and not self.confidence.exclude_blank:
                self.record(walking, offset[is_blank])
            self.time[walking] += self.window_skip[walking, offset[is_blank]]
        return np.sort(np.concatenate(found)) if found else active[:0]

    def emit(self, rows: IntArray) -> None:
        """Emit the label each of ``rows`` stands at, move its time, and feed the label to its predictor,
        which also brings the row's joint at its next frame (a one-frame window)."""
        if not rows.size:
            return
        frame = self.time[rows]
        offset = frame - self.window_start[rows]
        label = self.window_label[rows, offset]
        duration = self.window_skip[rows, offset]
        if self.confidence is not None:
            self.record(rows, offset)
        for row, token_id, at, dur in zip(
            rows.tolist(), label.tolist(), frame.tolist(), duration.tolist(), strict=True
        ):
            self.tokens[row].append(DecodedToken(id=token_id, frame=at, duration=dur))
        count = labels_at_frame(self.emitted_at_last_frame[rows], self.last_emit_frame[rows], frame)
        self.emitted_at_last_frame[rows] = count
        self.last_emit_frame[rows] = frame
        self.time[rows] = frame + duration + forced_ahead(duration, count, self.config.max_symbols)
        # Rows past their last frame get the joint of that frame, which is not used.
        next_frame = np.minimum(self.time[rows], self.length[rows] - 1)
        outputs, self.state, next_logits = self.model.predict_joint_rows(
            label, self.state, rows, self.encoder_frames[rows, next_frame]
        )
        self.predictor_output[rows] = outputs
        self.window_label[rows, 0], self.window_skip[rows, 0] = self.read(next_logits)
        if self.confidence is not None:
            self.window_logits[rows, 0] = logits_for_confidence(next_logits)
        self.window_start[rows] = next_frame
        self.window_size[rows] = 1

    def record(self, rows: IntArray, offset: IntArray) -> None:
        """Record the step each of ``rows`` stands at (window position ``offset``) for confidence."""
        if not rows.size:
            return
        self.pending.append((rows, self.window_label[rows, offset], self.time[rows].copy(),
                             self.window_logits[rows, offset]))
        self.pending_count += rows.size
        if self.pending_count >= CONFIDENCE_BLOCK:
            self.flush()

    def flush(self) -> None:
        """Compute the confidence of the pending steps and append them to their rows, in order."""
        if self.steps is None or self.confidence is None or not self.pending:
            return
        rows, labels, frames, logits = (np.concatenate(parts) for parts in zip(*self.pending, strict=True))
        scored = scored_steps(logits, labels.tolist(), frames.tolist(), self.reader.num_labels, self.confidence)
        for row, step in zip(rows.tolist(), scored, strict=True):
            self.steps[row].append(step)
        self.pending.clear()
        self.pending_count = 0


def _scatter(values: IntArray, where: BoolArray) -> IntArray:
    """``values`` laid out row by row at the True places of ``where`` (zeros elsewhere)."""
    out = np.zeros(where.shape, dtype=np.int64)
    out[where] = values
    return out
