"""Inputs of any length: one pass while it fits, else NeMo's buffered algorithm with one continuous search.

NeMo's buffered (chunked) transducer inference (``speech_to_text_streaming_infer_rnnt.py``) encodes windows of
left context + chunk + right context, keeps only the chunk's encoder frames, and runs one greedy search over the
kept frames of consecutive chunks, carrying the decoder's state (and the part of a duration that runs past a
chunk's end) from one chunk to the next: no text is merged. This module plans the windows (in samples, whole
encoder frames, as NeMo rounds them), estimates what one pass would need, and defines the work item the runner
takes for a group of windows (:class:`ChunkGroup`): encoded as one batch, decoded chunk after chunk.

Differences from NeMo's script, on purpose: the last window keeps every valid encoder frame (NeMo's rounds the
last chunk down to whole frames and can leave the final partial frame undecoded), so a chunked transcript covers
the same frames as one pass; and each window is given one pass's features of its samples, normalised over the
whole input (NeMo's script computes each buffer's features alone, normalised over the buffer, so a window with
more silence or louder speech than the rest is scaled differently from one pass: with the whole input's
statistics the chunks agree more with one pass, benchmarks/README.md). The features of the whole input are
computed once, block by block (:meth:`..model.features.FeatureExtractor.long_features`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from parakeet_runtime.decoding import DecodedToken, FloatArray, StepConfidence, TdtCarry

from ..model.manifest import FeatureSpec
from ..options import LongFormOptions

logger = logging.getLogger(__name__)

StrategyName = Literal["one_pass", "chunked"]

ATTENTION_BYTES_PER_SCORE = 16
"""Bytes per attention score of one head in one layer during a one-pass encoding: the content scores, the
relative-position scores (computed ``2T`` wide) and the softmax, float32."""
FEATURE_BYTES_PER_FRAME = 12_000
"""Bytes per feature frame of the feature extraction (float64 frames, spectrum and power at a 512-point FFT)."""
SUBSAMPLING_BYTES = 8
"""Bytes per (feature frame × mel × model dimension / 16): the convolutional subsampling's first activations
(channels × frames/2 × mels/2 floats, twice), with the channels estimated as a quarter of the model dimension."""
DEFAULT_HEADS = 8
"""Attention heads assumed where the manifest does not record them (Parakeet's)."""


@dataclass(frozen=True)
class Window:
    """One window of a chunked transcription: a buffer of samples and the encoder frames kept from it."""

    start: int
    """First sample of the buffer (left context included)."""
    end: int
    """End of the buffer (exclusive; right context included)."""
    skip: int
    """Encoder frames of left context at the buffer's start (not kept)."""
    keep: int | None
    """Encoder frames of the chunk kept after them; ``None`` for the last window: every valid frame."""
    first_frame: int
    """The utterance's encoder frame of the first kept frame."""


def plan_windows(total: int, frame_samples: int, chunk: int, left: int, right: int) -> list[Window]:
    """The windows covering ``total`` samples with chunks of ``chunk`` samples, ``left`` and ``right`` samples of
    context (all multiples of ``frame_samples``, the samples per encoder frame; ``chunk >= frame_samples``).

    As NeMo: the first window has no left context; the window whose chunk and right context reach the end is
    the last, and its chunk runs to the end."""
    if chunk < frame_samples or chunk % frame_samples or left % frame_samples or right % frame_samples:
        raise ValueError(f"chunk {chunk}, left {left}, right {right} must be whole encoder frames of {frame_samples}")
    windows: list[Window] = []
    start = 0
    while start < total:
        buffer_start = max(0, start - left)
        skip = (start - buffer_start) // frame_samples
        if start + chunk + right >= total:
            windows.append(Window(buffer_start, total, skip, None, start // frame_samples))
            break
        end = start + chunk + right
        windows.append(Window(buffer_start, end, skip, chunk // frame_samples, start // frame_samples))
        start += chunk
    return windows


@dataclass(frozen=True)
class ChunkGeometry:
    """Chunk, contexts and frame size in samples, from :class:`LongFormOptions` and the model."""

    frame_samples: int
    chunk: int
    left: int
    right: int

    @classmethod
    def of(cls, options: LongFormOptions, features: FeatureSpec, subsampling_factor: int,
           max_frames: int | None = None) -> ChunkGeometry:
        """The options' geometry in samples; for an encoder that takes at most ``max_frames`` frames, the
        chunk and contexts scaled down together until a window fits (a chunk keeps at least one frame)."""
        frame = features.hop_length * subsampling_factor

        def whole_frames(seconds: float) -> int:
            return int(seconds * features.sample_rate) // frame * frame

        chunk = max(whole_frames(options.chunk_seconds), frame)
        left, right = whole_frames(options.left_context_seconds), whole_frames(options.right_context_seconds)
        # A window of w samples encodes to at most w / frame + 1 frames.
        room = None if max_frames is None else (max_frames - 1) * frame
        if room is not None and left + chunk + right > room:
            scale = max(room, frame) / (left + chunk + right)
            left, right = int(left * scale) // frame * frame, int(right * scale) // frame * frame
            chunk = max(max(room, frame) - left - right, frame) // frame * frame
            rate = features.sample_rate
            logger.warning(
                "the encoder takes at most %d frames (manifest encoder.max_frames): inputs over %.2f s are "
                "transcribed in chunks of %.2f s with %.2f s + %.2f s of context, not the %.2f s + %.2f s + %.2f s "
                "LongFormOptions asks for%s", max_frames, room / rate, chunk / rate, left / rate, right / rate,
                options.chunk_seconds, options.left_context_seconds, options.right_context_seconds,
                "; so short a window leaves the encoder too little context to transcribe" if chunk + left + right
                < 2 * rate else "")
        return cls(frame, chunk, left, right)

    def windows(self, total: int) -> list[Window]:
        return plan_windows(total, self.frame_samples, self.chunk, self.left, self.right)

    @property
    def window_samples(self) -> int:
        """The longest buffer."""
        return self.left + self.chunk + self.right


def one_pass_bytes(feature_frames: int, encoder_frames: int, *, heads: int, n_mels: int, d_model: int,
                   attention_keys: int | None = None) -> int:
    """Estimated peak memory of encoding one input in one pass: the attention scores of one layer (each
    query against every frame, or ``attention_keys`` frames with local attention), the feature extraction
    and the convolutional subsampling."""
    keys = encoder_frames if attention_keys is None else min(encoder_frames, attention_keys)
    attention = ATTENTION_BYTES_PER_SCORE * heads * encoder_frames * keys
    features = FEATURE_BYTES_PER_FRAME * feature_frames
    subsampling = SUBSAMPLING_BYTES * feature_frames * n_mels * d_model // 16
    return attention + features + subsampling


@dataclass(frozen=True, eq=False)
class ChunkGroup:
    """Work for the runner: consecutive windows of one utterance, their features, and where the search of
    the windows before them stopped."""

    features: tuple[FloatArray, ...]
    """``(n_mels, frames)`` features of each window."""
    valid_frames: tuple[int, ...]
    """Valid feature frames of each window."""
    windows: tuple[Window, ...]
    carry: TdtCarry[Any] | None
    """The search's carry after the previous group (``None``: the utterance starts here)."""


@dataclass(frozen=True)
class ChunkOutcome:
    """What a :class:`ChunkGroup` decoded: tokens and confidence steps at the utterance's frames, and the
    carry for the next group."""

    tokens: tuple[DecodedToken, ...]
    steps: tuple[StepConfidence, ...] | None
    carry: TdtCarry[Any]
    frames: int
    """The utterance's encoder frames decoded so far (the end of this group's last chunk)."""


GROUP_WINDOWS = 4
"""Most windows encoded in one batch: enough for the encoder's batch efficiency, few enough that results
(and :meth:`Engine.transcribe_iter`'s updates) come every few chunks and other requests get the worker
between groups."""


def group_size(geometry: ChunkGeometry, sample_rate: int, max_batch_size: int, max_batch_seconds: float) -> int:
    """Windows encoded in one batch: at most :data:`GROUP_WINDOWS`, within the batcher's size and padded-audio
    limits."""
    seconds = geometry.window_samples / sample_rate
    fits = math.floor(max_batch_seconds / seconds) if seconds > 0 else max_batch_size
    return max(1, min(GROUP_WINDOWS, max_batch_size, fits))


def groups(windows: Sequence[Window], size: int) -> list[list[Window]]:
    """``windows`` in consecutive groups of ``size``."""
    return [list(windows[i : i + size]) for i in range(0, len(windows), size)]
