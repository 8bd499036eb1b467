"""The model directory manifest: everything features and decoding need, and where the files are.

``convert-model`` writes it; :class:`~parakeet_runtime.engine.Engine` reads it. The schema is
versioned; a directory of another major schema gets a clear "re-convert" error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ManifestError, ModelDirectoryError

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
class EncoderExport:
    """How the encoder graph was exported (``convert-model`` prints it)."""

    fused_attention_layers: int
    """Attention layers exported as ONNX Runtime's fused ``MultiHeadAttention``."""
    position_table_layers: int
    """Attention layers whose relative-position projections are table lookups."""
    position_table_frames: int
    """Longest input (encoder frames) the position tables cover; 0 without tables."""


@dataclass(frozen=True)
class ParityProbe:
    """The export-time comparison with NeMo on one probe clip."""

    audio: str
    """The probe clip's path at conversion time."""
    tokens: int
    """Tokens NeMo decoded on it."""
    identical: bool
    """Token ids, frames and durations identical to NeMo's."""
    feature_max_abs_diff: float
    """Largest absolute difference of the log-mel features against NeMo's preprocessor."""
    encoder_max_abs_diff: float
    """Largest absolute difference of the projected encoder frames against NeMo's."""
    detail: str = ""
    """Both decodings, when they differ."""


@dataclass(frozen=True)
class Quantization:
    """How the encoder was quantised, and how its tokens agree with the fp32 directory's."""

    precision: str
    """``int8``."""
    weights: str | None = None
    """Weight scheme (``uint8``, ``int7``, ``int8``: ``parakeet_runtime.export.quantize``); ``None``: not recorded."""
    method: str = ""
    """What the quantiser did, for people."""
    token_agreement_with_fp32: float | None = None
    """1 - token edit distance / fp32 tokens on the probe clips; ``None``: not measured."""
    identical_clips: int | None = None
    """Probe clips whose tokens are identical to fp32's."""
    clips: int | None = None
    """Probe clips compared."""


@dataclass(frozen=True)
class DecodingMethod:
    """How the engine decodes this model: NeMo's greedy TDT search (the same token ids, frames and
    durations as NeMo's greedy decoding), on one utterance (``decoding/tdt.py``) or on a padded batch of them
    (``decoding/tdt_batch.py``), both computing the joint over a few frames ahead of the current one."""

    search: str = "greedy_tdt"
    """NeMo's greedy (label-looping) TDT search; the only search the engine runs."""
    batched: bool = True
    """Utterances may be decoded together in padded batches (each gets exactly its solo result)."""
    joint_lookahead: bool = True
    """The search evaluates the joint over a window of frames ahead while it looks for a label (the tokens
    are the same as one frame at a time)."""

    def describe(self) -> str:
        """One line for people."""
        batching = "one utterance or padded batches" if self.batched else "one utterance at a time"
        lookahead = ", joint lookahead" if self.joint_lookahead else ""
        return f"greedy TDT search as NeMo's ({batching}{lookahead})"


_VERSION_KEYS = {"nemo_toolkit": "nemo_toolkit", "torch": "torch", "onnx": "onnx", "onnxruntime": "onnxruntime",
                 "parakeet_runtime": "parakeet-runtime"}
"""``Versions`` field -> distribution name (the manifest's key)."""


@dataclass(frozen=True)
class Versions:
    """Package versions the conversion ran with (``unknown``: not installed or not recorded)."""

    nemo_toolkit: str = "unknown"
    torch: str = "unknown"
    onnx: str = "unknown"
    onnxruntime: str = "unknown"
    parakeet_runtime: str = "unknown"

    def to_dict(self) -> dict[str, str]:
        """As the manifest writes them: distribution names as keys."""
        return {key: getattr(self, name) for name, key in _VERSION_KEYS.items()}


@dataclass(frozen=True)
class Provenance:
    """Where a model directory came from and what the conversion checked (every field is optional in
    older manifests: the defaults stand for "not recorded")."""

    source: str = ""
    """The ``.nemo`` path or pretrained name ``convert-model`` was given."""
    source_sha256: str = ""
    """SHA-256 of the ``.nemo`` archive ("" when unknown)."""
    model_class: str = ""
    """NeMo's model class."""
    versions: Versions = field(default_factory=Versions)
    python: str = ""
    converted_at: str = ""
    """ISO 8601 UTC time of the conversion."""
    decoding: DecodingMethod = field(default_factory=DecodingMethod)
    encoder_export: EncoderExport | None = None
    """``None`` in directories converted before it was recorded."""
    parity: tuple[ParityProbe, ...] | None = None
    """The export-time parity check, one entry per probe clip; ``None`` when it was skipped."""
    quantization: Quantization | None = None
    """``None`` for an fp32 encoder."""

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``provenance`` object (the keys of schema version 1)."""
        body: dict[str, Any] = {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "model_class": self.model_class,
            "versions": self.versions.to_dict(),
            "python": self.python,
            "converted_at": self.converted_at,
            "decoding": asdict(self.decoding),
        }
        if self.encoder_export is not None:
            body["encoder_export"] = asdict(self.encoder_export)
        if self.parity is not None:
            body["parity"] = [asdict(probe) for probe in self.parity]
        if self.quantization is not None:
            body["quantization"] = asdict(self.quantization)
        return body


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
    provenance: Provenance = field(default_factory=Provenance)
    schema_version: int = SCHEMA_VERSION
    step: StepSpec | None = None

    def to_json(self) -> str:
        """Serialise, with the format name and schema version first."""
        body = asdict(self)
        body["provenance"] = self.provenance.to_dict()
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
        provenance=parse_provenance(raw.get("provenance", {})),
        schema_version=SCHEMA_VERSION,
        step=_section(raw, "step", StepSpec) if raw.get("step") is not None else None,
    )
    _check_consistency(manifest)
    return manifest


_T = TypeVar("_T")


def _record(value: object, name: str, cls: type[_T]) -> _T:
    """A provenance object whose fields are plain JSON values, checked against the dataclass's types."""
    if not isinstance(value, Mapping):
        raise ManifestError(f"manifest: provenance {name!r} must be an object, found {value!r}")
    kinds = {f.name: f.type for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(value) - set(kinds))
    if unknown:
        raise ManifestError(f"manifest: provenance {name!r} has unknown fields {unknown}")
    for key, item in value.items():
        if not _json_value_fits(item, str(kinds[key])):
            raise ManifestError(f"manifest: provenance {name}.{key} has the wrong type: {item!r}")
    try:
        return cls(**value)
    except TypeError as exc:
        raise ManifestError(f"manifest: provenance {name!r} does not match schema {SCHEMA_VERSION}: {exc}") from exc


def _json_value_fits(item: object, annotation: str) -> bool:
    """Whether a JSON value fits a field annotated ``annotation`` (``int``, ``float | None``, ...)."""
    checks: dict[str, Callable[[object], bool]] = {
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "None": lambda v: v is None,
    }
    return any(checks[part.strip()](item) for part in annotation.split("|"))


def _string(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise ManifestError(f"manifest: provenance {key!r} must be a string, found {value!r}")
    return value


def _decoding_method(value: object) -> DecodingMethod:
    # Directories converted before the field was typed describe the same search in a sentence
    # ("greedy TDT (label looping), ..."); the engine that reads them runs the search described here.
    if isinstance(value, str):
        if not value.lower().startswith("greedy tdt"):
            raise ManifestError(f"manifest: provenance 'decoding' names an unknown search: {value!r}")
        return DecodingMethod()
    method = _record(value, "decoding", DecodingMethod)
    if method.search != "greedy_tdt":
        raise ManifestError(f"manifest: provenance 'decoding' names an unknown search: {method.search!r}")
    return method


def parse_provenance(raw: object) -> Provenance:
    """The typed ``provenance`` object of a manifest (missing keys take their "not recorded" defaults).

    Raises:
        ManifestError: a key of the wrong type or an unknown field in a provenance record.
    """
    if not isinstance(raw, Mapping):
        raise ManifestError(f"manifest: 'provenance' must be an object, found {raw!r}")
    versions = raw.get("versions", {})
    if not isinstance(versions, Mapping) or not all(isinstance(v, str) for v in versions.values()):
        raise ManifestError(f"manifest: provenance 'versions' must map packages to versions, found {versions!r}")
    parity = raw.get("parity")
    if parity is not None and not isinstance(parity, list):
        raise ManifestError(f"manifest: provenance 'parity' must be a list, found {parity!r}")
    export = raw.get("encoder_export")
    quantization = raw.get("quantization")
    return Provenance(
        source=_string(raw, "source"),
        source_sha256=_string(raw, "source_sha256"),
        model_class=_string(raw, "model_class"),
        versions=Versions(**{name: str(versions.get(key, "unknown")) for name, key in _VERSION_KEYS.items()}),
        python=_string(raw, "python"),
        converted_at=_string(raw, "converted_at"),
        decoding=_decoding_method(raw.get("decoding", {})),
        encoder_export=None if export is None else _record(export, "encoder_export", EncoderExport),
        parity=None if parity is None else tuple(_record(p, "parity", ParityProbe) for p in parity),
        quantization=None if quantization is None else _record(quantization, "quantization", Quantization),
    )


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
        raise ModelDirectoryError(
            f"model directory not found: {model_dir} (make one from a NeMo checkpoint with convert-model, e.g. "
            f"`convert-model nvidia/parakeet-tdt-0.6b-v2 {model_dir}` or `convert-model model.nemo {model_dir}`; "
            "it needs the export extra: pip install 'parakeet-runtime[export]')"
        )
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
