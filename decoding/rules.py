"""The rules of NeMo's greedy TDT search that the single-utterance and the batched search share.

Each function works on plain ints (one utterance) and elementwise on int64 arrays (rows of a batch), with
one body, so that the two searches cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias, overload

import numpy as np

from .arrays import BoolArray, FloatArray, IntArray


@dataclass(frozen=True, eq=False)
class JointChoices:
    """The joint's greedy choices at each of its rows, from a step model that takes the argmaxes itself (in its
    graph) rather than returning the logits: they carry no confidence."""

    label: IntArray
    """The best label of each row, ``(rows,)``."""
    duration_index: IntArray
    """The index of each row's best duration logit (into the model's ``durations``), ``(rows,)``."""


JointOutput: TypeAlias = FloatArray | JointChoices
"""What a step model's joint gives: logits ``(rows, blank_id + 1 + len(durations))``, or the choices."""


@dataclass(frozen=True, eq=False)
class JointReader:
    """Reads the greedy choice out of joint logits ``(..., blank_id + 1 + len(durations))``."""

    num_labels: int
    """Vocabulary plus blank: the label logits come first, the duration logits after them."""
    durations: IntArray
    """Frame skip of each duration logit, in logit order."""

    @classmethod
    def of(cls, blank_id: int, durations: tuple[int, ...]) -> JointReader:
        return cls(num_labels=blank_id + 1, durations=np.asarray(durations, dtype=np.int64))

    def choose(self, logits: JointOutput) -> tuple[IntArray, IntArray]:
        """The label and the duration (in frames, through ``durations``) at each position of ``logits``:
        two independent argmaxes, shape ``logits.shape[:-1]`` each (or the choices as the model took them).

        Raises:
            ValueError: the logits are not ``num_labels + len(durations)`` wide, or choices out of range.
        """
        if isinstance(logits, JointChoices):  # argmaxes: never negative; one bound each (this runs every step)
            label, index = logits.label, logits.duration_index
            if label.size and int(label.max()) >= self.num_labels:
                raise ValueError(f"a chosen label is outside [0, {self.num_labels})")
            if index.size and int(index.max()) >= self.durations.shape[0]:
                raise ValueError(f"a chosen duration index is outside [0, {self.durations.shape[0]})")
            return label.astype(np.int64, copy=False), self.durations[index]
        width = self.num_labels + self.durations.shape[0]
        if logits.shape[-1] != width:
            raise ValueError(
                f"joint logits have {logits.shape[-1]} entries, expected {width} "
                f"({self.num_labels} labels with the blank, {self.durations.shape[0]} durations)"
            )
        label = np.argmax(logits[..., : self.num_labels], axis=-1).astype(np.int64)
        duration = self.durations[np.argmax(logits[..., self.num_labels :], axis=-1)]
        return label, duration


def logits_for_confidence(output: JointOutput) -> FloatArray:
    """``output`` as logits, for a search that records confidence.

    Raises:
        ValueError: the step model gave its choices, which carry no confidence.
    """
    if isinstance(output, JointChoices):
        raise ValueError("confidence needs the joint's logits; this step model gives its choices only")
    return output


@overload
def blank_skip(duration: int) -> int: ...
@overload
def blank_skip(duration: IntArray) -> IntArray: ...
def blank_skip(duration: int | IntArray) -> int | IntArray:
    """Frames a blank moves time by: its duration, but at least one (a blank must move time forward)."""
    return duration + (duration == 0)


@overload
def labels_at_frame(count: int, previous_frame: int, frame: int) -> int: ...
@overload
def labels_at_frame(count: IntArray, previous_frame: IntArray, frame: IntArray) -> IntArray: ...
def labels_at_frame(count: int | IntArray, previous_frame: int | IntArray, frame: int | IntArray) -> int | IntArray:
    """Labels emitted at ``frame`` counting the one emitted now, given ``count`` labels emitted at
    ``previous_frame`` before it (the search never goes back in time, so they are consecutive)."""
    return count * (previous_frame == frame) + 1


@overload
def forced_ahead(duration: int, count: int, max_symbols: int | None) -> bool: ...
@overload
def forced_ahead(duration: IntArray, count: IntArray, max_symbols: int | None) -> BoolArray: ...
def forced_ahead(duration: int | IntArray, count: int | IntArray, max_symbols: int | None) -> bool | BoolArray:
    """Must time move one frame further than ``frame + duration`` after an emission?

    Yes when the label does not move time itself (duration 0) and ``count``, the labels emitted at its frame
    (see :func:`labels_at_frame`), has reached ``max_symbols`` (NeMo: ``max_symbols_per_step``); ``None``
    sets no limit. The frame of a label is always inside the utterance, so the forced step never needs a
    check of its own against the length: the search stops there if it is the last frame.
    """
    limit = count + 1 if max_symbols is None else max_symbols  # no limit: never reached
    return (duration == 0) & (count >= limit)
