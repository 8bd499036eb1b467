"""Log-mel features in numpy, matching NeMo's ``FilterbankFeatures`` as ``transcribe()`` runs it
(eval mode: no dither, no padding to a multiple of ``pad_to``).

The window and the mel filterbank are NeMo's own buffers, saved by ``convert-model``, so nothing
here re-derives librosa's filter design.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import ManifestError
from .manifest import FeatureSpec

FloatArray = npt.NDArray[np.float32]

NORMALIZE_EPS = 1e-5
"""NeMo's ``CONSTANT`` added to the standard deviation."""


@dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """Computes ``(n_mels, frames)`` features and the valid frame count for one signal."""

    spec: FeatureSpec
    window: FloatArray
    """Window of ``win_length`` samples (NeMo's ``featurizer.window``)."""
    filterbank: FloatArray
    """Mel filterbank, shape ``(n_mels, n_fft // 2 + 1)`` (NeMo's ``featurizer.fb``)."""

    @classmethod
    def load(cls, spec: FeatureSpec, model_dir: Path) -> FeatureExtractor:
        """Load the window and filterbank arrays named by ``spec``.

        Raises:
            ManifestError: the arrays are missing or do not match the settings.
        """
        try:
            with np.load(model_dir / spec.arrays_file, allow_pickle=False) as arrays:
                window = np.asarray(arrays["window"], dtype=np.float32)
                filterbank = np.asarray(arrays["filterbank"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ManifestError(f"{spec.arrays_file}: cannot read window/filterbank arrays ({exc})") from exc
        if window.shape != (spec.win_length,):
            raise ManifestError(f"window has shape {window.shape}, expected ({spec.win_length},)")
        if filterbank.shape != (spec.n_mels, spec.n_fft // 2 + 1):
            raise ManifestError(
                f"filterbank has shape {filterbank.shape}, expected ({spec.n_mels}, {spec.n_fft // 2 + 1})"
            )
        window.setflags(write=False)
        filterbank.setflags(write=False)
        return cls(spec=spec, window=window, filterbank=filterbank)

    def valid_frames(self, num_samples: int) -> int:
        """NeMo's ``get_seq_len``: frames that carry signal (the STFT returns one more)."""
        if num_samples == 0:
            return 0
        spec = self.spec
        pad = ((spec.n_fft - spec.hop_length) // 2) * 2 if spec.exact_pad else (spec.n_fft // 2) * 2
        return max(0, (num_samples + pad - spec.n_fft) // spec.hop_length)

    def __call__(self, samples: FloatArray) -> tuple[FloatArray, int]:
        """Features for one mono signal at the model's rate.

        Args:
            samples: float32 samples, shape ``(n,)``, ``n >= 1``.

        Returns:
            ``(features, valid)``: features of shape ``(n_mels, frames)`` (float32) and the number of
            valid frames; frames past ``valid`` hold ``pad_value``.
        """
        spec = self.spec
        num_samples = samples.shape[0]
        if num_samples == 0:
            raise ValueError("cannot compute features of an empty signal")
        valid = self.valid_frames(num_samples)
        x = samples.astype(np.float64)

        if spec.exact_pad:
            amount = (spec.n_fft - spec.hop_length) // 2
            x = np.pad(x, (amount, amount))
        if spec.preemph is not None:
            x = np.concatenate((x[:1], x[1:] - spec.preemph * x[:-1]))
            x[num_samples:] = 0.0  # NeMo masks by the original length, also after exact padding
        if not spec.exact_pad:
            half = spec.n_fft // 2
            x = np.pad(x, (half, half))

        window = np.zeros(spec.n_fft, dtype=np.float64)
        left = (spec.n_fft - spec.win_length) // 2
        window[left : left + spec.win_length] = self.window
        frames = np.lib.stride_tricks.sliding_window_view(x, spec.n_fft)[:: spec.hop_length]
        spectrum = np.fft.rfft(frames * window, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        if spec.mag_power != 2.0:
            power = np.sqrt(power) ** spec.mag_power
        mel = (self.filterbank.astype(np.float64) @ power.T).astype(np.float32)

        if spec.log:
            guard = np.float32(spec.log_zero_guard_value)
            mel = np.log(mel + guard) if spec.log_zero_guard_type == "add" else np.log(np.maximum(mel, guard))

        mel = _normalize(mel, valid, spec.normalize)
        mel[:, valid:] = spec.pad_value
        return np.ascontiguousarray(mel, dtype=np.float32), valid


def _normalize(mel: FloatArray, valid: int, kind: str) -> FloatArray:
    if kind == "per_feature":
        part = mel[:, :valid].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = part.mean(axis=1, keepdims=True) if valid else np.zeros((mel.shape[0], 1))
            std = np.sqrt(((part - mean) ** 2).sum(axis=1, keepdims=True) / (valid - 1.0))
        std = np.nan_to_num(std, nan=0.0, posinf=0.0) + NORMALIZE_EPS
        normalized: FloatArray = ((mel - mean) / std).astype(np.float32)
        return normalized
    if kind == "all_features":
        part = mel[:, :valid].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = part.mean()
            std = part.std(ddof=1) + NORMALIZE_EPS
        normalized = ((mel - mean) / std).astype(np.float32)
        return normalized
    return mel
