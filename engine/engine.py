"""The Engine: load a model directory once, transcribe from any number of threads.

Everything an ``Engine`` holds is read-only after :meth:`Engine.load`: the manifest, the feature
arrays, the tokenizer tables and the ONNX Runtime sessions. Each ``transcribe`` call keeps its own
state (audio, features, predictor state, tokens) in local variables, so calls never interfere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from parakeet_runtime.decoding import (
    DecodedToken,
    TdtConfig,
    TimestampConfig,
    join_token_text,
    offset_to_seconds,
    segment_spans,
    tdt_greedy_decode,
    token_spans,
    word_spans,
)

from .audio import Audio, AudioInput, load_audio
from .errors import AudioTooLongError
from .features import FeatureExtractor
from .manifest import Manifest, load_manifest
from .onnx_model import OnnxTdtModel
from .results import Segment, Token, Transcript, Word
from .tokenizer import Tokenizer

logger = logging.getLogger(__name__)


def default_model_dir() -> Path:
    """The demo model shipped inside the package (trained on synthetic speech; see README)."""
    return Path(__file__).resolve().parent / "default_model"


def sample_audio_path() -> Path:
    """The sample clip shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / "sample.wav"


@dataclass(frozen=True, eq=False)
class Engine:
    """A loaded model. Create it with :meth:`Engine.load`; share it freely between threads."""

    model_dir: Path
    manifest: Manifest
    features: FeatureExtractor
    tokenizer: Tokenizer
    model: OnnxTdtModel
    tdt_config: TdtConfig
    timestamp_config: TimestampConfig

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> Engine:
        """Load a model directory written by ``convert-model``.

        Args:
            model_dir: the directory; ``None`` loads the bundled demo model.
            providers: ONNX Runtime execution providers, in order of preference (default: CUDA if
                this onnxruntime build has it, then CPU).
            threads: intra-op threads for the encoder (default: ONNX Runtime's choice, all cores).

        Raises:
            ModelDirectoryError: the directory or one of its files is missing.
            ManifestError: the manifest or a model file is invalid.
        """
        directory = Path(model_dir) if model_dir is not None else default_model_dir()
        manifest = load_manifest(directory)
        decoding = manifest.decoding
        tokenizer_spec = manifest.tokenizer
        return cls(
            model_dir=directory,
            manifest=manifest,
            features=FeatureExtractor.load(manifest.features, directory),
            tokenizer=Tokenizer.load(tokenizer_spec, directory, decoding.vocab_size),
            model=OnnxTdtModel.load(manifest, directory, providers=providers, threads=threads),
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
        )

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
            AudioDecodeError: an input that is not decodable audio.
            AudioTooLongError: audio longer than the exported encoder takes in one pass.
        """
        if isinstance(audio, list):
            return [self._transcribe_one(item, sample_rate) for item in audio]
        return self._transcribe_one(audio, sample_rate)

    def _transcribe_one(self, source: AudioInput, sample_rate: int | None) -> Transcript:
        audio = load_audio(source, self.sample_rate, sample_rate=sample_rate)
        return self._transcribe_audio(audio)

    def _transcribe_audio(self, audio: Audio) -> Transcript:
        if audio.samples.shape[0] == 0:
            return Transcript(text="", duration=0.0)
        features, valid = self.features(audio.samples)
        if valid == 0:
            return Transcript(text="", duration=audio.duration)
        self._check_length(valid, audio)
        frames, lengths = self.model.encode(features[None], np.array([valid], dtype=np.int64))
        result = tdt_greedy_decode(frames[0], int(lengths[0]), self.model, self.tdt_config)
        return self._build_transcript(result.tokens, audio.duration)

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
