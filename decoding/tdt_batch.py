"""Greedy TDT decoding of several utterances at once, identical to decoding each one alone.

Each utterance runs the same search as :func:`~parakeet_runtime.decoding.tdt.tdt_greedy_decode`, written
as a state machine that makes one joint evaluation per tick. All utterances still searching advance
together: one batched predictor call per tick for the utterances that emitted a label, which also gives
their joint at the next frame, and one batched joint call for the others. Utterances whose time runs past
their length drop out. Because no utterance's transitions depend on another's, the tokens of each are
exactly those of a solo search.
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
) -> BatchResult[StateT]:
    """Greedy TDT search over a padded batch.

    Args:
        encoder_frames: projected encoder output, shape ``(B, T, joint_hidden)``.
        lengths: valid frames of each utterance (each ``<= T``).
        model: batched predictor and joint step functions.
        config: blank id, durations and ``max_symbols``.

    Returns:
        Per utterance, the emitted tokens (id, frame, duration), and the final predictor state.
    """
    batch, max_time = encoder_frames.shape[0], encoder_frames.shape[1]
    length = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if length.shape[0] != batch:
        raise ValueError(f"{length.shape[0]} lengths for a batch of {batch}")
    if np.any(length < 0) or np.any(length > max_time):
        raise ValueError(f"lengths {length.tolist()} outside [0, {max_time}]")

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
    # Rows whose joint at ``time`` came with their last predictor call, and those logits.
    pending = np.zeros(batch, dtype=bool)
    pending_logits = np.zeros((batch, num_labels + len(durations)), dtype=np.float32)

    active = all_rows[time < length]
    while active.size:
        frame = time[active]
        missing = active[~pending[active]]
        if missing.size:
            pending_logits[missing] = model.joint_rows(encoder_frames[missing, time[missing]],
                                                       predictor_output[missing])
        logits = pending_logits[active]
        pending[active] = False
        label = np.argmax(logits[:, :num_labels], axis=1).astype(np.int64)
        duration = durations[np.argmax(logits[:, num_labels:], axis=1)]
        is_blank = label == blank
        duration = np.where(is_blank & (duration == 0), 1, duration)
        time[active] = frame + duration

        emitted = ~is_blank
        if np.any(emitted):
            rows = active[emitted]
            emit_frame = frame[emitted]
            emit_label = label[emitted]
            emit_duration = duration[emitted]
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
            # Rows past their last frame get the joint of that frame, which is not used.
            next_frame = np.minimum(time[rows], length[rows] - 1)
            outputs, state, next_logits = model.predict_joint_rows(
                emit_label, state, rows, encoder_frames[rows, next_frame]
            )
            predictor_output[rows] = outputs
            pending_logits[rows] = next_logits
            pending[rows] = True
        active = active[time[active] < length[active]]

    return BatchResult(tokens=tuple(tuple(t) for t in tokens), state=state)
