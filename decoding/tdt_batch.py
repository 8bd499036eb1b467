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
import numpy.typing as npt

from .tdt import DecodedToken, TdtConfig

StateT = TypeVar("StateT")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class BatchStepModel(Protocol[StateT]):
    """The predictor and the joint of a transducer, over rows of a batch.

    Implementations must be pure: states go in and come out, nothing is kept between calls.
    """

    def start_rows(self, batch_size: int) -> tuple[FloatArray, StateT]:
        """Projected predictor outputs ``(batch_size, joint_hidden)`` and state of ``batch_size`` rows after
        the start-of-sequence input (NeMo: the blank id fed to a zero state). The outputs may be modified
        by the caller."""
        ...

    def joint_rows(self, encoder_frames: FloatArray, predictor_outputs: FloatArray) -> FloatArray:
        """Joint logits ``(n, blank_id + 1 + len(durations))`` for ``n`` pairs of projected encoder frames
        ``(n, joint_hidden)`` and projected predictor outputs ``(n, joint_hidden)``."""
        ...

    def predict_joint_rows(
        self, labels: IntArray, state: StateT, rows: IntArray, encoder_frames: FloatArray
    ) -> tuple[FloatArray, StateT, FloatArray]:
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


def tdt_greedy_decode_batch(
    encoder_frames: FloatArray,
    lengths: Sequence[int] | IntArray,
    model: BatchStepModel[StateT],
    config: TdtConfig,
    lookahead: int = 1,
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

    Returns:
        Per utterance, the emitted tokens (id, frame, duration), and the final predictor state.
    """
    batch, max_time = encoder_frames.shape[0], encoder_frames.shape[1]
    length = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if length.shape[0] != batch:
        raise ValueError(f"{length.shape[0]} lengths for a batch of {batch}")
    if np.any(length < 0) or np.any(length > max_time):
        raise ValueError(f"lengths {length.tolist()} outside [0, {max_time}]")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")

    blank = config.blank_id
    num_labels = blank + 1
    durations = np.asarray(config.durations, dtype=np.int64)
    max_symbols = config.max_symbols

    all_rows = np.arange(batch, dtype=np.int64)
    predictor_output, state = model.start_rows(batch)  # fresh rows: updated in place below
    predictor_output = np.asarray(predictor_output, dtype=np.float32)

    time = np.zeros(batch, dtype=np.int64)
    last_emit_frame = np.full(batch, -1, dtype=np.int64)
    emitted_at_last_frame = np.zeros(batch, dtype=np.int64)
    tokens: list[list[DecodedToken]] = [[] for _ in range(batch)]
    # Each row's window: the label and the duration (through ``durations``; a blank's 0 read as 1) that
    # the joint gives at frames window_start... with the row's current predictor output.
    window_label = np.zeros((batch, lookahead), dtype=np.int64)
    window_duration = np.zeros((batch, lookahead), dtype=np.int64)
    window_start = np.zeros(batch, dtype=np.int64)
    window_size = np.zeros(batch, dtype=np.int64)
    offsets = np.arange(lookahead, dtype=np.int64)

    def choose(logits: FloatArray) -> tuple[IntArray, IntArray]:
        label = np.argmax(logits[..., :num_labels], axis=-1).astype(np.int64)
        duration = durations[np.argmax(logits[..., num_labels:], axis=-1)]
        return label, np.where((label == blank) & (duration == 0), 1, duration)

    active = all_rows[time < length]
    while active.size:
        # Rows whose window does not reach their time get the joint of the frames from there on.
        missing = active[time[active] >= window_start[active] + window_size[active]]
        if missing.size:
            size = np.minimum(lookahead, length[missing] - time[missing])
            frame_ok = offsets[None, :] < size[:, None]
            frame_rows = np.repeat(missing, size)
            frames = (time[missing][:, None] + offsets[None, :])[frame_ok]
            label, duration = choose(model.joint_rows(encoder_frames[frame_rows, frames],
                                                      predictor_output[frame_rows]))
            window_label[missing[:, None], offsets[None, :]] = _scatter(label, frame_ok)
            window_duration[missing[:, None], offsets[None, :]] = _scatter(duration, frame_ok)
            window_start[missing] = time[missing]
            window_size[missing] = size

        # Walk each row through the blanks of its window, up to its first label.
        emit_rows: list[IntArray] = []
        walking = active
        for _ in range(lookahead):
            offset = time[walking] - window_start[walking]
            inside = (offset < window_size[walking]) & (time[walking] < length[walking])
            walking, offset = walking[inside], offset[inside]
            if not walking.size:
                break
            label = window_label[walking, offset]
            is_blank = label == blank
            emit_rows.append(walking[~is_blank])
            blank_rows = walking[is_blank]
            time[blank_rows] += window_duration[blank_rows, offset[is_blank]]
            walking = blank_rows

        rows = np.concatenate(emit_rows) if emit_rows else all_rows[:0]
        if rows.size:
            rows.sort()
            emit_frame = time[rows]
            offset = emit_frame - window_start[rows]
            emit_label = window_label[rows, offset]
            emit_duration = window_duration[rows, offset]
            time[rows] = emit_frame + emit_duration
            for row, token_id, at, dur in zip(rows.tolist(), emit_label.tolist(), emit_frame.tolist(),
                                              emit_duration.tolist(), strict=True):
                tokens[row].append(DecodedToken(id=token_id, frame=at, duration=dur))
            same = last_emit_frame[rows] == emit_frame
            emitted_at_last_frame[rows] = np.where(same, emitted_at_last_frame[rows] + 1, 1)
            last_emit_frame[rows] = emit_frame
            if max_symbols is not None:
                force = (
                    (time[rows] < length[rows])
                    & (emitted_at_last_frame[rows] >= max_symbols)
                    & (last_emit_frame[rows] == time[rows])
                )
                time[rows[force]] += 1
            # The predictor consumes the labels; the joint at each row's next frame comes with it (rows
            # past their last frame get the joint of that frame, which is not used).
            next_frame = np.minimum(time[rows], length[rows] - 1)
            outputs, state, next_logits = model.predict_joint_rows(
                emit_label, state, rows, encoder_frames[rows, next_frame]
            )
            predictor_output[rows] = outputs
            window_label[rows, 0], window_duration[rows, 0] = choose(next_logits)
            window_start[rows] = next_frame
            window_size[rows] = 1
        active = active[time[active] < length[active]]

    return BatchResult(tokens=tuple(tuple(t) for t in tokens), state=state)


def _scatter(values: IntArray, where: npt.NDArray[np.bool_]) -> IntArray:
    """``values`` laid out row by row at the True places of ``where`` (zeros elsewhere)."""
    out = np.zeros(where.shape, dtype=np.int64)
    out[where] = values
    return out
