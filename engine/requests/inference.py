"""Encode and decode prepared requests: the only code that runs the model's graphs.

The runner (:mod:`.runner`) calls :meth:`Inference.run` on its worker thread (or in the caller's thread
when batching is off); nothing else in the engine runs an encoder or a decoding step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from parakeet_runtime.decoding import (
    DecodedToken,
    FloatArray,
    StepConfidence,
    TdtConfig,
    tdt_greedy_decode,
    tdt_greedy_decode_batch,
)

from ..model.onnx_model import OnnxTdtModel
from ..options import BatchingOptions
from ..results import Transcript
from .buckets import length_buckets, pad_features
from .prepare import PreparedAudio
from .transcripts import TranscriptBuilder

JOINT_LOOKAHEAD = 6
"""Frames of an utterance one joint run covers while its search looks for a non-blank label (a run of
blanks keeps the predictor output), in the one-utterance and the batched search, and frames the step
after an emitted label brings with it in the one-utterance search. A large joint (Parakeet v3's: 21 MB)
is bound by reading its weights: six frames cost little more than one (A/B in benchmarks/README.md)."""


@dataclass(frozen=True, eq=False)
class Inference:
    """Everything needed to turn prepared requests into transcripts. Read-only; every call keeps its state
    local, so it is safe to call from several threads (the runner calls it from one)."""

    model: OnnxTdtModel
    tdt_config: TdtConfig
    transcripts: TranscriptBuilder
    batching: BatchingOptions
    seconds_per_feature_frame: float
    """Seconds per feature frame (hop length / sample rate): bounds a batch's padded audio."""
    pad_value: float
    """The feature value past an utterance's end in a padded batch."""

    def run(self, prepared: Sequence[PreparedAudio]) -> list[Transcript]:
        """Transcripts for ``prepared``, in order: sorted by length, encoded and decoded in padded batches."""
        results: dict[int, Transcript] = {}
        todo = []
        for index, item in enumerate(prepared):
            if item.features is None:
                results[index] = Transcript(text="", duration=item.duration)
            else:
                todo.append(index)
        todo.sort(key=lambda i: prepared[i].valid_frames)
        for bucket in self.buckets(todo, prepared):
            items = [prepared[i] for i in bucket]
            frames, lengths = self.encode_batch(items)
            for index, transcript in zip(bucket, self.decode_batch(frames, lengths, items), strict=True):
                results[index] = transcript
        return [results[i] for i in range(len(prepared))]

    def buckets(self, order: list[int], prepared: Sequence[PreparedAudio]) -> list[list[int]]:
        """Encoder batches: consecutive runs of ``order`` (indices sorted by length)."""
        return length_buckets(order, [p.valid_frames for p in prepared], self.batching, self.seconds_per_feature_frame)

    def encode_batch(self, items: Sequence[PreparedAudio]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Pad the items' features into one batch and run the encoder (the benchmarks time this step)."""
        arrays = [item.features for item in items if item.features is not None]
        batch, lengths = pad_features(arrays, [item.valid_frames for item in items], self.pad_value)
        return self.model.encode(batch, lengths)

    def decode_batch(
        self, frames: FloatArray, encoded_lengths: npt.NDArray[np.int64], items: Sequence[PreparedAudio]
    ) -> list[Transcript]:
        """TDT search and transcripts for an encoded batch (the benchmarks time this step).

        A batch of one takes the one-utterance search: same tokens, less bookkeeping per step."""
        tokens: Sequence[Sequence[DecodedToken]]
        steps: Sequence[Sequence[StepConfidence] | None]
        confidence = self.transcripts.confidence
        if len(items) == 1:
            decoded = tdt_greedy_decode(frames[0], int(encoded_lengths[0]), self.model, self.tdt_config,
                                        lookahead=JOINT_LOOKAHEAD, confidence=confidence)
            tokens, steps = (decoded.tokens,), (decoded.steps,)
        else:
            batch = tdt_greedy_decode_batch(frames, encoded_lengths, self.model, self.tdt_config,
                                            lookahead=JOINT_LOOKAHEAD, confidence=confidence)
            tokens = batch.tokens
            steps = batch.steps if batch.steps is not None else [None] * len(items)
        return [self.transcripts(found, item.duration, recorded)
                for found, recorded, item in zip(tokens, steps, items, strict=True)]
