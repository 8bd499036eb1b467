"""``convert-model``: a NeMo TDT checkpoint in, a self-describing model directory out.

The directory is built in a temporary sibling and renamed into place only after the parity probe
passes, so a failed conversion never leaves a half-written directory behind.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parakeet_runtime.engine import ParakeetRuntimeError, sample_audio_path
from parakeet_runtime.engine.model.manifest import (
    MANIFEST_NAME,
    DecodingMethod,
    EncoderAttention,
    EncoderSpec,
    JointSpec,
    Manifest,
    ParityProbe,
    PredictorSpec,
    Provenance,
    Versions,
    load_manifest,
    with_file_digests,
)

from . import inspect_model
from .errors import ConversionError
from .output_dir import check_output_dir, move_into_place, staging_dir
from .portable import PORTABLE, TARGETS, check_portable
from .position_table import DEFAULT_FRAMES
from .probe import GREEDY_STRATEGIES, check_parity
from .quantize import DEFAULT_WEIGHTS, activation_scaling, weight_scheme
from .source import load_model, model_slug, resolve
from .step_graph import write_step_graph

if TYPE_CHECKING:
    from .onnx_export import ExportFacts

logger = logging.getLogger(__name__)

STEPS = (
    "check source",
    "load checkpoint",
    "export ONNX graphs",
    "write tokenizer, features and manifest",
    "verify against NeMo",
    "finish",
)


@dataclass(frozen=True)
class ConversionReport:
    """What ``convert`` did."""

    out_dir: Path
    manifest: Manifest
    probes: tuple[ParityProbe, ...]
    seconds: float


def _installed(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def _versions() -> Versions:
    return Versions(nemo_toolkit=_installed("nemo_toolkit"), torch=_installed("torch"), onnx=_installed("onnx"),
                    onnxruntime=_installed("onnxruntime"), parakeet_runtime=_installed("parakeet-runtime"))


def _write_tokenizer(model: Any, out_dir: Path, vocab_size: int) -> None:
    proto = model.tokenizer.tokenizer.serialized_model_proto()
    (out_dir / "tokenizer.model").write_bytes(proto)
    vocab = model.tokenizer.vocab[:vocab_size]
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def convert(
    source: str,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    probe_audio: Sequence[Path] = (),
    verify: bool = True,
    quantize: str | None = None,
    int8_weights: str = DEFAULT_WEIGHTS,
    int8_activations: str = "per-row-fixed",
    position_table_frames: int = DEFAULT_FRAMES,
    languages: Sequence[str] | None = None,
    local_attention: tuple[int, int] | None = None,
    on_step: Callable[[int, str], None] | None = None,
    target: str | None = None,
) -> ConversionReport:
    """Convert ``source`` (a ``.nemo`` path or a pretrained name) into ``out_dir``.

    The NeMo model is left as it was loaded (the export works on copies of its modules; NeMo's type checking
    is switched off only while the graphs are traced), so the parity check compares against NeMo itself.

    Args:
        source: ``.nemo`` file, or a NeMo pretrained name such as ``nvidia/parakeet-tdt-0.6b-v2`` (needs
            internet).
        out_dir: the model directory to create.
        overwrite: replace an existing ``out_dir``.
        probe_audio: extra clips for the parity check (the bundled sample clip is always used).
        verify: run the parity check (disable only to debug a failing export).
        quantize: ``"int8"`` to quantise the encoder after the fp32 parity check passes; the token
            agreement with fp32 on the probe clips is recorded in the manifest.
        int8_weights: how ``quantize="int8"`` stores the encoder's weights: ``"auto"`` (a uint8 and an
            int8 graph, chosen at load from the CPU), ``"uint8"``, ``"int7"`` or ``"int8"`` (see
            :mod:`parakeet_runtime.export.quantize`).
        int8_activations: how ``quantize="int8"`` scales the products' inputs (``export.quantize.ACTIVATIONS``):
            ``"per-row-fixed"`` (each encoder frame its own scale, a fixed quantiser: batch-invariant, so the engine
            batches such a directory's requests; :mod:`parakeet_runtime.export.row_scales`), ``"per-row"`` (each
            frame its own scale before ONNX Runtime's quantiser), ``"per-tensor"`` (ONNX Runtime's own) or
            ``"per-row-centred"`` (each frame centred; batch-invariant too).
        position_table_frames: the encoder's relative-position projections become table lookups for inputs
            of up to this many encoder frames (0: none; see :mod:`parakeet_runtime.export.position_table`).
        languages: ISO 639-1 codes to record in the manifest, overriding what the checkpoint says (``None``:
            from the checkpoint's config, or the known languages of a published Parakeet checkpoint).
        local_attention: ``(left, right)``: switch the loaded checkpoint to local attention with that context
            first (NeMo's ``change_attention_model("rel_pos_local_attn", [left, right])`` and
            ``change_subsampling_conv_chunking_factor(1)``, as NVIDIA's long-form recipe does); the parity
            check then compares against the switched NeMo model. ``None``: the checkpoint's own attention.
        on_step: called with (step index, step name) as the conversion proceeds.
        target: ``"tensorrt"``: a portable encoder graph (standard ONNX operators only, fp16-safe constants,
            no position tables; checked, see :mod:`parakeet_runtime.export.portable`), recorded as
            ``encoder.target: "portable"``, and fp16 TensorRT engines where ``tensorrt`` and a GPU are present.
            ``None``: the default graphs. Not with ``quantize`` (TensorRT does not parse dynamic int8).

    Raises:
        ConversionError: bad source, unsupported model, failed export or check, or (``ParityError``) a parity
            mismatch.
    """
    started = time.monotonic()
    report_step = on_step or (lambda index, name: None)
    out_path = Path(out_dir)
    if quantize is not None:
        weight_scheme(int8_weights)  # an unknown scheme fails before the export, not after it
        activation_scaling(int8_activations)
    if position_table_frames < 0:
        raise ConversionError(f"position_table_frames must be 0 or more, not {position_table_frames}")
    if target is not None:
        if target not in TARGETS:
            raise ConversionError(f"unknown target {target!r:.40} (supported: {', '.join(TARGETS)})")
        if quantize is not None:
            raise ConversionError(f"target {target!r} takes an fp32 encoder: TensorRT does not parse ONNX "
                                  "Runtime's dynamic int8 operators (its engines are fp16)")
        position_table_frames = 0  # the tables' If nodes and weights buy nothing on a GPU
    codes = None if languages is None else inspect_model.parse_languages(",".join(languages))
    if local_attention is not None:
        inspect_model.check_local_context(local_attention)
    out_path = check_output_dir(source, out_path, overwrite=overwrite)

    report_step(0, STEPS[0])
    resolved = resolve(source)
    report_step(1, STEPS[1])
    model, resolved = load_model(resolved)
    if local_attention is not None:
        inspect_model.use_local_attention(model, local_attention, source)
    inspect_model.check_supported(model, source)
    if "ctc" in inspect_model.dropped_heads(model):
        logger.warning("%s is a hybrid TDT+CTC checkpoint (%s): its TDT head is converted, its CTC head is not "
                       "(the manifest records it under provenance.dropped_heads)", source, type(model).__name__)
    strategy = model.cfg.decoding.get("strategy", None)
    if strategy not in (None, *GREEDY_STRATEGIES):
        logger.warning("%s decodes with %r by default; the engine decodes greedily, as NeMo's greedy_batch: the "
                       "parity check compares with that", source, strategy)
    name = model_slug(resolved.spec)
    codes = codes if codes is not None else inspect_model.model_languages(model, name)

    staging = staging_dir(out_path)
    try:
        with tempfile.TemporaryDirectory(prefix="parakeet-export-") as scratch:
            report_step(2, STEPS[2])
            facts = _export(model, Path(scratch), staging, position_table_frames, portable=target is not None)
        report_step(3, STEPS[3])
        manifest = _write_directory(model, staging, facts, resolved.spec, resolved.sha256, name, codes,
                                    portable=target is not None)
        if target is not None:
            check_portable(staging / manifest.encoder.file, manifest.encoder)
        probes: tuple[ParityProbe, ...] = ()
        if verify:
            report_step(4, STEPS[4])
            probes = _verify(model, staging, [sample_audio_path(), *probe_audio])
            manifest = replace(manifest, provenance=replace(manifest.provenance, parity=probes))
            (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        if target is not None:
            manifest = _with_tensorrt_engines(staging, manifest)
        if quantize is not None:
            staging = _quantized(staging, manifest, quantize, int8_weights, int8_activations,
                                 [sample_audio_path(), *probe_audio])
            manifest = load_manifest(staging)
        manifest = with_file_digests(manifest, staging)  # last: the files as they are shipped
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        report_step(5, STEPS[5])
        staging.chmod(0o755)
        for item in staging.iterdir():
            item.chmod(0o644)  # temporary files (the external data among them) are created owner-only
        move_into_place(staging, out_path, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConversionReport(out_path, manifest, probes, time.monotonic() - started)


def _verify(model: Any, staging: Path, clips: Sequence[Path]) -> tuple[ParityProbe, ...]:
    """The parity check; an engine error on the new directory (one the probe clips cannot run) is a
    :class:`ConversionError`, a mismatch a ``ParityError``."""
    try:
        return tuple(check_parity(model, staging, list(clips)))
    except ConversionError:
        raise
    except ParakeetRuntimeError as exc:
        raise ConversionError(
            f"the converted model cannot run the parity check: {type(exc).__name__}: {exc}"
        ) from exc


def _quantized(staging: Path, manifest: Manifest, precision: str, weights: str, activations: str,
               clips: Sequence[Path]) -> Path:
    """Replace the fp32 staging directory by a quantised one; returns the new staging directory."""
    from .quantize import PRECISIONS, quantize_directory, token_agreement

    if precision not in PRECISIONS:
        raise ConversionError(f"unsupported quantisation {precision!r} (supported: {', '.join(PRECISIONS)})")
    target = Path(tempfile.mkdtemp(prefix=staging.name + "q", dir=staging.parent))
    try:
        quantized = quantize_directory(staging, target, manifest, weights, activations)
        recorded = quantized.provenance.quantization
        assert recorded is not None  # quantize_directory records the scheme
        agreement = token_agreement(staging, target, clips, int8_weights="uint8" if weights == "auto" else "auto")
        logger.info("int8 token agreement with fp32 (%s weights): %.4f (%d/%d clips identical)", recorded.weights,
                    agreement.token_agreement, agreement.identical_clips, agreement.clips)
        recorded = replace(recorded, token_agreement_with_fp32=agreement.token_agreement,
                           identical_clips=agreement.identical_clips, clips=agreement.clips)
        if quantized.encoder.signed_int8_file is not None:
            signed = token_agreement(staging, target, clips, int8_weights="int8")
            logger.info("int8 token agreement with fp32 (int8 weights): %.4f (%d/%d clips identical)",
                        signed.token_agreement, signed.identical_clips, signed.clips)
            recorded = replace(recorded, signed_int8_token_agreement_with_fp32=signed.token_agreement,
                               signed_int8_identical_clips=signed.identical_clips)
        quantized = replace(quantized, provenance=replace(quantized.provenance, quantization=recorded))
        (target / MANIFEST_NAME).write_text(quantized.to_json(), encoding="utf-8")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return target


def _with_tensorrt_engines(staging: Path, manifest: Manifest) -> Manifest:
    """Build TensorRT engines where TensorRT and a GPU are present (:func:`.portable.build_tensorrt_engines`);
    the manifest records TensorRT's version and the GPU."""
    from .portable import build_tensorrt_engines, engine_frames

    features = manifest.features
    frames = engine_frames(manifest.encoder.max_frames, manifest.encoder.subsampling_factor, 600.0,
                           features.sample_rate / features.hop_length)
    built = build_tensorrt_engines(staging, manifest.encoder, features.n_mels, frames)
    if built is None:
        return manifest
    manifest = replace(manifest, encoder=replace(manifest.encoder, tensorrt_version=built.version,
                                                  tensorrt_gpu=built.gpu))
    (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _export(model: Any, scratch: Path, staging: Path, position_table_frames: int, *, portable: bool = False
            ) -> ExportFacts:
    from .onnx_export import export_graphs

    try:
        return export_graphs(model, scratch, staging, position_table_frames=position_table_frames, portable=portable)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc


def _attention(model: Any, name: str) -> EncoderAttention:
    context = inspect_model.local_context(model, name)
    if context is not None:
        return EncoderAttention(kind="local", context=context)
    limited = inspect_model.limited_context(model)
    if limited is not None:
        return EncoderAttention(kind="limited", context=limited[0], style=limited[1])
    return EncoderAttention()


def _write_directory(model: Any, staging: Path, facts: ExportFacts, spec: str, sha256: str, name: str,
                     languages: tuple[str, ...], *, portable: bool = False) -> Manifest:
    features, arrays = inspect_model.feature_spec(model)
    np.savez(staging / features.arrays_file, **arrays)  # type: ignore[arg-type]
    decoding = inspect_model.decoding_spec(model)
    tokenizer = inspect_model.tokenizer_spec(model)
    _write_tokenizer(model, staging, decoding.vocab_size)
    predictor = PredictorSpec(file="predictor.onnx", layers=facts.predictor_layers, hidden=facts.predictor_hidden)
    joint = JointSpec(file="joint.onnx", num_outputs=decoding.vocab_size + 1 + len(decoding.durations))
    manifest = Manifest(
        features=features,
        encoder=EncoderSpec(
            file="encoder.onnx",
            subsampling_factor=int(model.encoder.subsampling_factor),
            d_model=int(model.encoder.d_model),
            joint_hidden=facts.joint_hidden,
            max_frames=inspect_model.max_encoder_frames(model),
            attention_heads=inspect_model.attention_heads(model),
            external_data=facts.encoder_external_data,
            attention=_attention(model, spec),
            target=PORTABLE if portable else "default",
        ),
        predictor=predictor,
        joint=joint,
        step=write_step_graph(staging, predictor, joint),
        decoding=decoding,
        tokenizer=tokenizer,
        model_name=name,
        languages=languages,
        provenance=Provenance(
            source=spec,
            source_sha256=sha256,
            model_class=type(model).__name__,
            versions=_versions(),
            python=platform.python_version(),
            converted_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            decoding=DecodingMethod(),
            encoder_export=facts.encoder_export,
            dropped_heads=inspect_model.dropped_heads(model),
        ),
    )
    (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest
