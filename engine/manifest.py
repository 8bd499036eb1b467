"""The model directory manifest: everything features and decoding need, and where the files are.

``convert-model`` writes it; :class:`~parakeet_runtime.engine.Engine` reads it. The schema is
versioned; a directory of another major schema gets a clear "re-convert" error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError, ModelDirectoryError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
FORMAT_NAME = "parakeet-runtime-model"


@dataclass(frozen=True)
class FeatureSpec:
    """Log-mel feature settings, copied from NeMo's ``FilterbankFeatures``."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    window: str
    n_mels: int
    preemph: float | None
    mag_power: float
    log: bool
    log_zero_guard_type: str
    log_zero_guard_value: float
    normalize: str
    exact_pad: bool
    pad_value: float
    window_stride: float
    """Seconds per feature frame, as NeMo's config states it (used for timestamps)."""
    arrays_file: str = "features.npz"
    """``.npz`` with the exact ``window`` (win_length,) and ``filterbank`` (n_mels, n_fft//2+1)."""


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder graph: features in, projected encoder frames out."""

    file: str
    subsampling_factor: int
    d_model: int
    joint_hidden: int
    max_frames: int
    """Longest encoder output (frames) the exported positional encoding covers."""
    external_data: str | None = None
    """The single external weights file beside ``file`` (encoders over 2 GB), else ``None``."""
    precision: str = "fp32"
    """``fp32``, or ``int8`` (dynamic int8 quantisation of the encoder's MatMul weights)."""
    input_features: str = "features"
    input_lengths: str = "feature_lengths"
    output_frames: str = "encoder_projected"
    output_lengths: str = "encoded_lengths"


@dataclass(frozen=True)
class PredictorSpec:
    """The prediction network graph: a label and LSTM state in, projected output and new state out."""

    file: str
    layers: int
    hidden: int
    input_targets: str = "targets"
    input_h: str = "h_in"
    input_c: str = "c_in"
    output: str = "predictor_projected"
    output_h: str = "h_out"
    output_c: str = "c_out"


@dataclass(frozen=True)
class JointSpec:
    """The joint graph: one projected encoder frame and predictor output in, logits out."""

    file: str
    num_outputs: int
    input_encoder: str = "encoder_frame"
    input_predictor: str = "predictor_output"
    output_logits: str = "logits"


@dataclass(frozen=True)
class StepSpec:
    """The predictor and the joint in one graph (optional; directories without it run the two graphs).

    Inputs: the predictor section's label and state inputs, and one projected encoder frame per row (or,
    for a single row, any number of frames). Outputs: the predictor section's outputs, and the joint's
    logits for each frame with its row's new predictor output (a single row's goes with every frame).
    """

    file: str
    input_encoder: str = "encoder_frame"
    output_logits: str = "logits"


@dataclass(frozen=True)
class DecodingSpec:
    """TDT decoding settings."""

    vocab_size: int
    blank_id: int
    durations: tuple[int, ...]
    max_symbols: int | None


@dataclass(frozen=True)
class TokenizerSpec:
    """The SentencePiece tokenizer and timestamp text rules."""

    file: str
    vocab_file: str
    kind: str
    supported_punctuation: tuple[str, ...]
    word_separator: str = " "
    segment_separators: tuple[str, ...] = (".", "?", "!")
    segment_gap_threshold: int | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated model manifest."""

    features: FeatureSpec
    encoder: EncoderSpec
    predictor: PredictorSpec
    joint: JointSpec
    decoding: DecodingSpec
    tokenizer: TokenizerSpec
    model_name: str = ""
    """A short, stable name for the model (no spaces), e.g. ``parakeet-tdt-0.6b-v2``."""
    description: str = ""
    """One line about the model for people (what it is, what it was trained on)."""
    languages: tuple[str, ...] = ()
    """ISO 639-1 codes of the languages the model is known to transcribe (empty: not recorded)."""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    step: StepSpec | None = None

    def to_json(self) -> str:
        """Serialise, with the format name and schema version first."""
        body = asdict(self)
        body = {"format": FORMAT_NAME, "schema_version": self.schema_version, **body}
        return json.dumps(body, indent=2, sort_keys=False) + "\n"

    def files(self) -> tuple[str, ...]:
        """Relative paths of every file the manifest refers to."""
        names = (
            self.features.arrays_file,
            self.encoder.file,
            self.predictor.file,
            self.joint.file,
            self.tokenizer.file,
            self.tokenizer.vocab_file,
        )
        extra = tuple(name for name in (self.encoder.external_data, self.step.file if self.step else None) if name)
        return (*names, *extra)


def _section(raw: Mapping[str, Any], name: str, cls: type[Any]) -> Any:
    value = raw.get(name)
    if not isinstance(value, Mapping):
        raise ManifestError(f"manifest: section {name!r} is missing or not an object")
    try:
        kwargs = {}
        for key, item in value.items():
            kwargs[key] = tuple(item) if isinstance(item, list) else item
        return cls(**kwargs)
    except TypeError as exc:
        raise ManifestError(f"manifest: section {name!r} does not match schema {SCHEMA_VERSION}: {exc}") from exc


def parse_manifest(raw: Mapping[str, Any]) -> Manifest:
    """Validate a decoded manifest object.

    Raises:
        ManifestError: wrong format, unsupported schema version, missing or inconsistent fields.
    """
    if raw.get("format") != FORMAT_NAME:
        raise ManifestError(f"manifest: expected format {FORMAT_NAME!r}, found {raw.get('format')!r}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest: schema version {version!r} is not supported by this parakeet-runtime "
            f"(it reads version {SCHEMA_VERSION}); re-convert the model with this version's convert-model"
        )
    manifest = Manifest(
        features=_section(raw, "features", FeatureSpec),
        encoder=_section(raw, "encoder", EncoderSpec),
        predictor=_section(raw, "predictor", PredictorSpec),
        joint=_section(raw, "joint", JointSpec),
        decoding=_section(raw, "decoding", DecodingSpec),
        tokenizer=_section(raw, "tokenizer", TokenizerSpec),
        model_name=str(raw.get("model_name", "")),
        description=str(raw.get("description", "")),
        languages=_languages(raw.get("languages", [])),
        provenance=dict(raw.get("provenance", {})),
        schema_version=SCHEMA_VERSION,
        step=_section(raw, "step", StepSpec) if raw.get("step") is not None else None,
    )
    _check_consistency(manifest)
    return manifest


def _languages(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(code, str) and code for code in value):
        raise ManifestError(f"manifest: 'languages' must be a list of language codes, found {value!r}")
    return tuple(code.lower() for code in value)


def _check_consistency(m: Manifest) -> None:
    d = m.decoding
    if d.blank_id != d.vocab_size:
        raise ManifestError(f"manifest: TDT blank_id must equal vocab_size, found {d.blank_id} and {d.vocab_size}")
    if m.joint.num_outputs != d.vocab_size + 1 + len(d.durations):
        raise ManifestError(
            f"manifest: joint has {m.joint.num_outputs} outputs, expected vocab_size + 1 + len(durations) = "
            f"{d.vocab_size + 1 + len(d.durations)}"
        )
    if m.encoder.precision not in ("fp32", "int8"):
        raise ManifestError(f"manifest: unsupported encoder precision {m.encoder.precision!r}")
    f = m.features
    if f.win_length > f.n_fft or f.hop_length <= 0 or f.sample_rate <= 0:
        raise ManifestError(f"manifest: inconsistent feature settings {f}")
    if f.normalize not in ("per_feature", "all_features", "none", ""):
        raise ManifestError(f"manifest: unsupported feature normalisation {f.normalize!r}")
    if f.log_zero_guard_type not in ("add", "clamp"):
        raise ManifestError(f"manifest: unsupported log_zero_guard_type {f.log_zero_guard_type!r}")


def load_manifest(model_dir: Path) -> Manifest:
    """Read and validate ``model_dir/manifest.json`` and check that every file it names exists.

    Raises:
        ModelDirectoryError: the directory, the manifest or a referenced file is missing.
        ManifestError: the manifest is not valid JSON or fails validation.
    """
    if not model_dir.is_dir():
        raise ModelDirectoryError(f"model directory not found: {model_dir}")
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelDirectoryError(f"{model_dir} is not a parakeet-runtime model directory: no {MANIFEST_NAME}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable JSON manifest ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    manifest = parse_manifest(raw)
    missing = [name for name in manifest.files() if not (model_dir / name).is_file()]
    if missing:
        raise ModelDirectoryError(f"{model_dir}: files named in the manifest are missing: {', '.join(missing)}")
    return manifest
