"""The Engine: load a model directory once, transcribe from any number of threads.

Everything an ``Engine`` holds is read-only after :meth:`Engine.load`: the manifest, the feature
arrays, the tokenizer tables and the ONNX Runtime sessions. Each ``transcribe`` call keeps its own
state (audio, features, predictor state, tokens) in local variables, so calls never interfere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import overload

import numpy as np
import numpy.typing as npt

from parakeet_runtime.decoding import (
    DecodedToken,
    TdtConfig,
    TimestampConfig,
    join_token_text,
    offset_to_seconds,
    segment_spans,
    tdt_greedy_decode,
    tdt_greedy_decode_batch,
    token_spans,
    word_spans,
)

from .audio import Audio, AudioInput, FloatArray, load_audio
from .batcher import DynamicBatcher
from .errors import AudioTooLongError
from .features import FeatureExtractor
from .manifest import Manifest, load_manifest
from .onnx_model import OnnxTdtModel
from .options import BatchingOptions, SessionOptions
from .results import Segment, Token, Transcript, Word
from .tokenizer import Tokenizer

logger = logging.getLogger(__name__)

JOINT_LOOKAHEAD = 6
"""Frames of an utterance one joint run covers while its search looks for a non-blank label (a run of
blanks keeps the predictor output), in the one-utterance and the batched search, and frames the step
after an emitted label brings with it in the one-utterance search. A large joint (Parakeet v3's: 21 MB)
is bound by reading its weights: six frames cost little more than one (A/B in benchmarks/README.md)."""


def default_model_dir() -> Path:
    """The demo model shipped inside the package (trained on synthetic speech; see README)."""
    return Path(__file__).resolve().parent / "default_model"


def sample_audio_path() -> Path:
    """The sample clip shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / "sample.wav"


@dataclass(frozen=True)
class PreparedAudio:
    """One request after audio decoding and feature extraction: what the encoder needs."""

    duration: float
    """Length of the audio in seconds."""
    features: FloatArray | None
    """``(n_mels, frames)`` float32, or ``None`` when the audio has no complete feature frame."""
    valid_frames: int
    """Valid feature frames (0 for empty audio)."""


@dataclass(frozen=True, eq=False)
class Engine:
    """A loaded model. Create it with :meth:`Engine.load`; share it freely between threads and tasks.

    The model state (manifest, feature arrays, tokenizer tables, ONNX Runtime sessions) is read-only.
    The only shared moving part is the dynamic batcher's queue, which hands each caller its own result.
    Call :meth:`close` (or use the engine as a context manager) to stop the batcher.
    """

    model_dir: Path
    manifest: Manifest
    features: FeatureExtractor
    tokenizer: Tokenizer
    model: OnnxTdtModel
    tdt_config: TdtConfig
    timestamp_config: TimestampConfig
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    batcher: DynamicBatcher[PreparedAudio, Transcript] | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        providers: Sequence[str] | None = None,
        session: SessionOptions | None = None,
        batching: BatchingOptions | None = None,
    ) -> Engine:
        """Load a model directory written by ``convert-model``.

        Args:
            model_dir: the directory; ``None`` loads the bundled demo model.
            providers: ONNX Runtime execution providers, in order of preference (default: CUDA if
                this onnxruntime build has it, then CPU).
            session: ONNX Runtime threading (default: :class:`SessionOptions`).
            batching: dynamic batching (default: :class:`BatchingOptions`, enabled).

        Raises:
            ModelDirectoryError: the directory or one of its files is missing.
            ManifestError: the manifest or a model file is invalid.
        """
        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        manifest = load_manifest(directory)
        decoding = manifest.decoding
        tokenizer_spec = manifest.tokenizer
        batching = batching or BatchingOptions()
        engine = cls(
            model_dir=directory,
            manifest=manifest,
            features=FeatureExtractor.load(manifest.features, directory),
            tokenizer=Tokenizer.load(tokenizer_spec, directory, decoding.vocab_size),
            model=OnnxTdtModel.load(manifest, directory, providers=providers, session=session or SessionOptions()),
            tdt_config=TdtConfig(
                blank_id=decoding.blank_id, durations=decoding.durations, max_symbols=decoding.max_symbols
            ),
            timestamp_config=TimestampConfig(
                window_stride=manifest.features.window_stride,
                subsampling_factor=manifest.encoder.subsampling_factor,
                supported_punctuation=frozenset(tokenizer_spec.supported_punctuation),
                word_separator=tokenizer_spec.word_separator,
                segment_separators=tokenizer_spec.segment_separators,
                segment_gap_threshold=tokenizer_spec.segment_gap_threshold,
                tokenizer_kind=tokenizer_spec.kind,
            ),
            batching=batching,
        )
        if batching.enabled:
            batcher: DynamicBatcher[PreparedAudio, Transcript] = DynamicBatcher(engine.infer, batching)
            engine = replace(engine, batcher=batcher)
            # The worker thread holds only the bound method of the batcher's own engine; make sure it
            # stops when the engine is garbage-collected without close().
            weakref.finalize(engine, batcher.close, 0)
        return engine

    def close(self, *, drain: bool = False) -> None:
        """Stop the batcher. The batch in progress finishes; waiting requests finish too with ``drain``,
        and otherwise get ``EngineClosedError``. Later calls raise ``EngineClosedError``."""
        if self.batcher is not None:
            self.batcher.close(drain=drain)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def sample_rate(self) -> int:
        """The rate the model expects; other rates are resampled."""
        return self.manifest.features.sample_rate

    @overload
    def transcribe(self, audio: AudioInput, *, sample_rate: int | None = None) -> Transcript: ...

    @overload
    def transcribe(self, audio: list[AudioInput], *, sample_rate: int | None = None) -> list[Transcript]: ...

    def transcribe(
        self, audio: AudioInput | list[AudioInput], *, sample_rate: int | None = None
    ) -> Transcript | list[Transcript]:
        """Transcribe one input, or a list of inputs (list in, list out).

        Args:
            audio: a path, encoded file bytes, a float/int PCM array (``(n,)`` or ``(n, channels)``),
                or an ``(array, sample_rate)`` pair; or a list of these.
            sample_rate: the rate of bare arrays (default: the model's rate).

        Raises:
            AudioFileNotFoundError: a path that does not exist.
            AudioDecodeError: an input that is not decodable audio (for a list: the first such input;
                nothing is transcribed).
            AudioTooLongError: audio longer than the exported encoder takes in one pass.
            EngineClosedError: the engine was closed.
            EngineOverloadedError: the batcher's queue is full.
        """
        if isinstance(audio, list):
            return self.infer([self.prepare(item, sample_rate) for item in audio])
        if self.batcher is None:
            return self.infer([self.prepare(audio, sample_rate)])[0]
        with self.batcher.arriving():
            with self.batcher.preparing():
                one = self.prepare(audio, sample_rate)
            future = self.batcher.submit(one)
        return future.result()

    @overload
    async def transcribe_async(self, audio: AudioInput, *, sample_rate: int | None = None) -> Transcript: ...

    @overload
    async def transcribe_async(
        self, audio: list[AudioInput], *, sample_rate: int | None = None
    ) -> list[Transcript]: ...

    async def transcribe_async(
        self, audio: AudioInput | list[AudioInput], *, sample_rate: int | None = None
    ) -> Transcript | list[Transcript]:
        """``transcribe`` for asyncio: decoding and features run in the default executor, inference in the
        batcher (or the executor when batching is off); the event loop is never blocked.

        Cancelling the awaiting task drops a request that has not started yet.
        """
        loop = asyncio.get_running_loop()
        if isinstance(audio, list) or self.batcher is None:
            items = audio if isinstance(audio, list) else [audio]
            prepared = [await loop.run_in_executor(None, self.prepare, item, sample_rate) for item in items]
            results = await loop.run_in_executor(None, self.infer, prepared)
            return results if isinstance(audio, list) else results[0]
        batcher = self.batcher

        def prepare_in_slot() -> PreparedAudio:  # runs in an executor thread: it may block for a slot
            with batcher.preparing():
                return self.prepare(audio, sample_rate)

        with batcher.arriving():
            one = await loop.run_in_executor(None, prepare_in_slot)
            future = batcher.submit(one)
        return await asyncio.wrap_future(future)

    def prepare(self, source: AudioInput, sample_rate: int | None = None) -> PreparedAudio:
        """Decode, resample and featurise one input (the part of a request that may fail on bad input).

        Raises:
            AudioDecodeError, AudioFileNotFoundError, AudioTooLongError: as :meth:`transcribe`.
        """
        audio = load_audio(source, self.sample_rate, sample_rate=sample_rate)
        if audio.samples.shape[0] == 0:
            return PreparedAudio(duration=0.0, features=None, valid_frames=0)
        features, valid = self.features(audio.samples)
        if valid == 0:
            return PreparedAudio(duration=audio.duration, features=None, valid_frames=0)
        self._check_length(valid, audio)
        return PreparedAudio(duration=audio.duration, features=features, valid_frames=valid)

    def infer(self, prepared: Sequence[PreparedAudio]) -> list[Transcript]:
        """Encode and decode prepared requests: sorted by length, in padded batches; results in input order.

        Pure with respect to the engine: everything it builds is local to the call.
        """
        results: list[Transcript | None] = [None] * len(prepared)
        todo = []
        for index, item in enumerate(prepared):
            if item.features is None:
                results[index] = Transcript(text="", duration=item.duration)
            else:
                todo.append(index)
        todo.sort(key=lambda i: prepared[i].valid_frames)
        for bucket in self._buckets(todo, prepared):
            for index, transcript in zip(bucket, self._infer_batch([prepared[i] for i in bucket]), strict=True):
                results[index] = transcript
        return [r for r in results if r is not None]

    def _buckets(self, order: list[int], prepared: Sequence[PreparedAudio]) -> list[list[int]]:
        """Consecutive runs of the length-sorted requests, within the batch size and padded-audio budget."""
        options = self.batching
        seconds_per_frame = self.manifest.features.hop_length / self.manifest.features.sample_rate
        buckets: list[list[int]] = []
        current: list[int] = []
        for index in order:
            longest = prepared[index].valid_frames * seconds_per_frame  # sorted: this one is the longest
            if current and (
                len(current) >= options.max_batch_size
                or (len(current) + 1) * longest > options.max_batch_seconds
                or prepared[index].valid_frames > options.max_length_ratio * prepared[current[0]].valid_frames
            ):
                buckets.append(current)
                current = []
            current.append(index)
        if current:
            buckets.append(current)
        return buckets

    def _infer_batch(self, items: Sequence[PreparedAudio]) -> list[Transcript]:
        frames, encoded_lengths = self._encode_batch(items)
        return self._decode_batch(frames, encoded_lengths, items)

    def _encode_batch(self, items: Sequence[PreparedAudio]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Pad the items' features into one batch and run the encoder (the benchmarks time this step)."""
        arrays = [item.features for item in items if item.features is not None]
        n_mels = arrays[0].shape[0]
        width = max(a.shape[1] for a in arrays)
        pad = self.manifest.features.pad_value
        batch = np.full((len(arrays), n_mels, width), pad, dtype=np.float32)
        for row, array in enumerate(arrays):
            batch[row, :, : array.shape[1]] = array
        lengths = np.array([item.valid_frames for item in items], dtype=np.int64)
        return self.model.encode(batch, lengths)

    def _decode_batch(
        self, frames: FloatArray, encoded_lengths: npt.NDArray[np.int64], items: Sequence[PreparedAudio]
    ) -> list[Transcript]:
        """TDT search and transcripts for an encoded batch (the benchmarks time this step).

        A batch of one takes the one-utterance search: same tokens, less bookkeeping per step."""
        tokens: Sequence[Sequence[DecodedToken]]
        if len(items) == 1:
            decoded = tdt_greedy_decode(frames[0], int(encoded_lengths[0]), self.model, self.tdt_config,
                                        lookahead=JOINT_LOOKAHEAD)
            tokens = (decoded.tokens,)
        else:
            tokens = tdt_greedy_decode_batch(frames, encoded_lengths, self.model, self.tdt_config,
                                             lookahead=JOINT_LOOKAHEAD).tokens
        return [self._build_transcript(found, item.duration) for found, item in zip(tokens, items, strict=True)]

    def _check_length(self, valid_frames: int, audio: Audio) -> None:
        spec = self.manifest.encoder
        encoded = -(-valid_frames // spec.subsampling_factor)
        if encoded > spec.max_frames:
            limit = spec.max_frames * spec.subsampling_factor * self.manifest.features.window_stride
            raise AudioTooLongError(
                f"audio of {audio.duration:.1f} s is longer than this model's encoder takes in one pass "
                f"(about {limit:.0f} s); split it into shorter pieces"
            )

    def _build_transcript(self, decoded: Sequence[DecodedToken], duration: float) -> Transcript:
        tok = self.tokenizer
        config = self.timestamp_config
        pieces = [tok.pieces[t.id] for t in decoded]
        texts = [tok.texts[t.id] for t in decoded]
        spans = token_spans(decoded, pieces, texts, config.supported_punctuation)
        words = word_spans(spans, tok.decode_pieces, config)
        segments = segment_spans(words, config)

        def seconds(offset: int) -> float:
            # NeMo's seconds, except that a last token whose predicted duration runs past the final
            # frame is cut at the end of the audio (offsets keep NeMo's values).
            return min(offset_to_seconds(offset, config), duration)

        return Transcript(
            text=join_token_text(pieces, tok.decode_pieces, config.supported_punctuation),
            duration=duration,
            tokens=tuple(
                Token(
                    id=s.id,
                    text=s.text,
                    piece=s.piece,
                    frame=d.frame,
                    duration=d.duration,
                    start_offset=s.start_offset,
                    end_offset=s.end_offset,
                    start=seconds(s.start_offset),
                    end=seconds(s.end_offset),
                )
                for s, d in zip(spans, decoded, strict=True)
            ),
            words=tuple(
                Word(w.text, w.start_offset, w.end_offset, seconds(w.start_offset), seconds(w.end_offset))
                for w in words
            ),
            segments=tuple(
                Segment(s.text, s.start_offset, s.end_offset, seconds(s.start_offset), seconds(s.end_offset))
                for s in segments
            ),
        )
