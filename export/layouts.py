"""Other runtimes' directory layouts, both ways.

``convert-model --from onnx-asr|sherpa-onnx DIR OUT`` (:func:`convert_from_layout`) rewrites a directory
in onnx-asr's or sherpa-onnx's NeMo TDT layout into this project's own: ``manifest.json``, the features'
arrays, a SentencePiece model built from the layout's vocabulary, the encoder graph with the joint's
encoder projection folded in (its outputs are projected frames), the predictor and joint graphs cut out
of the layout's decoder/joint graphs, and the step graph. It needs neither NeMo nor torch: the graphs are
cut and joined with protobuf (``engine/model/onnx_proto.py``), the step graph with ``onnx`` (the export
extra). The result is checked against the source directory: the same transcripts on the probe clips.

``convert-model --layout onnx-asr SRC OUT`` (:func:`write_onnx_asr_layout`) goes the other way: it writes
a model directory of this project as onnx-asr's NeMo TDT layout (``onnx_asr.load_model("nemo-conformer-tdt",
OUT)``), reusing the same graphs (the encoder renamed and transposed, the predictor and the joint merged
into one ``decoder_joint`` graph with NeMo's names, its metadata naming where the joint begins so that this
engine loads the result too).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_runtime.engine import Engine, ParakeetRuntimeError, sample_audio_path
from parakeet_runtime.engine.model import onnx_proto
from parakeet_runtime.engine.model.features import FeatureExtractor
from parakeet_runtime.engine.model.layouts import LAYOUTS, layout_of, load_other_layout
from parakeet_runtime.engine.model.manifest import (
    MANIFEST_NAME,
    Manifest,
    Provenance,
    Versions,
    load_manifest,
    with_file_digests,
)
from parakeet_runtime.engine.model.onnx_asr import (
    _PROJECTED,
    DECODER_JOINT_FILE,
    ENCODER_FILE,
    WRITTEN_D_MODEL,
    WRITTEN_ENCODER_FRAME,
    WRITTEN_MAX_FRAMES,
    WRITTEN_PREDICTOR_OUTPUT,
    parakeet_features,
    split_decoder_joint,
)
from parakeet_runtime.engine.model.onnx_asr import _graph_files as onnx_asr_files
from parakeet_runtime.engine.model.sherpa_onnx import build_parts
from parakeet_runtime.engine.model.sherpa_onnx import graph_files as sherpa_files
from parakeet_runtime.engine.options import SessionOptions

from .errors import ConversionError
from .output_dir import check_output_dir, move_into_place, staging_dir
from .step_graph import write_step_graph

logger = logging.getLogger(__name__)

_EXTERNAL = 1
"""``TensorProto.DataLocation.EXTERNAL``."""


@dataclass(frozen=True)
class LayoutConversion:
    """What :func:`convert_from_layout` did."""

    out_dir: Path
    manifest: Manifest
    layout: str
    clips: tuple[str, ...]
    """The probe clips the result was checked on (the same transcripts as the source directory)."""


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def _external_location(model: Any, name: str) -> str | None:
    """The one external data file the graph's initializers name, or ``None``.

    Raises:
        ConversionError: more than one file (the manifest records one).
    """
    locations = {
        entry.value
        for tensor in model.graph.initializer if tensor.data_location == _EXTERNAL
        for entry in tensor.external_data if entry.key == "location"
    }
    if len(locations) > 1:
        raise ConversionError(f"{name}: weights in {len(locations)} external files; one is supported")
    location = next(iter(locations), None)
    if location is not None and (os.path.isabs(location) or ".." in Path(location).parts):
        raise ConversionError(f"{name}: external weights outside its directory ({location!r})")
    return location


def fold_projection(encoder: Any, projection: bytes, frames_output: str, name: str) -> None:
    """Append the joint's encoder projection to an encoder graph: its ``frames_output`` ``(batch, d_model,
    frames)`` feeds the projection, whose ``encoder_projected`` ``(batch, frames, joint_hidden)`` replaces it
    among the graph's outputs.

    Raises:
        ConversionError: the graphs' opsets differ, or the encoder has no such output.
    """
    part = onnx_proto.parse_model(projection, "projection")
    if onnx_proto.opset(part) != onnx_proto.opset(encoder):
        raise ConversionError(f"{name}: the encoder's opset ({onnx_proto.opset(encoder)}) differs from the "
                              f"joint's ({onnx_proto.opset(part)})")
    if frames_output not in onnx_proto.graph_outputs(encoder):
        raise ConversionError(f"{name}: the encoder has no output {frames_output!r}")
    if _PROJECTED in onnx_proto.tensor_names(encoder):  # an encoder this project wrote (--layout onnx-asr)
        _free_name(encoder.graph, _PROJECTED)
    taken = onnx_proto.tensor_names(encoder)
    prefix = "projection/"
    while any(n.startswith(prefix) for n in taken):
        prefix = "_" + prefix
    source = part.graph.input[0].name
    onnx_proto.prefix_names(part, prefix, keep=[source, _PROJECTED])
    onnx_proto.rename(part, {source: frames_output})
    onnx_proto.append_graph(encoder, part)
    domains = {o.domain for o in encoder.opset_import}
    encoder.opset_import.extend(o for o in part.opset_import if o.domain not in domains)
    outputs = [v for v in encoder.graph.output if v.name != frames_output]
    del encoder.graph.output[:]
    encoder.graph.output.extend(
        [onnx_proto.value_info(_PROJECTED, onnx_proto.FLOAT, ["batch", "frames", None]), *outputs]
    )


def _layout_graphs(layout: str, source: Path, precision: str | None) -> tuple[str, bytes, bytes, bytes]:
    """(encoder file, projection, predictor, joint) of a directory in ``layout``."""
    if layout == "onnx-asr":
        encoder_file, decoder_joint = onnx_asr_files(source, precision)
        parts = split_decoder_joint(source / decoder_joint)
        return encoder_file, parts.projection, parts.predictor, parts.joint
    files = sherpa_files(source, precision)
    sherpa = build_parts(source / files.decoder, source / files.joiner)
    return files.encoder, sherpa.projection, sherpa.predictor, sherpa.joint


def _same_transcripts(staging: Path, source_engine: Engine, clips: Sequence[Path]) -> None:
    converted = Engine.load(staging)
    try:
        for clip in clips:
            theirs, ours = source_engine.transcribe(clip), converted.transcribe(clip)
            if ours != theirs:
                raise ConversionError(
                    f"{clip.name}: the converted directory transcribes {ours.text!r} "
                    f"({len(ours.tokens)} tokens), the source directory {theirs.text!r} ({len(theirs.tokens)} tokens)"
                )
    finally:
        converted.close()


def convert_from_layout(
    layout: str,
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    precision: str | None = None,
    probe_audio: Sequence[Path] = (),
    verify: bool = True,
    languages: Sequence[str] = (),
) -> LayoutConversion:
    """Rewrite a directory in onnx-asr's or sherpa-onnx's layout into this project's layout.

    Args:
        layout: ``"onnx-asr"`` or ``"sherpa-onnx"``; the directory must be in that layout.
        source: the directory.
        out_dir: the model directory to create.
        overwrite: replace an existing ``out_dir``.
        precision: which variant of the source graphs (``"fp32"``, ``"int8"``; default fp32 when present).
        probe_audio: clips to check the result on, besides the bundled sample clip.
        verify: check that the result transcribes the probe clips as the source directory does.
        languages: ISO 639-1 codes to record in the manifest.

    Raises:
        ConversionError: an unknown layout, a directory in another layout, a directory the engine cannot
            load (the loader's message), or a result that transcribes differently.
    """
    if layout not in LAYOUTS:
        raise ConversionError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    source_dir, target = Path(source), Path(out_dir)
    found = layout_of(source_dir)
    if found != layout:
        what = f"in {found}'s layout" if found else f"not in {layout}'s layout"
        raise ConversionError(f"{source_dir} is {what}")
    target = check_output_dir(source_dir, target, overwrite=overwrite)
    try:
        loaded = load_other_layout(source_dir, providers=["CPUExecutionProvider"], session=SessionOptions(),
                                   precision=precision)
        assert loaded is not None  # layout_of said it is one
        encoder_file, projection, predictor, joint = _layout_graphs(layout, source_dir, precision)
        encoder = onnx_proto.read_model(source_dir / encoder_file)
    except ParakeetRuntimeError as exc:
        raise ConversionError(f"{source_dir}: {exc}") from exc
    m = loaded.manifest
    fold_projection(encoder, projection, m.encoder.output_frames, encoder_file)
    location = _external_location(encoder, encoder_file)

    staging = staging_dir(target)
    try:
        (staging / "encoder.onnx").write_bytes(onnx_proto.serialize(encoder))
        if location is not None:
            try:
                os.link(source_dir / location, staging / location)
            except OSError:
                shutil.copyfile(source_dir / location, staging / location)
        (staging / "predictor.onnx").write_bytes(predictor)
        (staging / "joint.onnx").write_bytes(joint)
        features = replace(m.features, arrays_file="features.npz")
        np.savez(staging / features.arrays_file, window=loaded.features.window, filterbank=loaded.features.filterbank)
        pieces = loaded.tokenizer.pieces
        (staging / "tokenizer.model").write_bytes(loaded.tokenizer.processor.serialized_model_proto())
        (staging / "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
        predictor_spec = replace(m.predictor, file="predictor.onnx")
        joint_spec = replace(m.joint, file="joint.onnx")
        manifest = replace(
            m,
            features=features,
            encoder=replace(m.encoder, file="encoder.onnx", external_data=location, output_frames=_PROJECTED),
            predictor=predictor_spec,
            joint=joint_spec,
            step=write_step_graph(staging, predictor_spec, joint_spec),
            tokenizer=replace(m.tokenizer, file="tokenizer.model", vocab_file="vocab.txt"),
            model_name=source_dir.name,
            description=f"converted from a {layout} directory",
            languages=tuple(languages),
            provenance=Provenance(
                source=str(source_dir),
                model_class=f"{layout} layout ({encoder_file})",
                versions=Versions(onnx=_installed("onnx"), onnxruntime=_installed("onnxruntime"),
                                  parakeet_runtime=_installed("parakeet-runtime")),
                python=platform.python_version(),
                converted_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            ),
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        manifest = with_file_digests(manifest, staging)
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        clips = (sample_audio_path(), *probe_audio)
        if verify:
            reference = Engine.load(source_dir, providers=["CPUExecutionProvider"], precision=precision)
            try:
                _same_transcripts(staging, reference, clips)
            except ParakeetRuntimeError as exc:
                raise ConversionError(f"the converted directory does not run: {exc}") from exc
            finally:
                reference.close()
        staging.chmod(0o755)
        for item in staging.iterdir():
            item.chmod(0o644)  # mkdtemp's directory is owner-only
        move_into_place(staging, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("converted %s (%s) into %s", source_dir, layout, target)
    return LayoutConversion(target, manifest, layout, tuple(str(c) for c in clips) if verify else ())


# --- this project's layout -> onnx-asr's ------------------------------------------------------------


def _rename_input(graph: Any, old: str, new: str) -> None:
    for value in graph.input:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _free_name(graph: Any, name: str) -> None:
    """Rename a tensor called ``name`` (e.g. a directory converted ``--from onnx-asr`` keeps the source
    encoder's ``outputs`` inside), so that the name can be given to a new output."""
    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {v.name for v in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)}
    if name not in taken:
        return
    new = name + "_inner"
    while new in taken:
        new += "_"
    for node in graph.node:
        node.input[:] = [new if n == name else n for n in node.input]
        node.output[:] = [new if n == name else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.initializer, *graph.value_info):
        if value.name == name:
            value.name = new


ONNX_ASR_MELS = (80, 128)
"""The mel-bin counts onnx-asr has a NeMo preprocessor for (``nemo80``, ``nemo128``)."""


def check_parakeet_features(model_dir: Path, manifest: Manifest) -> None:
    """Refuse a model whose features are not Parakeet's: onnx-asr's layout records none, so both onnx-asr and
    this engine read it with Parakeet's (a model with 64 mels and a 16 ms hop was written, and transcribed as
    nonsense by the engine while onnx-asr could not load it).

    Raises:
        ConversionError: another mel count, sample rate, window, hop, normalisation, ... or filterbank.
    """
    features = manifest.features
    if features.n_mels not in ONNX_ASR_MELS:
        raise ConversionError(f"{model_dir}: {features.n_mels} mel bins; onnx-asr's layout has Parakeet's "
                              f"preprocessing with {' or '.join(map(str, ONNX_ASR_MELS))} only")
    expected, extractor = parakeet_features(features.n_mels)
    fields = ("sample_rate", "n_fft", "win_length", "hop_length", "window", "preemph", "mag_power", "log",
              "log_zero_guard_type", "log_zero_guard_value", "normalize", "exact_pad", "pad_value")
    differ = [f"{name} {getattr(features, name)!r} (Parakeet: {getattr(expected, name)!r})" for name in fields
              if getattr(features, name) != getattr(expected, name)]
    if not differ:
        ours = FeatureExtractor.load(features, model_dir)
        for name in ("window", "filterbank"):
            if not np.allclose(getattr(ours, name), getattr(extractor, name), rtol=1e-4, atol=1e-6):
                differ.append(f"its {name}")
    if differ:
        raise ConversionError(f"{model_dir}: onnx-asr's layout records no feature settings (both runtimes read it "
                              f"with Parakeet's), and this model's differ: {', '.join(differ)}")


def write_onnx_asr_layout(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write a model directory of this project as onnx-asr's NeMo TDT layout (see the module docstring);
    the encoder's external weights file is hard-linked where the file system allows, else copied.

    Raises:
        ConversionError: ``onnx`` is not installed, or the graphs cannot be merged.
        ManifestError, ModelDirectoryError: ``model_dir`` is not a model directory.
    """
    try:
        import onnx
        from onnx import compose, helper
    except ImportError as exc:
        raise ConversionError("writing onnx-asr's layout needs onnx (the export extra)") from exc
    source, out = Path(model_dir), Path(out_dir)
    manifest = load_manifest(source)
    check_parakeet_features(source, manifest)
    out.mkdir(parents=True, exist_ok=True)
    spec = manifest.encoder
    # onnx-asr names an int8 model's graphs *.int8.onnx (its loaders pick the variant by name: an int8 encoder under
    # the fp32 name was taken for fp32, with fp32 decoding weights). Only the directory's primary int8 encoder is
    # written: onnx-asr has one variant per precision, and this one is exact on every CPU.
    suffix = ".int8" if spec.precision == "int8" else ""
    if spec.signed_int8_file is not None:
        logger.info("%s: onnx-asr's layout holds one int8 encoder: %s is written, not %s", source, spec.file,
                    spec.signed_int8_file)
    try:
        model = onnx.load(str(source / spec.file), load_external_data=False)
        graph = model.graph
        for name in ("audio_signal", "length", "outputs", "encoded_lengths"):
            if name not in (spec.input_features, spec.input_lengths, spec.output_lengths):
                _free_name(graph, name)
        _rename_input(graph, spec.input_features, "audio_signal")
        _rename_input(graph, spec.input_lengths, "length")
        graph.node.append(helper.make_node("Transpose", [spec.output_frames], ["outputs"], perm=[0, 2, 1]))
        kept = [o for o in graph.output if o.name != spec.output_frames]
        del graph.output[:]
        graph.output.extend([helper.make_tensor_value_info("outputs", onnx.TensorProto.FLOAT,
                                                           ["batch", spec.joint_hidden, "encoded_frames"]), *kept])
        for o in graph.output:
            if o.name == spec.output_lengths:
                o.name = "encoded_lengths"
        for node in graph.node:
            node.output[:] = ["encoded_lengths" if n == spec.output_lengths else n for n in node.output]
        onnx.save(model, str(out / ENCODER_FILE.format(suffix=suffix)))
        if spec.external_data:
            link = out / spec.external_data
            if link.exists() or link.is_symlink():
                link.unlink()
            try:
                os.link(source / spec.external_data, link)
            except OSError:
                shutil.copyfile(source / spec.external_data, link)

        p, j = manifest.predictor, manifest.joint
        predictor = compose.add_prefix(onnx.load(str(source / p.file)), "p_")
        joint = compose.add_prefix(onnx.load(str(source / j.file)), "j_")
        i64 = onnx.TensorProto.INT64
        nodes = [
            helper.make_node("Constant", [], ["axis1"], value=helper.make_tensor("axis1", i64, [1], [1])),
            helper.make_node("Constant", [], ["axis2"], value=helper.make_tensor("axis2", i64, [1], [2])),
            helper.make_node("Squeeze", ["targets", "axis1"], ["p_" + p.input_targets]),
            helper.make_node("Identity", ["input_states_1"], ["p_" + p.input_h]),
            helper.make_node("Identity", ["input_states_2"], ["p_" + p.input_c]),
            helper.make_node("Squeeze", ["encoder_outputs", "axis2"], ["j_" + j.input_encoder]),
            *predictor.graph.node,
            helper.make_node("Identity", ["p_" + p.output], ["j_" + j.input_predictor]),
            *joint.graph.node,
            helper.make_node("Identity", ["j_" + j.output_logits], ["outputs"]),
            helper.make_node("Identity", ["target_length"], ["prednet_lengths"]),
            helper.make_node("Identity", ["p_" + p.output_h], ["output_states_1"]),
            helper.make_node("Identity", ["p_" + p.output_c], ["output_states_2"]),
        ]
        f = onnx.TensorProto.FLOAT
        layers, hidden, joint_hidden = p.layers, p.hidden, spec.joint_hidden
        merged = helper.make_graph(
            nodes, "decoder_joint",
            inputs=[
                helper.make_tensor_value_info("encoder_outputs", f, ["batch", joint_hidden, 1]),
                helper.make_tensor_value_info("targets", i64, ["batch", 1]),
                helper.make_tensor_value_info("target_length", i64, ["batch"]),
                helper.make_tensor_value_info("input_states_1", f, [layers, "batch", hidden]),
                helper.make_tensor_value_info("input_states_2", f, [layers, "batch", hidden]),
            ],
            outputs=[
                helper.make_tensor_value_info("outputs", f, ["batch", j.num_outputs]),
                helper.make_tensor_value_info("prednet_lengths", i64, ["batch"]),
                helper.make_tensor_value_info("output_states_1", f, [layers, "batch", hidden]),
                helper.make_tensor_value_info("output_states_2", f, [layers, "batch", hidden]),
            ],
            initializer=[*predictor.graph.initializer, *joint.graph.initializer],
        )
        decoder_joint = helper.make_model(merged, opset_imports=predictor.opset_import)
        decoder_joint.ir_version = predictor.ir_version
        # Where the joint begins, so that this engine can cut the graph again (its joint is not NeMo's export).
        helper.set_model_props(decoder_joint, {
            WRITTEN_ENCODER_FRAME: "j_" + j.input_encoder, WRITTEN_PREDICTOR_OUTPUT: "j_" + j.input_predictor,
            WRITTEN_D_MODEL: str(spec.d_model), WRITTEN_MAX_FRAMES: str(spec.max_frames or "none"),
        })
        onnx.checker.check_model(decoder_joint)
        onnx.save(decoder_joint, str(out / DECODER_JOINT_FILE.format(suffix=suffix)))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ConversionError(f"cannot write onnx-asr's layout: {type(exc).__name__}: {exc}") from exc
    pieces = (source / manifest.tokenizer.vocab_file).read_text(encoding="utf-8").splitlines()
    lines = [f"{piece} {i}" for i, piece in enumerate(pieces[: manifest.decoding.vocab_size])]
    lines.append(f"<blk> {manifest.decoding.blank_id}")
    (out / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "model_type": "nemo-conformer-tdt",
        "features_size": manifest.features.n_mels,
        "subsampling_factor": manifest.encoder.subsampling_factor,
        "max_tokens_per_step": manifest.decoding.max_symbols or 10,
        "durations": list(manifest.decoding.durations),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
