"""Encode and decode prepared requests: the only code that runs the model's graphs.

The runner (:mod:`.runner`) calls :meth:`Inference.run` on its worker thread (or in the caller's thread
when batching is off); nothing else in the engine runs an encoder or a decoding step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

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

from ..model.manifest import BATCH_INVARIANT_ACTIVATIONS
from ..model.onnx_model import OnnxTdtModel
from ..options import BatchingOptions
from ..results import Transcript
from .buckets import length_buckets, pad_features
from .longform import ChunkGroup, ChunkOutcome
from .prepare import PreparedAudio
from .transcripts import TranscriptBuilder

logger = logging.getLogger(__name__)

JOINT_LOOKAHEAD = 8
"""Frames of an utterance one joint run covers while the one-utterance search looks for a non-blank label (a run
of blanks keeps the predictor output). A large joint (Parakeet v3's: 21 MB) is bound by reading its weights:
several frames cost little more than one (A/B in benchmarks/README.md)."""
LABEL_LOOKAHEAD = 5
"""Frames the step after an emitted label brings with it in the one-utterance search. Fewer than
:data:`JOINT_LOOKAHEAD`: they are computed after every label, and the next label is often a few frames away (the
rows past it are read by nobody). ``5/8`` against ``6/6`` (benchmarks/joint_lookahead.py, Zen 4): fewer joint runs on
the trained demo model (177 against 180) and on the v3 shape (82 against 97), and the v3 shape's int8 search took
0.97× the time (the median of nine runs of 16–48 replays, 0.91–1.16×); fewer frames after a label (3 or 4) added
joint runs on the demo (206–221)."""
BATCH_LOOKAHEAD = 6
"""Frames of a row one batched joint run covers while the batched search looks for a non-blank label there
(its step after a label brings one frame per row)."""


Work: TypeAlias = PreparedAudio | ChunkGroup
"""What the runner takes: a prepared input (encoded and decoded whole), or a group of a long input's windows."""
Outcome: TypeAlias = Transcript | ChunkOutcome
"""What the runner gives back for each: a transcript, or the group's tokens and carry."""


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
    memory_budget: int | None = None
    """Bytes one encoder batch of one-pass inputs may use (``LongFormOptions.budget``): inputs that each fit it
    alone are batched only while the batch's estimate fits too. ``None``: no bound."""
    batch_invariant: bool = True
    """Whether an input's encoder frames are the same in a padded batch as alone. False for int8 encoders that
    quantise their activations with one range per run (ONNX Runtime's dynamic quantisation takes it over the whole
    padded batch; directories with ``per-row-fixed`` or ``per-row-centred`` activations do not) and for OpenVINO's
    bf16 and int8:
    there every input is encoded alone, so that its transcript does not depend on what else arrived with it
    (:func:`batch_invariant`)."""
    batched_decoding: bool = True
    """Whether a batch's rows may be decoded together. False where int8 decoding weights would give a row other
    values in a batch than alone on this machine (:func:`decoding_batch_invariant`): each row of an encoded batch
    is then decoded alone."""

    def run(self, work: Sequence[Work]) -> list[Outcome]:
        """Outcomes for ``work``, in order: prepared inputs sorted by length, encoded and decoded in padded
        batches; each group of windows encoded as one batch and decoded chunk after chunk."""
        results: dict[int, Outcome] = {}
        todo = []
        prepared: dict[int, PreparedAudio] = {}
        for index, item in enumerate(work):
            if isinstance(item, ChunkGroup):
                results[index] = self.decode_chunks(item)
                continue
            prepared[index] = item
            if item.features is None:
                results[index] = Transcript(text="", duration=item.duration, strategy=item.strategy,
                                            warnings=item.warnings)
            else:
                todo.append(index)
        todo.sort(key=lambda i: prepared[i].valid_frames)
        for bucket in self.buckets(todo, prepared):
            items = [prepared[i] for i in bucket]
            frames, lengths = self.encode_batch(items)
            for index, transcript in zip(bucket, self.decode_batch(frames, lengths, items), strict=True):
                results[index] = transcript
        return [results[i] for i in range(len(work))]

    def buckets(
        self, order: list[int], prepared: dict[int, PreparedAudio] | Sequence[PreparedAudio]
    ) -> list[list[int]]:
        """Encoder batches: consecutive runs of ``order`` (indices sorted by length)."""
        if not self.batch_invariant:
            return [[i] for i in order]
        frames = {i: prepared[i].valid_frames for i in order}
        memory = {i: prepared[i].encoder_bytes for i in order}
        return length_buckets(order, frames, self.batching, self.seconds_per_feature_frame, memory=memory,
                              memory_budget=self.memory_budget)

    def decode_chunks(self, group: ChunkGroup) -> ChunkOutcome:
        """Encode a group's windows as one batch, then continue the utterance's search over each window's kept
        frames in order (token frames and confidence steps at the utterance's frames)."""
        batch, lengths = pad_features(list(group.features), list(group.valid_frames), self.pad_value)
        frames, encoded = self.model.encode(batch, lengths)
        confidence = self.transcripts.confidence
        carry = group.carry
        tokens: list[DecodedToken] = []
        steps: list[StepConfidence] | None = None if confidence is None else []
        end = group.windows[0].first_frame
        for row, window in enumerate(group.windows):
            available = max(int(encoded[row]) - window.skip, 0)
            keep = available if window.keep is None else min(window.keep, available)
            result = tdt_greedy_decode(frames[row, window.skip : window.skip + keep], keep, self.model,
                                       self.tdt_config, carry=carry, lookahead=JOINT_LOOKAHEAD, confidence=confidence,
                                       label_lookahead=LABEL_LOOKAHEAD)
            offset = window.first_frame
            tokens += [dataclasses.replace(t, frame=t.frame + offset) for t in result.tokens]
            if steps is not None and result.steps is not None:
                steps += [dataclasses.replace(s, frame=s.frame + offset) for s in result.steps]
            assert result.carry is not None
            carry = result.carry
            end = offset + keep
        assert carry is not None
        return ChunkOutcome(tuple(tokens), None if steps is None else tuple(steps), carry, end)

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
        if len(items) == 1 or not self.batched_decoding:
            alone = [tdt_greedy_decode(frames[row], int(encoded_lengths[row]), self.model, self.tdt_config,
                                       lookahead=JOINT_LOOKAHEAD, confidence=confidence,
                                       label_lookahead=LABEL_LOOKAHEAD) for row in range(len(items))]
            tokens, steps = [d.tokens for d in alone], [d.steps for d in alone]
        else:
            batch = tdt_greedy_decode_batch(frames, encoded_lengths, self.model, self.tdt_config,
                                            lookahead=BATCH_LOOKAHEAD, confidence=confidence)
            tokens = batch.tokens
            steps = batch.steps if batch.steps is not None else [None] * len(items)
        return [self.transcripts(found, item.duration, recorded, warnings=item.warnings)
                for found, recorded, item in zip(tokens, steps, items, strict=True)]


def batch_invariant(model: OnnxTdtModel, reduced_precision_backend: bool) -> bool:
    """Whether ``model``'s encoder gives an input the same frames in any padded batch: an fp32 encoder, or an int8
    one whose activations are quantised row by row at a fixed scale (``BATCH_INVARIANT_ACTIVATIONS``), on a backend
    that does not compute in reduced precision (``reduced_precision_backend``: OpenVINO's bf16 and int8)."""
    if reduced_precision_backend:
        return False
    if model.manifest.encoder.precision == "fp32":
        return True
    quantization = model.manifest.provenance.quantization
    return quantization is not None and quantization.activations in BATCH_INVARIANT_ACTIVATIONS


def decoding_batch_invariant(model: OnnxTdtModel) -> bool:
    """Whether ``model``'s decoding graphs give a row the same choices in a batched search as alone: fp32 weights,
    or int8 ones whose products this machine computes row by row alike at every batch size
    (:meth:`OnnxTdtModel.rows_decode_alike`, checked once here)."""
    if model.decoder_weights == "fp32":
        return True
    try:
        alike = model.rows_decode_alike()
    except Exception as exc:  # onnxruntime raises its own untyped exceptions (a graph fixed to one row, ...)
        logger.warning("int8 decoding weights: the check of batched rows did not run (%s): each row of a batch is "
                       "decoded alone", exc)
        return False
    if not alike:
        logger.info("int8 decoding weights give a row other values in a batch than alone on this machine: each row "
                    "of a batch is decoded alone")
    return alike
