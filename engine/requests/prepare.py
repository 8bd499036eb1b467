"""Turn one input into what the encoder needs: decoded audio, features, and a length check."""

from __future__ import annotations

import math
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

    @property
    def max_seconds(self) -> float:
        """The longest audio the encoder might take, a little over its exact limit: audio longer than this is
        refused from its declared length before it is decoded or resampled; shorter audio gets the exact
        check on its feature frames (:meth:`_check_length`) after feature extraction.

        The exact limit is ``max_frames × subsampling_factor`` valid feature frames; the last sample count
        within it at the model's rate is ``(frames + 1) × hop + n_fft - padding - 1``. One hop is added for
        the rounding of resampling, so the early check never refuses audio the exact check accepts.
        """
        spec = self.features.spec
        if self.encoder.max_frames is None:
            return math.inf  # the graph takes any length
        frames = self.encoder.max_frames * self.encoder.subsampling_factor
        pad = ((spec.n_fft - spec.hop_length) // 2) * 2 if spec.exact_pad else (spec.n_fft // 2) * 2
        samples = (frames + 1) * spec.hop_length + spec.n_fft - pad + spec.hop_length
        return samples / spec.sample_rate

    def __call__(self, source: AudioInput, sample_rate: int | None = None) -> PreparedAudio:
        """Prepare one input (``sample_rate``: the rate of a bare array; default the model's).

        Raises:
            AudioDecodeError, AudioFileNotFoundError: the input is not readable audio.
            AudioTooLongError: longer than the exported encoder takes in one pass.
        """
        audio = load_audio(source, self.sample_rate, sample_rate=sample_rate, max_seconds=self.max_seconds)
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
        if spec.max_frames is not None and encoded > spec.max_frames:
            limit = spec.max_frames * spec.subsampling_factor * self.features.spec.window_stride
            raise AudioTooLongError(
                f"audio of {duration:.1f} s is longer than this model's encoder takes in one pass "
                f"(about {limit:.0f} s); split it into shorter pieces"
            )
