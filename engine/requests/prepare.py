"""Turn one input into what the runner needs: decoded audio, then features for one pass, or a plan of
windows for a chunked transcription (:mod:`.longform`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parakeet_runtime.decoding import FloatArray

from ..errors import AudioTooLongError
from ..model.features import FeatureExtractor
from ..model.manifest import EncoderSpec
from ..options import LongFormOptions
from .audio import AudioInput, load_audio
from .longform import DEFAULT_HEADS, ChunkGeometry, StrategyName, Window, one_pass_bytes


@dataclass(frozen=True)
class PreparedAudio:
    """One request after audio decoding and feature extraction: what the encoder needs for one pass."""

    duration: float
    """Length of the audio in seconds."""
    features: FloatArray | None
    """``(n_mels, frames)`` float32, or ``None`` when the audio has no complete feature frame."""
    valid_frames: int
    """Valid feature frames (0 for empty audio)."""
    encoder_bytes: int = 0
    """Estimated peak memory of encoding it in one pass (:meth:`Preparer.encoder_bytes`): the batcher keeps a
    padded batch's within the memory budget (0: not estimated, no bound)."""
    strategy: StrategyName = "one_pass"
    """What its transcript records as ``Transcript.strategy``: ``one_pass``, except for empty audio under a
    forced ``chunked`` strategy (nothing is encoded either way, so the transcript records what was asked)."""
    warnings: tuple[str, ...] = ()
    """What the audio reader accepted imperfect (:attr:`.audio.Audio.warnings`): its transcript carries them."""


@dataclass(frozen=True, eq=False)
class LongAudio:
    """One request too long for one pass: its features (normalised over the whole input, as one pass's) and
    the windows to encode."""

    duration: float
    features: FloatArray
    """``(n_mels, frames)`` float32: one pass's features of the whole input (frames past ``feature_frames``
    hold the padding value)."""
    feature_frames: int
    """Valid feature frames of the whole input."""
    windows: tuple[Window, ...]
    warnings: tuple[str, ...] = ()
    """What the audio reader accepted imperfect (:attr:`.audio.Audio.warnings`): its transcript carries them."""

    @property
    def valid_frames(self) -> int:
        """Sort key among a list's inputs (as a one-pass input's)."""
        return self.feature_frames


Prepared = PreparedAudio | LongAudio


@dataclass(frozen=True, eq=False)
class Preparer:
    """Decodes, resamples and featurises inputs for one model, and chooses how each is transcribed.
    Read-only; safe to share."""

    features: FeatureExtractor
    encoder: EncoderSpec
    long_form: LongFormOptions = field(default_factory=LongFormOptions)
    geometry: ChunkGeometry = field(init=False)
    """The chunked transcription's windows, in samples (from the options and the model, at construction)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "geometry", ChunkGeometry.of(
            self.long_form, self.features.spec, self.encoder.subsampling_factor, self.encoder.max_frames))

    @property
    def sample_rate(self) -> int:
        """The rate the model expects."""
        return self.features.spec.sample_rate

    @property
    def max_seconds(self) -> float | None:
        """The user's limit on input length (``LongFormOptions.max_audio_seconds``), checked from the declared
        length before anything is decoded; ``None``: any length."""
        return self.long_form.max_audio_seconds

    def strategy(self, num_samples: int) -> StrategyName:
        """How an input of ``num_samples`` samples at the model's rate is transcribed."""
        chosen = self.long_form.strategy
        if chosen != "auto":
            return chosen
        geometry = self.geometry
        if num_samples <= geometry.chunk + geometry.right:
            return "one_pass"  # a single window: chunking would encode the same samples
        limit = self.encoder.max_frames
        if limit is not None and self._encoder_frames(self.features.valid_frames(num_samples)) > limit:
            return "chunked"
        return "one_pass" if self.encoder_bytes(num_samples) <= self.long_form.budget else "chunked"

    def _encoder_frames(self, feature_frames: int) -> int:
        return -(-feature_frames // self.encoder.subsampling_factor)

    def encoder_bytes(self, num_samples: int) -> int:
        """Estimated peak memory of encoding ``num_samples`` samples in one pass (:func:`one_pass_bytes`)."""
        attention = self.encoder.attention
        # Local attention's export scores each chunk of max(left, right) queries against its window of keys;
        # full and limited attention (a mask over the full scores) score every query against every key.
        context = attention.context if attention.kind == "local" else None
        keys = None if context is None else sum(context) + max(context)
        feature_frames = self.features.valid_frames(num_samples)
        return one_pass_bytes(feature_frames, self._encoder_frames(feature_frames),
                              heads=self.encoder.attention_heads or DEFAULT_HEADS, n_mels=self.features.spec.n_mels,
                              d_model=self.encoder.d_model, attention_keys=keys)

    def __call__(self, source: AudioInput, sample_rate: int | None = None) -> Prepared:
        """Prepare one input (``sample_rate``: the rate of a bare array; default the model's).

        Raises:
            AudioDecodeError, AudioFileNotFoundError: the input is not readable audio.
            AudioTooLongError: longer than ``LongFormOptions.max_audio_seconds``, or, with the ``one_pass``
                strategy, than the encoder takes in one pass.
        """
        audio = load_audio(source, self.sample_rate, sample_rate=sample_rate, max_seconds=self.max_seconds)
        num_samples = audio.samples.shape[0]
        strategy = self.strategy(num_samples)
        warnings = audio.warnings
        if self.features.valid_frames(num_samples) == 0:
            # nothing to encode (less than one hop of audio; an encoder still makes a frame of a length of 0):
            # recorded as the strategy chosen for it (chunked where forced)
            return PreparedAudio(duration=audio.duration, features=None, valid_frames=0, strategy=strategy,
                                 warnings=warnings)
        if strategy == "chunked":
            features, valid = self.features.long_features(audio.samples)
            return LongAudio(audio.duration, features, valid, tuple(self.geometry.windows(num_samples)), warnings)
        features, valid = self.features(audio.samples)
        self._check_length(valid, audio.duration)
        return PreparedAudio(duration=audio.duration, features=features, valid_frames=valid,
                             encoder_bytes=self.encoder_bytes(num_samples), warnings=warnings)

    def window_features(self, long: LongAudio, window: Window) -> tuple[FloatArray, int]:
        """Features of one window of a long input: one pass's features of the window's samples (normalised
        over the whole input; NeMo's buffered script normalises each window over itself, which agrees less
        with one pass: benchmarks/README.md), then the padding frame the window alone would have."""
        spec = self.features.spec
        first = window.start // spec.hop_length
        valid = self.features.valid_frames(window.end - window.start)
        if window.start % spec.hop_length or first + valid > long.feature_frames:
            raise ValueError(f"window {window} does not lie on the input's {long.feature_frames} feature frames")
        features = np.full((spec.n_mels, valid + 1), spec.pad_value, dtype=np.float32)
        features[:, :valid] = long.features[:, first : first + valid]
        return features, valid

    def _check_length(self, valid_frames: int, duration: float) -> None:
        spec = self.encoder
        encoded = -(-valid_frames // spec.subsampling_factor)
        if spec.max_frames is not None and encoded > spec.max_frames:
            limit = spec.max_frames * spec.subsampling_factor * self.features.spec.window_stride
            raise AudioTooLongError(
                f"audio of {duration:.1f} s is longer than this model's encoder takes in one pass "
                f"(about {limit:.0f} s); use LongFormOptions(strategy='auto' or 'chunked')"
            )
