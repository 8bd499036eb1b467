"""Load a model directory in sherpa-onnx's NeMo TDT layout (``csukuangfj/sherpa-onnx-nemo-parakeet-tdt-*``).

sherpa-onnx's export script (``scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py`` in k2-fsa/sherpa-onnx)
exports NeMo's three modules one by one:

- ``encoder.onnx`` (weights in ``encoder.weights`` for large encoders): NeMo's ``encoder.export``:
  ``audio_signal`` ``(batch, n_mels, frames)``, ``length`` in; ``outputs`` ``(batch, d_model,
  encoded_frames)``, ``encoded_lengths`` out. The frames come *before* the joint's encoder projection.
  Its metadata props say ``vocab_size``, ``normalize_type``, ``pred_rnn_layers``, ``pred_hidden``,
  ``subsampling_factor``, ``feat_dim``, ``model_type`` (``EncDecRNNTBPEModel``) and a few free-text keys.
- ``decoder.onnx``: NeMo's ``decoder.export`` (the prediction network): ``targets`` ``(batch, 1)`` int32,
  ``target_length``, the LSTM's ``h`` and ``c`` ``(layers, batch, pred_hidden)`` in (in this order; the
  state inputs' names are whatever the exporter made of them), ``outputs`` ``(batch, pred_hidden, 1)``,
  lengths, new ``h`` and ``c`` out. Not projected into the joint's space.
- ``joiner.onnx``: NeMo's ``joint.export``: ``encoder_outputs`` ``(batch, d_model, T)`` and
  ``decoder_outputs`` ``(batch, pred_hidden, U)`` in, ``outputs`` ``(batch, T, U, vocab + 1 +
  len(durations))`` out: both projections, the sum, the joint network.
- ``tokens.txt``: ``<piece> <id>`` lines, the blank ``<blk>`` last (as onnx-asr's ``vocab.txt``).
- ``*.int8.onnx`` variants of the three graphs (dynamic quantisation; the metadata on
  ``encoder.int8.onnx``).

The engine projects each encoder frame once and each predictor output once, so the joiner is cut (with
protobuf alone, ``model/onnx_proto.py``: no ``onnx`` package) where it adds the two projections: its
encoder projection runs after the encoder, its predictor projection is joined onto the decoder graph (one
predictor run per label gives the projected output), and the rest is the joint. The numbers are the
joiner's own: the same operations on the same weights, run in three places instead of one.

What the layout does not say is taken from Parakeet's documented settings (the features, the tokenizer
rules, and the longest input as in ``model/onnx_asr.py``), and:

- ``durations``: the joiner's output size minus the vocabulary and the blank gives their count; five
  means ``[0, 1, 2, 3, 4]`` (every released Parakeet TDT model); any other count is refused (the layout
  does not record the durations, so they cannot be guessed).
- ``max_symbols``: 10 (NeMo's default for Parakeet; sherpa-onnx does not limit symbols per frame).
- subsampling: ``subsampling_factor`` from the metadata (sherpa-onnx's script writes 8), checked by running
  the encoder once; measured when absent.

Metadata that contradicts the graphs or Parakeet's features (``vocab_size`` against ``tokens.txt``,
``feat_dim`` against the encoder's input, ``pred_rnn_layers``/``pred_hidden`` against the decoder's state,
a ``normalize_type`` other than ``per_feature``, a ``model_type`` that is not an RNN-T model) is refused
with a ``ManifestError``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..errors import ManifestError
from ..options import SessionOptions
from . import onnx_proto
from .decoder_weights import JointColumns
from .devices import Provider
from .manifest import (
    DecodingSpec,
    EncoderSpec,
    JointSpec,
    Manifest,
    PredictorSpec,
    Provenance,
    TokenizerSpec,
    check_ranges,
)
from .onnx_asr import (
    _ENCODER_FRAME,
    _LABELS,
    _LOGITS,
    _PREDICTOR_OUTPUT,
    _PROJECTED,
    DEFAULT_DURATIONS,
    DEFAULT_MAX_SYMBOLS,
    LoadedLayout,
    check_frame_width,
    joint_part,
    labels_head,
    max_frames_of,
    measure_encoder,
    parakeet_features,
    projection_part,
    punctuation_from_vocab,
    read_vocab,
    variant_files,
    vocab_tokenizer,
)
from .onnx_model import (
    EncoderProjection,
    OnnxTdtModel,
    decoding_sessions,
    default_providers,
    graph_session,
    release_above_frames,
    spin_asked,
)

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder{suffix}.onnx"
DECODER_FILE = "decoder{suffix}.onnx"
JOINER_FILE = "joiner{suffix}.onnx"
TOKENS_FILE = "tokens.txt"
EXTERNAL_WEIGHTS = "encoder.weights"
"""Where sherpa-onnx's script puts a large fp32 encoder's weights."""

RNNT_MODEL_TYPES = ("EncDecRNNTBPEModel", "EncDecHybridRNNTCTCBPEModel")
"""``model_type`` values of sherpa-onnx's NeMo transducer exports (the TDT ones say ``EncDecRNNTBPEModel``)."""

_H_IN, _C_IN, _H_OUT, _C_OUT = "state_h", "state_c", "new_state_h", "new_state_c"


def is_sherpa_onnx_directory(directory: Path) -> bool:
    """Whether ``directory`` looks like sherpa-onnx's NeMo transducer layout (and has no ``manifest.json``)."""
    if not directory.is_dir() or (directory / "manifest.json").exists():
        return False
    return (directory / TOKENS_FILE).is_file() and any(directory.glob("joiner*.onnx"))


@dataclass(frozen=True)
class SherpaFiles:
    """The three graph files of one variant (fp32 or int8)."""

    encoder: str
    decoder: str
    joiner: str


def graph_files(directory: Path, precision: str | None) -> SherpaFiles:
    """The variant's three files: ``precision`` ``"fp32"`` or ``"int8"``, or ``None`` for fp32 when all three
    fp32 graphs are there, else int8.

    Raises:
        ManifestError: an unknown precision.
        ModelDirectoryError: the variant's files are not all there.
    """
    return SherpaFiles(*variant_files(directory, precision, (ENCODER_FILE, DECODER_FILE, JOINER_FILE),
                                      "a sherpa-onnx NeMo transducer directory"))


def _meta_int(metadata: dict[str, str], key: str, graph: str) -> int | None:
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ManifestError(f"{graph}: metadata {key} must be a positive integer, found {raw!r}")
    return value


def _check_metadata(metadata: dict[str, str], graph: str, vocab_size: int, n_mels: int | None) -> None:
    model_type = metadata.get("model_type")
    if model_type is not None and model_type not in RNNT_MODEL_TYPES:
        raise ManifestError(f"{graph}: model_type is {model_type!r}; the engine runs NeMo TDT transducers "
                            f"({', '.join(RNNT_MODEL_TYPES)})")
    normalize = metadata.get("normalize_type")
    if normalize is not None and normalize != "per_feature":
        raise ManifestError(f"{graph}: normalize_type is {normalize!r}; the engine computes Parakeet's features, "
                            "normalised per_feature")
    declared = _meta_int(metadata, "vocab_size", graph)
    if declared is not None and declared != vocab_size:
        raise ManifestError(f"{graph}: metadata vocab_size is {declared}, but {TOKENS_FILE} has {vocab_size} pieces "
                            "before <blk>")
    feat_dim = _meta_int(metadata, "feat_dim", graph)
    if feat_dim is not None and n_mels is not None and feat_dim != n_mels:
        raise ManifestError(f"{graph}: metadata feat_dim is {feat_dim}, but the encoder takes {n_mels} mel bins")


def _mel_count(encoder: ort.InferenceSession, metadata: dict[str, str], graph: str) -> int:
    inputs = {i.name: i.shape for i in encoder.get_inputs()}
    if set(inputs) != {"audio_signal", "length"}:
        raise ManifestError(f"{graph}: expected inputs audio_signal and length, found {sorted(inputs)}")
    shape = inputs["audio_signal"]
    graph_mels = shape[1] if len(shape) == 3 and isinstance(shape[1], int) else None
    mels = graph_mels if graph_mels is not None else _meta_int(metadata, "feat_dim", graph)
    if mels is None:
        raise ManifestError(f"{graph}: audio_signal has no static mel size, and no feat_dim in the metadata")
    return mels


def _subsampling(measured: int, metadata: dict[str, str], graph: str) -> int:
    declared = _meta_int(metadata, "subsampling_factor", graph)
    if declared is not None and declared != measured:
        raise ManifestError(f"{graph}: metadata subsampling_factor is {declared}, but the encoder subsamples by "
                            f"{measured}")
    return measured


@dataclass(frozen=True)
class SherpaParts:
    """The graphs built from ``decoder.onnx`` and ``joiner.onnx`` (serialised) and the sizes read from them."""

    projection: bytes
    """``encoder_outputs`` ``(batch, d_model, frames)`` -> ``encoder_projected`` ``(batch, frames, joint_hidden)``."""
    predictor: bytes
    """``labels`` ``(batch,)``, ``state_h``/``state_c`` -> ``predictor_output`` ``(batch, joint_hidden)`` (the
    decoder and the joiner's predictor projection), ``new_state_h``/``new_state_c``."""
    joint: bytes
    """``encoder_frame``, ``predictor_output`` ``(rows, joint_hidden)`` -> ``logits`` ``(rows, num_outputs)``."""
    encoder_input: str
    """The projection's input (the joiner's ``encoder_outputs``)."""
    d_model: int
    layers: int
    hidden: int
    num_outputs: int


def build_parts(decoder_path: Path, joiner_path: Path) -> SherpaParts:
    """Cut ``joiner.onnx`` at its sum and join its predictor projection onto ``decoder.onnx``.

    Raises:
        ManifestError: the graphs are not NeMo's decoder and joint exports.
    """
    decoder = onnx_proto.read_model(decoder_path, external_data=True)
    joiner = onnx_proto.read_model(joiner_path, external_data=True)
    for model, path in ((decoder, decoder_path), (joiner, joiner_path)):
        onnx_proto.check_no_subgraphs(model, path.name)
    dec_inputs = list(onnx_proto.graph_inputs(decoder).values())
    dec_outputs = list(decoder.graph.output)
    if len(dec_inputs) != 4 or len(dec_outputs) != 4:
        raise ManifestError(
            f"{decoder_path.name}: expected NeMo's decoder export (targets, target_length, h, c in; outputs, "
            f"lengths, h, c out), found inputs {[v.name for v in dec_inputs]} and outputs "
            f"{[v.name for v in dec_outputs]}"
        )
    joiner_inputs = list(onnx_proto.graph_inputs(joiner).values())
    if len(joiner_inputs) != 2 or len(joiner.graph.output) != 1:
        raise ManifestError(f"{joiner_path.name}: expected NeMo's joint export (encoder_outputs, decoder_outputs in; "
                            f"outputs out), found inputs {[v.name for v in joiner_inputs]}")
    if onnx_proto.opset(decoder) != onnx_proto.opset(joiner):
        raise ManifestError(f"{decoder_path.name} and {joiner_path.name} have different opsets "
                            f"({onnx_proto.opset(decoder)}, {onnx_proto.opset(joiner)})")
    encoder_in, decoder_in = (v.name for v in joiner_inputs)
    joiner_out = joiner.graph.output[0].name
    encoder_side, predictor_side = onnx_proto.combine_inputs(joiner, {encoder_in}, {decoder_in}, joiner_path.name)

    projection = projection_part(joiner, encoder_in, encoder_side, joiner_path.name)
    joint = joint_part(joiner, encoder_side, predictor_side, joiner_out, joiner_path.name)

    targets, _, h_in, c_in = dec_inputs
    output, _, h_out, c_out = (v.name for v in dec_outputs)
    predictor = onnx_proto.extract(decoder, [targets.name, h_in.name, c_in.name], [output, h_out, c_out],
                                   decoder_path.name)
    onnx_proto.rename(predictor, {h_in.name: _H_IN, c_in.name: _C_IN, h_out: _H_OUT, c_out: _C_OUT})
    taken = onnx_proto.tensor_names(predictor)
    prefix = "joiner/"
    while any(name.startswith(prefix) for name in taken):
        prefix = "_" + prefix
    predictor_projection = onnx_proto.extract(joiner, [decoder_in], [predictor_side], joiner_path.name)
    onnx_proto.prefix_names(predictor_projection, prefix, keep=[decoder_in])
    onnx_proto.rename(predictor_projection, {decoder_in: output})
    onnx_proto.append_graph(predictor, predictor_projection)
    domains = {o.domain for o in predictor.opset_import}
    predictor.opset_import.extend(o for o in joiner.opset_import if o.domain not in domains)
    head, initializers = labels_head(predictor, targets.name, onnx_proto.elem_type(targets))
    tail, tensors = onnx_proto.squeeze_nodes(predictor, "Squeeze", prefix + predictor_side, _PREDICTOR_OUTPUT, [1, 2])
    # the decoder's raw output is no graph output any more: only the projected one, and the states
    kept_outputs = [v for v in predictor.graph.output if v.name != output]
    del predictor.graph.output[:]
    predictor.graph.output.extend(kept_outputs)
    onnx_proto.rewire(
        predictor, head, tail, [*initializers, *tensors],
        [onnx_proto.value_info(_LABELS, onnx_proto.INT64, ["batch"])],
        [onnx_proto.value_info(_PREDICTOR_OUTPUT, onnx_proto.FLOAT, ["batch", None])],
    )

    _free_state_batch(predictor)
    sizes = (onnx_proto.static_dim(joiner_inputs[0], 1), onnx_proto.static_dim(h_in, 0),
             onnx_proto.static_dim(h_in, -1), onnx_proto.static_dim(joiner.graph.output[0], -1))
    if any(size is None for size in sizes):
        raise ManifestError(f"{decoder_path.name}, {joiner_path.name}: graph sizes are not static "
                            f"(d_model, state layers and size, outputs): {sizes}")
    d_model, layers, hidden, num_outputs = (int(s) for s in sizes if s is not None)
    return SherpaParts(projection=projection, predictor=onnx_proto.serialize(predictor), joint=joint,
                       encoder_input=encoder_in, d_model=d_model, layers=layers, hidden=hidden, num_outputs=num_outputs)


def _free_state_batch(predictor: Any) -> None:
    """Give the LSTM states' batch axis a name: NeMo's decoder export declares it as the export's batch of one
    for ``c`` (a declared shape only: the graph computes any batch), so ONNX Runtime refused every batched
    decoding step and a batch of requests was retried one by one."""
    values = [*predictor.graph.input, *predictor.graph.output]
    for value in values:
        if value.name in (_H_IN, _C_IN, _H_OUT, _C_OUT):
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 3 and dims[1].HasField("dim_value"):
                dims[1].dim_param = "states_batch"


def _durations(num_outputs: int, vocab_size: int, graph: str) -> tuple[int, ...]:
    count = num_outputs - vocab_size - 1
    if count == len(DEFAULT_DURATIONS):
        return DEFAULT_DURATIONS
    if count <= 0:
        raise ManifestError(f"{graph}: the joint has {num_outputs} outputs for {vocab_size} pieces + blank: "
                            "no TDT durations (an RNN-T model, which the engine does not run)")
    raise ManifestError(f"{graph}: the joint has {count} TDT duration outputs; the layout does not record the "
                        f"durations and only Parakeet's {list(DEFAULT_DURATIONS)} are assumed")


def load_sherpa_onnx(
    directory: Path,
    *,
    providers: Sequence[Provider] | None,
    session: SessionOptions,
    precision: str | None = None,
) -> LoadedLayout:
    """Load a sherpa-onnx NeMo TDT directory (see the module docstring for what is assumed).

    Args:
        directory: the directory.
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        session: ONNX Runtime threading.
        precision: ``"fp32"``, ``"int8"`` (``*.int8.onnx``), or ``None``: fp32 when present, else int8.

    Raises:
        ModelDirectoryError: a file of the layout is missing.
        ManifestError: a file is invalid, or the graphs disagree with the metadata, the tokens or the
            assumptions.
    """
    files = graph_files(directory, precision)
    pieces, blank_id = read_vocab(directory / TOKENS_FILE)
    vocab_size = blank_id
    chosen = list(providers) if providers is not None else default_providers()
    threads, spin = session.threads, spin_asked(session.spinning)

    encoder = graph_session(directory / files.encoder, chosen, threads, spin)
    metadata = dict(encoder.get_modelmeta().custom_metadata_map)
    n_mels = _mel_count(encoder, metadata, files.encoder)
    _check_metadata(metadata, files.encoder, vocab_size, n_mels)
    measured, encoder_width = measure_encoder(encoder, n_mels, files.encoder)
    subsampling = _subsampling(measured, metadata, files.encoder)

    parts = build_parts(directory / files.decoder, directory / files.joiner)
    for key, value in (("pred_rnn_layers", parts.layers), ("pred_hidden", parts.hidden)):
        declared = _meta_int(metadata, key, files.encoder)
        if declared is not None and declared != value:
            raise ManifestError(f"{files.encoder}: metadata {key} is {declared}, but {files.decoder}'s state has "
                                f"{value}")
    check_frame_width(encoder_width, parts.d_model, files.encoder, files.joiner)
    projection = EncoderProjection(
        session=graph_session(parts.projection, chosen, threads, spin, name=files.joiner),
        input=parts.encoder_input,
        output=_PROJECTED,
    )
    try:
        (projected,) = projection.session.run(None, {projection.input: np.zeros((1, parts.d_model, 1), np.float32)})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions here
        raise ManifestError(f"{files.joiner}: the joint's encoder projection does not run ({exc})") from exc
    decoding = decoding_sessions((parts.predictor, "prediction network"), (parts.joint, "joint"),
                                 JointColumns(labels=blank_id + 1, width=parts.num_outputs), chosen, session,
                                 "int8" if ".int8." in files.encoder else "fp32")
    durations = _durations(parts.num_outputs, vocab_size, files.joiner)

    features_spec, features = parakeet_features(n_mels)
    external = directory / EXTERNAL_WEIGHTS
    manifest = Manifest(
        features=features_spec,
        encoder=EncoderSpec(
            file=files.encoder, subsampling_factor=subsampling, d_model=parts.d_model,
            joint_hidden=int(projected.shape[-1]),
            max_frames=max_frames_of(onnx_proto.read_model(directory / files.encoder), parts.d_model, files.encoder),
            external_data=EXTERNAL_WEIGHTS if files.encoder == "encoder.onnx" and external.is_file() else None,
            precision="int8" if ".int8." in files.encoder else "fp32",
            input_features="audio_signal", input_lengths="length", output_frames="outputs",
            output_lengths="encoded_lengths",
        ),
        predictor=PredictorSpec(
            file=files.decoder, layers=parts.layers, hidden=parts.hidden, input_targets=_LABELS,
            input_h=_H_IN, input_c=_C_IN, output=_PREDICTOR_OUTPUT, output_h=_H_OUT, output_c=_C_OUT,
        ),
        joint=JointSpec(
            file=files.joiner, num_outputs=parts.num_outputs, input_encoder=_ENCODER_FRAME,
            input_predictor=_PREDICTOR_OUTPUT, output_logits=_LOGITS,
        ),
        decoding=DecodingSpec(
            vocab_size=vocab_size, blank_id=blank_id, durations=durations, max_symbols=DEFAULT_MAX_SYMBOLS,
        ),
        tokenizer=TokenizerSpec(
            file="", vocab_file=TOKENS_FILE, kind="wpe" if any(p.startswith("##") for p in pieces) else "bpe",
            supported_punctuation=tuple(sorted(punctuation_from_vocab(pieces))),
        ),
        model_name=directory.name,
        description="sherpa-onnx NeMo TDT layout",
        provenance=Provenance(source=str(directory)),
    )
    check_ranges(manifest, str(directory))
    model = OnnxTdtModel(
        manifest=manifest, encoder_session=encoder, encoder_file=files.encoder, predictor_session=decoding.predictor,
        joint_session=decoding.joint, encoder_projection=projection, decoder_weights=decoding.weights,
        release_above_frames=release_above_frames(manifest, session.release_memory_above_seconds),
    )
    logger.info("loaded sherpa-onnx layout %s (%s, %s, %s)", directory, files.encoder, files.decoder, files.joiner)
    return LoadedLayout(manifest=manifest, features=features, tokenizer=vocab_tokenizer(pieces, TOKENS_FILE),
                        model=model)

