"""Group length-sorted requests into encoder batches, and pad a batch's features into one array."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from parakeet_runtime.decoding import FloatArray

from ..options import BatchingOptions


def length_buckets(
    order: Sequence[int], frames: Sequence[int] | Mapping[int, int], options: BatchingOptions,
    seconds_per_frame: float, *, memory: Sequence[int] | Mapping[int, int] | None = None,
    memory_budget: int | None = None,
) -> list[list[int]]:
    """Consecutive runs of ``order`` (indices sorted by ``frames``, shortest first) within the batch size,
    the padded-audio budget and the length ratio of ``options``, and, given each input's estimated one-pass
    encoder memory ``memory``, within ``memory_budget`` (a padded batch costs its size times its longest
    input's estimate; an input alone is never split off further: its strategy already chose one pass)."""
    buckets: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = frames[index] * seconds_per_frame  # sorted: this one is the longest so far
        if current and (
            len(current) >= options.max_batch_size
            or (len(current) + 1) * longest > options.max_batch_seconds
            or frames[index] > options.max_length_ratio * frames[current[0]]
            or (memory is not None and memory_budget is not None
                and (len(current) + 1) * memory[index] > memory_budget)
        ):
            buckets.append(current)
            current = []
        current.append(index)
    if current:
        buckets.append(current)
    return buckets


def pad_features(
    arrays: Sequence[FloatArray], lengths: Sequence[int], pad_value: float
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """``(n_mels, frames_i)`` arrays -> ``(batch, n_mels, max frames)`` padded with ``pad_value``, and the
    valid lengths ``(batch,)`` int64."""
    n_mels = arrays[0].shape[0]
    width = max(a.shape[1] for a in arrays)
    batch = np.full((len(arrays), n_mels, width), pad_value, dtype=np.float32)
    for row, array in enumerate(arrays):
        batch[row, :, : array.shape[1]] = array
    return batch, np.asarray(lengths, dtype=np.int64)
