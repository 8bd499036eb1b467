"""Turn one input into what the encoder needs: decoded audio, features, and a length check."""

from __future__ import annotations

from dataclasses import dataclass

from parakeet_runtime.decoding import FloatArray

from ..errors import AudioTooLongError
from ..model.features import FeatureExtractor
from ..model.manifest import EncoderSpec
from .audio import AudioInput, load_audio


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
class Preparer:
    """Decodes, resamples and featurises inputs for one model. Read-only; safe to share."""

    features: FeatureExtractor
    encoder: EncoderSpec

    @property
    def sample_rate(self) -> int:
        """The rate the model expects."""
        return self.features.spec.sample_rate

    def __call__(self, source: AudioInput, sample_rate: int | None = None) -> PreparedAudio:
        """Prepare one input (``sample_rate``: the rate of a bare array; default the model's).

        Raises:
            AudioDecodeError, AudioFileNotFoundError: the input is not readable audio.
            AudioTooLongError: longer than the exported encoder takes in one pass.
        """
        audio = load_audio(source, self.sample_rate, sample_rate=sample_rate)
        if audio.samples.shape[0] == 0:
            return PreparedAudio(duration=0.0, features=None, valid_frames=0)
        features, valid = self.features(audio.samples)
        if valid == 0:
            return PreparedAudio(duration=audio.duration, features=None, valid_frames=0)
        self._check_length(valid, audio.duration)
        return PreparedAudio(duration=audio.duration, features=features, valid_frames=valid)

    def _check_length(self, valid_frames: int, duration: float) -> None:
        spec = self.encoder
        encoded = -(-valid_frames // spec.subsampling_factor)
        if encoded > spec.max_frames:
            limit = spec.max_frames * spec.subsampling_factor * self.features.spec.window_stride
            raise AudioTooLongError(
                f"audio of {duration:.1f} s is longer than this model's encoder takes in one pass "
                f"(about {limit:.0f} s); split it into shorter pieces"
            )
