"""The model directory manifest: everything features and decoding need, and where the files are.

``convert-model`` writes it; :class:`~parakeet_runtime.engine.Engine` reads it. The schema is
versioned; a directory of another major schema gets a clear "re-convert" error.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ManifestError, ModelDirectoryError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
FORMAT_NAME = "parakeet-runtime-model"

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
"""Sample rates (Hz) a manifest, an array or a file may have; anything else is a mistake, not audio."""
MAX_DIMENSION = 1 << 16
"""Upper bound of every size in a manifest (FFT length, mel bins, hidden sizes, vocabulary, durations):
far above any Parakeet model's, far below what a hostile manifest needs to exhaust memory."""
MAX_LAYERS = 256
"""Upper bound of the predictor's LSTM layers."""


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


MAX_ATTENTION_CONTEXT = 1 << 20
"""Upper bound of a local attention context (encoder frames each side)."""


@dataclass(frozen=True)
class EncoderAttention:
    """The encoder's self-attention: ``full`` (every frame sees every frame), ``local`` (each frame sees
    ``context[0]`` frames before it and ``context[1]`` after it; NeMo's ``rel_pos_local_attn``, computed in
    windows), or ``limited`` (NeMo's full attention with a finite ``att_context_size``, as cache-aware streaming
    encoders have: every frame's scores are computed, then masked to the context; see ``style``)."""

    kind: str = "full"
    """``full``, ``local`` or ``limited``."""
    context: tuple[int, int] | None = None
    """``(left, right)`` encoder frames for ``local`` and ``limited`` (for ``limited``, ``-1``: unlimited on that
    side, as NeMo's ``att_context_size``); ``None`` for ``full``."""
    style: str | None = None
    """For ``limited``: NeMo's ``att_context_style``, ``regular`` (each frame sees ``context`` around itself) or
    ``chunked_limited`` (frames in chunks of ``context[1] + 1``; each sees its chunk and ``context[0]`` frames
    before it); ``None`` otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``encoder.attention`` object: ``{"kind": "full"}``, ``{"kind": "local", "context":
        [left, right]}`` or ``{"kind": "limited", "context": [left, right], "style": style}``."""
        if self.context is None:
            return {"kind": self.kind}
        body: dict[str, Any] = {"kind": self.kind, "context": list(self.context)}
        if self.style is not None:
            body["style"] = self.style
        return body


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder graph: features in, projected encoder frames out."""

    file: str
    subsampling_factor: int
    d_model: int
    joint_hidden: int
    max_frames: int | None = None
    """Longest encoder output (frames) the exported positional encoding covers; ``None`` (``null`` or absent):
    the graph takes any length (its relative position embeddings are computed for the input's length)."""
    external_data: str | None = None
    """The single external weights file beside ``file`` (encoders over 2 GB), else ``None``."""
    attention_heads: int | None = None
    """Attention heads of each encoder layer (``None``: not recorded; the engine's memory estimate for long
    inputs then assumes Parakeet's 8)."""
    precision: str = "fp32"
    """``fp32``, or ``int8`` (dynamic int8 quantisation of the encoder's MatMul weights)."""
    signed_int8_file: str | None = None
    """An int8 directory's second encoder graph, beside ``file``: the same quantisation with signed int8
    weights (``file`` then holds uint8 weights). The engine loads it on CPUs with int8 dot products (VNNI,
    AMX), where it is exact and fastest, and ``file`` elsewhere (``None``: one graph, no choice)."""
    input_features: str = "features"
    input_lengths: str = "feature_lengths"
    output_frames: str = "encoder_projected"
    output_lengths: str = "encoded_lengths"
    attention: EncoderAttention = field(default_factory=EncoderAttention)
    """The graph's self-attention (manifests without it: ``full``)."""
    target: str = "default"
    """``default`` (may use ONNX Runtime's contrib operators), or ``portable`` (``convert-model --target
    tensorrt``: standard ONNX operators only, fp16-safe masking); written only when not ``default``."""
    tensorrt_version: str | None = None
    """The TensorRT release that built engines at conversion (``None``: none built then; written only when set)."""
    tensorrt_gpu: str | None = None
    """The GPU those engines were built on (TensorRT engines are specific to a GPU model)."""


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
    """Labels at most at one frame before time moves on; ``None`` is refused at load (no bound)."""


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
    signed_int8_token_agreement_with_fp32: float | None = None
    """The same for the encoder's ``signed_int8_file`` (``None``: no such graph, or not measured)."""
    signed_int8_identical_clips: int | None = None
    """Probe clips whose tokens with ``signed_int8_file`` are identical to fp32's."""
    activations: str | None = None
    """How the products' inputs were scaled for uint8: ``per-row`` (each encoder frame its own scale),
    ``per-tensor``, ``per-row-fixed`` (each frame its own scale at a fixed quantiser: batch-invariant) or
    ``per-row-centred`` (each frame centred, a fixed quantiser: batch-invariant)
    (``parakeet_runtime.export.quantize.ACTIVATIONS``); ``None``: not recorded (per tensor: directories converted
    before 2026-12-05; :attr:`scaling`)."""

    @property
    def scaling(self) -> str:
        """The activations' scaling, :data:`UNRECORDED_ACTIVATIONS` where the directory records none."""
        return self.activations or UNRECORDED_ACTIVATIONS


UNRECORDED_ACTIVATIONS = "per-tensor"
"""The activation scaling of an int8 directory that records none (converted before 2026-12-05, when every int8
encoder quantised its activations per tensor)."""


BATCH_INVARIANT_ACTIVATIONS = frozenset({"per-row-fixed", "per-row-centred"})
"""Activation scalings (``Quantization.activations``) whose int8 products do not depend on the other inputs of a
padded batch: the engine batches such a directory's requests."""


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
    dropped_heads: tuple[str, ...] = ()
    """Heads of the checkpoint the directory does not carry: ``("ctc",)`` for a hybrid TDT+CTC checkpoint (its
    TDT head is exported, the one NeMo's hybrid models transcribe with by default; its auxiliary CTC decoder
    is not). Empty: none dropped (or not recorded: directories converted before the field was written)."""

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``provenance`` object (the keys of schema version 1; ``dropped_heads`` only where
        a head was dropped)."""
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
        if self.dropped_heads:
            body["dropped_heads"] = list(self.dropped_heads)
        return body


@dataclass(frozen=True)
class FileDigest:
    """Size and SHA-256 of one file of the model directory, as ``convert-model`` wrote it."""

    name: str
    """The file's path inside the directory, as the manifest names it."""
    sha256: str
    """Lower-case hexadecimal SHA-256 of the file's bytes."""
    size: int
    """The file's size in bytes (the manifest's key is ``bytes``)."""


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
    digests: tuple[FileDigest, ...] = ()
    """Size and SHA-256 of the files the manifest names (the manifest's ``files``; empty: not recorded)."""

    def to_json(self) -> str:
        """Serialise, with the format name and schema version first."""
        body = asdict(self)
        body["encoder"]["attention"] = self.encoder.attention.to_dict()
        for key, default in (("target", "default"), ("tensorrt_version", None), ("tensorrt_gpu", None)):
            if body["encoder"][key] == default:  # optional fields: older manifests stay as they were
                del body["encoder"][key]
        body["provenance"] = self.provenance.to_dict()
        del body["digests"]
        if self.digests:
            body["files"] = {d.name: {"sha256": d.sha256, "bytes": d.size} for d in self.digests}
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
        extra = tuple(name for name in (self.encoder.external_data, self.step.file if self.step else None,
                                        self.encoder.signed_int8_file) if name)
        return (*names, *extra)

    def named_files(self) -> tuple[tuple[str, str], ...]:
        """``(field, path)`` of every file the manifest refers to, e.g. ``("encoder.file", "encoder.onnx")``."""
        named = [
            ("features.arrays_file", self.features.arrays_file),
            ("encoder.file", self.encoder.file),
            ("encoder.external_data", self.encoder.external_data),
            ("predictor.file", self.predictor.file),
            ("joint.file", self.joint.file),
            ("tokenizer.file", self.tokenizer.file),
            ("tokenizer.vocab_file", self.tokenizer.vocab_file),
            ("step.file", self.step.file if self.step else None),
            ("encoder.signed_int8_file", self.encoder.signed_int8_file),
        ]
        return tuple((label, name) for label, name in named if name is not None)


_T0 = TypeVar("_T0")
_Check = tuple[Callable[[Any], bool], str]


def _between(low: float, high: float) -> _Check:
    return (lambda v: v is None or low <= v <= high), f"between {low:g} and {high:g}"


def _one_of(*choices: str) -> _Check:
    return (lambda v: v in choices), f"one of {', '.join(map(repr, choices))}"


_POSITIVE: _Check = ((lambda v: v is None or v > 0), "positive")
_SIZE = _between(1, MAX_DIMENSION)
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_TINY = 1.1754943508222875e-38
"""float32's largest value and smallest normal one: the features are computed in float32."""
_ENTRIES: _Check = ((lambda v: all(isinstance(item, str) and item for item in v)), "a list of non-empty strings")
_NOT_EMPTY: _Check = ((lambda v: v is None or len(v) > 0), "non-empty")

_RANGES: dict[type[Any], dict[str, _Check]] = {
    FeatureSpec: {
        "sample_rate": _between(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE),
        "n_fft": _SIZE,
        "win_length": _SIZE,
        "hop_length": _SIZE,
        "n_mels": _SIZE,
        "preemph": _between(0.0, 1.0),
        "mag_power": ((lambda v: 0 < v <= 8), "positive, at most 8 (NeMo: 1, magnitude, or 2, power)"),
        "log_zero_guard_value": _between(_FLOAT32_TINY, _FLOAT32_MAX),
        "pad_value": _between(-_FLOAT32_MAX, _FLOAT32_MAX),
        "log_zero_guard_type": _one_of("add", "clamp"),
        "normalize": _one_of("per_feature", "all_features", "none", ""),
        "window_stride": _POSITIVE,
    },
    EncoderSpec: {
        "subsampling_factor": _SIZE,
        "d_model": _SIZE,
        "joint_hidden": _SIZE,
        "max_frames": _between(1, 1 << 31),
        "attention_heads": _SIZE,
        "precision": _one_of("fp32", "int8"),
        "target": _one_of("default", "portable"),
    },
    PredictorSpec: {"layers": _between(1, MAX_LAYERS), "hidden": _SIZE},
    JointSpec: {"num_outputs": _between(2, 2 * MAX_DIMENSION)},
    DecodingSpec: {
        "vocab_size": _SIZE,
        "blank_id": _between(0, MAX_DIMENSION),
        "durations": ((lambda v: 0 < len(v) <= 64 and all(0 <= d <= MAX_DIMENSION for d in v) and any(v)),
                      f"a non-empty list of at most 64 durations between 0 and {MAX_DIMENSION}, one of them positive"),
        "max_symbols": _between(1, MAX_DIMENSION),
    },
    TokenizerSpec: {"segment_gap_threshold": _between(0, 1 << 31), "supported_punctuation": _ENTRIES,
                    "segment_separators": _ENTRIES, "kind": _one_of("bpe", "wpe")},
}
"""Per-field ranges, checked after the types (``None``, where a field may be ``None``, always passes)."""


def _must_not_be_empty(name: str) -> bool:
    """File and graph input/output names must name something."""
    return name in ("file", "window", "kind") or name.endswith("_file") or name.startswith(("input_", "output"))


def _conforms(value: object, kind: Any) -> bool:
    """Whether a JSON value fits a field of type ``kind`` (int that is not bool, finite float, ...)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, k) for k in typing.get_args(kind))
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return isinstance(value, (list, tuple)) and all(_conforms(v, item) for v in value)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        try:
            return math.isfinite(float(value))
        except OverflowError:
            return False
    if kind is str:
        return isinstance(value, str)
    return False


def _kind_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind_name(k) for k in typing.get_args(kind))
    if origin is tuple:
        return f"a list of ({_kind_name(typing.get_args(kind)[0])})"
    names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(kind, str(kind))


def _convert(value: Any, kind: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if kind is float and value is not None:
        return float(value)
    return value


def _typed(value: object, where: str, cls: type[_T0]) -> _T0:
    """A manifest section checked field by field against ``cls``'s field types and :data:`_RANGES`."""
    if not isinstance(value, Mapping):
        raise ManifestError(f"manifest: section {where!r} is missing or not an object, found {value!r:.80}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(key) for key in set(value) - set(known))
    if unknown:
        raise ManifestError(f"manifest: section {where!r} has unknown fields {unknown} (schema {SCHEMA_VERSION})")
    missing = [name for name, f in known.items()
               if name not in value and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ManifestError(f"manifest: section {where!r} lacks the fields {missing} (schema {SCHEMA_VERSION})")
    ranges = _RANGES.get(cls, {})
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        kind = hints[key]
        if not _conforms(item, kind):
            raise ManifestError(f"manifest: {where}.{key} must be {_kind_name(kind)}, found {item!r:.80}")
        check, expected = ranges.get(key, _NOT_EMPTY if _must_not_be_empty(key) else ((lambda v: True), ""))
        if not check(item):
            raise ManifestError(f"manifest: {where}.{key} must be {expected}, found {item!r:.80}")
        kwargs[key] = _convert(item, kind)
    return cls(**kwargs)


LIMITED_STYLES = ("regular", "chunked_limited")
"""NeMo's ``att_context_style`` values a ``limited`` attention records."""


def _attention(value: object) -> EncoderAttention:
    """The ``encoder.attention`` object: ``{"kind": "full"}``, ``{"kind": "local", "context": [left, right]}``
    (each 0 or more, the larger at least 1), or ``{"kind": "limited", "context": [left, right], "style": style}``
    (each -1 for unlimited or 0 or more, not both -1; ``style`` one of :data:`LIMITED_STYLES`)."""
    if not isinstance(value, Mapping):
        raise ManifestError(f"manifest: encoder.attention must be an object, found {value!r:.80}")
    unknown = sorted(str(key) for key in set(value) - {"kind", "context", "style"})
    if unknown:
        raise ManifestError(f"manifest: encoder.attention has unknown fields {unknown} (schema {SCHEMA_VERSION})")
    kind = value.get("kind")
    context = value.get("context")
    style = value.get("style")
    if kind not in ("full", "local", "limited"):
        raise ManifestError(f"manifest: encoder.attention.kind must be one of 'full', 'local', 'limited', found "
                            f"{kind!r:.80}")
    if kind != "limited" and style is not None:
        raise ManifestError(f"manifest: encoder.attention.style is only for limited attention, found {style!r:.80}")
    if kind == "full":
        if context is not None:
            raise ManifestError(f"manifest: encoder.attention.context must be absent for full attention, found "
                                f"{context!r:.80}")
        return EncoderAttention()
    lowest = -1 if kind == "limited" else 0
    if (
        not isinstance(context, list)
        or len(context) != 2
        or not all(type(size) is int and lowest <= size <= MAX_ATTENTION_CONTEXT for size in context)
        or max(context) < (0 if kind == "limited" else 1)
    ):
        wanted = ("integers from -1 (unlimited) to {limit}, not both -1" if kind == "limited"
                  else "integers from 0 to {limit}, not both 0").format(limit=MAX_ATTENTION_CONTEXT)
        raise ManifestError(f"manifest: encoder.attention.context must be [left, right] encoder frames ({wanted}) for "
                            f"{kind} attention, found {context!r:.80}")
    if kind == "local":
        return EncoderAttention(kind="local", context=(context[0], context[1]))
    if style not in LIMITED_STYLES:
        raise ManifestError(f"manifest: encoder.attention.style must be one of {', '.join(LIMITED_STYLES)} for "
                            f"limited attention, found {style!r:.80}")
    return EncoderAttention(kind="limited", context=(context[0], context[1]), style=style)


def _encoder(value: object) -> EncoderSpec:
    """The ``encoder`` section; its ``attention`` object is optional (older manifests: full attention)."""
    if not isinstance(value, Mapping) or "attention" not in value:
        return _typed(value, "encoder", EncoderSpec)
    flat = {key: item for key, item in value.items() if key != "attention"}
    return replace(_typed(flat, "encoder", EncoderSpec), attention=_attention(value["attention"]))


_TOP_LEVEL = frozenset(
    {"format", "schema_version", "features", "encoder", "predictor", "joint", "decoding", "tokenizer", "model_name",
     "description", "languages", "provenance", "step", "files"}
)


def _top_string(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise ManifestError(f"manifest: {key} must be a string, found {value!r:.80}")
    return value


def parse_manifest(raw: Mapping[str, Any]) -> Manifest:
    """Validate a decoded manifest object: every field's type (an integer is never a bool, a number is
    finite), its range, and the sections' consistency.

    Raises:
        ManifestError: wrong format, unsupported schema version, a missing, unknown, mistyped,
            out-of-range or inconsistent field (the message names it).
    """
    if raw.get("format") != FORMAT_NAME:
        raise ManifestError(f"manifest: expected format {FORMAT_NAME!r}, found {raw.get('format')!r:.80}")
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest: schema version {version!r:.80} is not supported by this parakeet-runtime "
            f"(it reads version {SCHEMA_VERSION}); re-convert the model with this version's convert-model"
        )
    unknown = sorted(str(key) for key in set(raw) - _TOP_LEVEL)
    if unknown:
        raise ManifestError(f"manifest: unknown fields {unknown} (schema {SCHEMA_VERSION})")
    manifest = Manifest(
        features=_typed(raw.get("features"), "features", FeatureSpec),
        encoder=_encoder(raw.get("encoder")),
        predictor=_typed(raw.get("predictor"), "predictor", PredictorSpec),
        joint=_typed(raw.get("joint"), "joint", JointSpec),
        decoding=_typed(raw.get("decoding"), "decoding", DecodingSpec),
        tokenizer=_typed(raw.get("tokenizer"), "tokenizer", TokenizerSpec),
        model_name=_top_string(raw, "model_name"),
        description=_top_string(raw, "description"),
        languages=_languages(raw.get("languages", [])),
        provenance=parse_provenance(raw.get("provenance", {})),
        schema_version=SCHEMA_VERSION,
        step=_typed(raw["step"], "step", StepSpec) if raw.get("step") is not None else None,
    )
    _check_consistency(manifest)
    return replace(manifest, digests=_digests(raw.get("files"), manifest))


_SHA256_DIGITS = frozenset("0123456789abcdef")


def _digests(value: object, manifest: Manifest) -> tuple[FileDigest, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ManifestError(f"manifest: files must map file names to {{sha256, bytes}}, found {value!r:.80}")
    named = set(manifest.files())
    digests = []
    for name, record in value.items():
        if not isinstance(record, Mapping) or set(record) != {"sha256", "bytes"}:
            raise ManifestError(f"manifest: files.{name} must be {{sha256, bytes}}, found {record!r:.80}")
        sha256, size = record["sha256"], record["bytes"]
        if not isinstance(sha256, str) or len(sha256) != 64 or not set(sha256) <= _SHA256_DIGITS:
            raise ManifestError(f"manifest: files.{name}.sha256 must be 64 lower-case hex digits, found {sha256!r:.80}")
        if type(size) is not int or size < 0:
            raise ManifestError(f"manifest: files.{name}.bytes must be a non-negative integer, found {size!r:.80}")
        if name in named:  # a record of a file the manifest no longer names (a graph removed) is dropped
            digests.append(FileDigest(name=name, sha256=sha256, size=size))
    return tuple(digests)


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
    dropped = raw.get("dropped_heads", [])
    if not isinstance(dropped, list) or not all(isinstance(head, str) and head for head in dropped):
        raise ManifestError(f"manifest: provenance 'dropped_heads' must be a list of head names, found {dropped!r:.80}")
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
        dropped_heads=tuple(dropped),
    )


def _languages(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(code, str) and code for code in value):
        raise ManifestError(f"manifest: 'languages' must be a list of language codes, found {value!r}")
    return tuple(code.lower() for code in value)


def check_ranges(manifest: Manifest, source: str) -> None:
    """The ranges a manifest file's fields are held to (:data:`_RANGES`), for a manifest built from another
    layout's files (``source`` names them in the error).

    Raises:
        ManifestError: a field out of its range.
    """
    for where, cls in (("features", FeatureSpec), ("encoder", EncoderSpec), ("predictor", PredictorSpec),
                       ("joint", JointSpec), ("decoding", DecodingSpec), ("tokenizer", TokenizerSpec)):
        section = getattr(manifest, where)
        for key, (check, expected) in _RANGES[cls].items():
            value = getattr(section, key)
            if not check(value):
                raise ManifestError(f"{source}: {where}.{key} must be {expected}, found {value!r:.80}")


def _check_consistency(m: Manifest) -> None:
    d = m.decoding
    if d.blank_id != d.vocab_size:
        raise ManifestError(f"manifest: TDT blank_id must equal vocab_size, found {d.blank_id} and {d.vocab_size}")
    if m.joint.num_outputs != d.vocab_size + 1 + len(d.durations):
        raise ManifestError(
            f"manifest: joint has {m.joint.num_outputs} outputs, expected vocab_size + 1 + len(durations) = "
            f"{d.vocab_size + 1 + len(d.durations)}"
        )
    if d.max_symbols is None:
        raise ManifestError("manifest: decoding.max_symbols must be a number (labels at most at one frame), found "
                            "null: the search would have no bound on a model that keeps emitting at one frame "
                            "(NeMo's batched greedy search reads None as 10; convert-model records the number)")
    f = m.features
    if f.win_length > f.n_fft:
        raise ManifestError(f"manifest: features.win_length ({f.win_length}) must not exceed n_fft ({f.n_fft})")
    stride = f.window_stride * f.sample_rate
    if abs(f.hop_length - stride) >= 1:
        raise ManifestError(
            f"manifest: features.hop_length ({f.hop_length} samples) and window_stride ({f.window_stride:g} s at "
            f"{f.sample_rate} Hz: {stride:g} samples) disagree: the features would be computed at one rate and "
            "timed at another (NeMo's hop length is window_stride × sample_rate, rounded down)"
        )


MAX_MANIFEST_BYTES = 16_000_000
"""A manifest is a few kilobytes; a larger file is refused unread."""

_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def with_file_digests(manifest: Manifest, model_dir: Path) -> Manifest:
    """``manifest`` recording the size and SHA-256 of every file it names, as they are in ``model_dir``
    (``convert-model`` calls it last, after any quantisation)."""
    digests = tuple(
        FileDigest(name=name, sha256=file_sha256(model_dir / name), size=(model_dir / name).stat().st_size)
        for name in dict.fromkeys(manifest.files())
    )
    return replace(manifest, digests=digests)


def confined_file(root: Path, label: str, name: str) -> Path | None:
    """The resolved path of a file that ``label`` (a manifest field, a graph's external data reference) names
    inside the model directory ``root`` (resolved); ``None``: it does not exist.

    Raises:
        ManifestError: an absolute path, a path through ``..``, a symbolic link that leaves the directory,
            or something other than a plain file.
    """
    relative = Path(name)
    if relative.is_absolute() or "\x00" in name or ".." in relative.parts or relative.drive:
        raise ManifestError(f"{label} must be a path inside the model directory, found {name!r:.200}")
    path = root / relative
    if not path.exists():
        return None
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ManifestError(f"{label} {name!r} leaves the model directory (a symbolic link to {resolved})")
    if not resolved.is_file():
        raise ManifestError(f"{label} {name!r} is not a plain file")
    return resolved


def _check_digests(manifest: Manifest, root: Path, *, verify: bool) -> None:
    for digest in manifest.digests:
        path = root / digest.name
        size = path.stat().st_size
        if size != digest.size:
            raise ManifestError(
                f"{digest.name}: {size} bytes, the manifest records {digest.size}: the file was changed after "
                "conversion (re-convert the model, or restore the file)"
            )
        if verify and file_sha256(path) != digest.sha256:
            raise ManifestError(
                f"{digest.name}: SHA-256 differs from the manifest's: the file was changed after conversion "
                "(re-convert the model, or restore the file)"
            )


def read_small_text(path: Path, what: str, *, encoding: str = "utf-8") -> str:
    """The text of a small file of a model directory (a manifest, a config, a vocabulary).

    Raises:
        ManifestError: unreadable, not text in ``encoding``, or over :data:`MAX_MANIFEST_BYTES`.
    """
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: {size} bytes; {what} is at most {MAX_MANIFEST_BYTES} bytes")
        return path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot be read as {what} ({type(exc).__name__}: {str(exc)[:200]})") from exc


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A small JSON file's object (see :func:`read_small_text`).

    Raises:
        ManifestError: unreadable, not JSON (also too deeply nested, or an integer of too many digits), or not
            an object.
    """
    text = read_small_text(path, what)
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and Python's limit on an integer's digits
        raise ManifestError(f"{path}: cannot be read as {what} ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    return raw


def load_manifest(model_dir: Path, *, verify: bool = False) -> Manifest:
    """Read and validate ``model_dir/manifest.json`` and check the files it names: each must be a plain file
    inside the directory (no absolute path, no ``..``, no symbolic link leading out), of the size the
    manifest records (when it records one), and with ``verify=True`` of the SHA-256 it records.

    Raises:
        ModelDirectoryError: the directory, the manifest or a referenced file is missing.
        ManifestError: the manifest is not valid JSON, fails validation, names a file outside the directory
            or not a plain file, or a file differs from the size or hash it records.
    """
    if model_dir.is_file():
        if model_dir.suffix == ".nemo":
            raise ModelDirectoryError(f"{model_dir} is a NeMo checkpoint: convert it into a model directory first "
                                      f"(`convert-model {model_dir} OUT_DIR`; the export extra)")
        raise ModelDirectoryError(f"{model_dir} is a file: give the model directory that holds it")
    if not model_dir.is_dir():
        raise ModelDirectoryError(
            f"model directory not found: {model_dir} (make one from a NeMo checkpoint with convert-model, e.g. "
            f"`convert-model nvidia/parakeet-tdt-0.6b-v2 {model_dir}` or `convert-model model.nemo {model_dir}`; "
            "it needs the export extra: pip install 'parakeet-runtime[export]')"
        )
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise ModelDirectoryError(f"{model_dir}: its {MANIFEST_NAME} is not a regular file (a directory, a "
                                      "pipe, a device or a broken link)")
        from .layouts import partial_layout_hint  # imported here: layouts.py imports this module

        raise ModelDirectoryError(f"{model_dir} is not a parakeet-runtime model directory: no {MANIFEST_NAME}"
                                  f"{partial_layout_hint(model_dir)}")
    manifest = parse_manifest(read_json_object(path, "a JSON manifest"))
    root = model_dir.resolve()
    missing = [name for label, name in manifest.named_files()
               if confined_file(root, f"manifest: {label}", name) is None]
    if missing:
        raise ModelDirectoryError(f"{model_dir}: files named in the manifest are missing: {', '.join(missing)}")
    _check_digests(manifest, root, verify=verify)
    return manifest
