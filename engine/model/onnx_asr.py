"""Load a model directory in onnx-asr's NeMo TDT layout (``istupakov/parakeet-tdt-0.6b-v2-onnx`` on the hub).

The layout is NeMo's own ``model.export("model.onnx")`` plus two small text files:

- ``encoder-model.onnx`` (with ``encoder-model.onnx.data`` for large encoders): ``audio_signal``
  ``(batch, n_mels, frames)`` and ``length`` in, ``outputs`` ``(batch, d_model, encoded_frames)`` and
  ``encoded_lengths`` out. These frames come *before* the joint's encoder projection.
- ``decoder_joint-model.onnx``: NeMo's ``RNNTDecoderJoint``: ``encoder_outputs`` ``(batch, d_model, T)``,
  ``targets`` ``(batch, 1)``, ``target_length``, ``input_states_1``/``_2`` ``(layers, batch, hidden)`` in;
  ``outputs`` ``(batch, T, 1, vocab + 1 + len(durations))`` and the new states out. It holds the
  predictor and the whole joint, both projections included.
- ``vocab.txt``: ``<piece> <id>`` lines, the blank ``<blk>`` last (its id is the vocabulary size).
- ``config.json`` (optional): ``features_size`` (mel bins), ``subsampling_factor``,
  ``max_tokens_per_step``; this loader also reads ``durations`` when present.
- ``*.int8.onnx`` variants of both graphs (dynamically quantised).

The engine needs the joint's encoder projection applied once per encoder frame, and the predictor and the
joint as separate steps (the decoding loop reuses one predictor output over many frames). So the
``decoder_joint`` graph is cut, at load, where the joint adds the two projections, into three graphs:
the encoder projection (run once per utterance after the encoder), the predictor (label and state in,
projected output and state out) and the rest of the joint (projected frame and projected predictor output
in, logits out). Cutting a graph needs the ``onnx`` package (``pip install onnx``).

What the layout does not carry is taken from Parakeet's documented settings, and stated here:

- features: NeMo's ``AudioToMelSpectrogramPreprocessor`` as Parakeet configures it: 16 kHz, 512-point FFT,
  25 ms symmetric Hann window (400 samples), 10 ms hop (160 samples), pre-emphasis 0.97, power spectrum
  (``mag_power`` 2), slaney mel filterbank (librosa's, ``norm="slaney"``, 0 to 8000 Hz) computed here in
  numpy, log with guard 2**-24 added, per-feature normalisation, no exact padding, pad value 0. The mel
  count is ``features_size`` from ``config.json``, else the encoder's input size; they must agree.
- ``durations``: ``config.json``'s ``durations`` when present, else ``[0, 1, 2, 3, 4]`` (every released
  Parakeet TDT model), which the joint's output size must confirm (``vocab + 1 + 5``).
- ``max_symbols``: ``max_tokens_per_step`` from ``config.json``, else 10 (NeMo's default for Parakeet).
- subsampling: ``subsampling_factor`` from ``config.json``, else measured by running the encoder once.
- the longest input: the encoder's relative position table ``(1, 2 * max_frames - 1, d_model)`` when it is
  found in the graph, else NeMo's default ``pos_emb_max_len`` of 5000 encoder frames.
- text: SentencePiece detokenisation over the pieces of ``vocab.txt`` (``<unk>`` unknown, ``<s>``/``</s>``/
  ``<pad>`` control, ``<0xXX>`` bytes, the rest normal pieces); NeMo's timestamp rules (punctuation from the
  vocabulary, separators ``.?!``, word separator a space).
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import sentencepiece

from parakeet_runtime.decoding import FloatArray

from ..errors import ManifestError, ModelDirectoryError
from ..options import SessionOptions
from .features import FeatureExtractor
from .manifest import (
    DecodingSpec,
    EncoderSpec,
    FeatureSpec,
    JointSpec,
    Manifest,
    PredictorSpec,
    Provenance,
    TokenizerSpec,
)
from .onnx_model import EncoderProjection, OnnxTdtModel, default_providers, graph_session, step_graph_session
from .tokenizer import Tokenizer

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder-model{suffix}.onnx"
DECODER_JOINT_FILE = "decoder_joint-model{suffix}.onnx"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "config.json"
BLANK_PIECE = "<blk>"

DEFAULT_DURATIONS = (0, 1, 2, 3, 4)
"""TDT durations of every released Parakeet TDT model (the layout does not record them)."""
DEFAULT_MAX_SYMBOLS = 10
"""NeMo's ``max_symbols`` for Parakeet's greedy TDT decoding (onnx-asr's ``max_tokens_per_step`` default)."""
DEFAULT_MAX_FRAMES = 5000
"""NeMo's default ``pos_emb_max_len`` (encoder frames), used when the position table is not found."""

SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400
"""25 ms at 16 kHz."""
HOP_LENGTH = 160
"""10 ms at 16 kHz."""
PREEMPH = 0.97
LOG_ZERO_GUARD = 2.0**-24
MEL_FMIN = 0.0
MEL_FMAX = 8000.0

# Names of the graphs cut out of decoder_joint (inputs and outputs this module adds).
_LABELS = "labels"
_PREDICTOR_OUTPUT = "predictor_output"
_ENCODER_FRAME = "encoder_frame"
_LOGITS = "logits"
_PROJECTED = "encoder_projected"


@dataclass(frozen=True, eq=False)
class LoadedLayout:
    """What :meth:`Engine.load` needs, built from a directory in another layout."""

    manifest: Manifest
    features: FeatureExtractor
    tokenizer: Tokenizer
    model: OnnxTdtModel


def is_onnx_asr_directory(directory: Path) -> bool:
    """Whether ``directory`` looks like onnx-asr's NeMo layout (and has no ``manifest.json`` of ours)."""
    if not directory.is_dir() or (directory / "manifest.json").exists():
        return False
    return (directory / VOCAB_FILE).is_file() and any(directory.glob("decoder_joint-model*.onnx"))


def load_onnx_asr(
    directory: Path,
    *,
    providers: Sequence[str] | None,
    session: SessionOptions,
    quantization: str | None = None,
) -> LoadedLayout:
    """Load an onnx-asr NeMo TDT directory (see the module docstring for what is assumed).

    Args:
        directory: the directory.
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        session: ONNX Runtime threading.
        quantization: ``None`` for the fp32 graphs (the ``int8`` ones when there are no fp32 graphs),
            or ``"int8"`` for ``*.int8.onnx``.

    Raises:
        ModelDirectoryError: a file of the layout is missing, or the ``onnx`` package is not installed.
        ManifestError: a file is invalid, or the graphs disagree with the vocabulary or the assumptions.
    """
    encoder_file, decoder_joint_file = _graph_files(directory, quantization)
    config = _read_config(directory)
    pieces, blank_id = read_vocab(directory / VOCAB_FILE)
    chosen = list(providers) if providers is not None else default_providers()
    threads, spinning = session.threads, session.spinning

    encoder = graph_session(directory / encoder_file, chosen, threads, spinning)
    encoder_inputs = {i.name: i.shape for i in encoder.get_inputs()}
    if set(encoder_inputs) != {"audio_signal", "length"}:
        raise ManifestError(f"{encoder_file}: expected inputs audio_signal and length, found {sorted(encoder_inputs)}")
    n_mels = _mel_count(encoder_file, encoder_inputs["audio_signal"], config)

    parts = split_decoder_joint(directory / decoder_joint_file)
    projection = EncoderProjection(
        session=graph_session(parts.projection, chosen, threads, spinning), input="encoder_outputs", output=_PROJECTED
    )
    try:
        (projected,) = projection.session.run(None, {"encoder_outputs": np.zeros((1, parts.d_model, 1), np.float32)})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions here
        raise ManifestError(f"{decoder_joint_file}: the joint's encoder projection does not run ({exc})") from exc
    joint_hidden = int(projected.shape[-1])
    predictor = step_graph_session(parts.predictor, chosen, threads, spin=True)
    joint = step_graph_session(parts.joint, chosen, threads, spin=False)

    vocab_size = blank_id
    durations = _durations(config, parts.num_outputs, vocab_size, decoder_joint_file)
    features_spec = FeatureSpec(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, window="hann",
        n_mels=n_mels, preemph=PREEMPH, mag_power=2.0, log=True, log_zero_guard_type="add",
        log_zero_guard_value=LOG_ZERO_GUARD, normalize="per_feature", exact_pad=False, pad_value=0.0,
        window_stride=HOP_LENGTH / SAMPLE_RATE, arrays_file="",
    )
    features = FeatureExtractor(
        spec=features_spec,
        window=_read_only(hann_window(WIN_LENGTH)),
        filterbank=_read_only(slaney_mel_filterbank(SAMPLE_RATE, N_FFT, n_mels, MEL_FMIN, MEL_FMAX)),
    )
    subsampling = _subsampling(config, encoder, n_mels, encoder_file)
    manifest = Manifest(
        features=features_spec,
        encoder=EncoderSpec(
            file=encoder_file, subsampling_factor=subsampling, d_model=parts.d_model, joint_hidden=joint_hidden,
            max_frames=_max_frames(directory / encoder_file, parts.d_model),
            external_data=encoder_file + ".data" if (directory / (encoder_file + ".data")).is_file() else None,
            precision="int8" if ".int8." in encoder_file else "fp32",
            input_features="audio_signal", input_lengths="length", output_frames="outputs",
            output_lengths="encoded_lengths",
        ),
        predictor=PredictorSpec(
            file=decoder_joint_file, layers=parts.layers, hidden=parts.hidden, input_targets=_LABELS,
            input_h="input_states_1", input_c="input_states_2", output=_PREDICTOR_OUTPUT,
            output_h="output_states_1", output_c="output_states_2",
        ),
        joint=JointSpec(
            file=decoder_joint_file, num_outputs=parts.num_outputs, input_encoder=_ENCODER_FRAME,
            input_predictor=_PREDICTOR_OUTPUT, output_logits=_LOGITS,
        ),
        decoding=DecodingSpec(
            vocab_size=vocab_size, blank_id=blank_id, durations=durations,
            max_symbols=_int(config, "max_tokens_per_step", DEFAULT_MAX_SYMBOLS),
        ),
        tokenizer=TokenizerSpec(
            file="", vocab_file=VOCAB_FILE, kind="wpe" if any(p.startswith("##") for p in pieces) else "bpe",
            supported_punctuation=tuple(sorted(punctuation_from_vocab(pieces))),
        ),
        model_name=directory.name,
        description="onnx-asr NeMo TDT layout",
        provenance=Provenance(source=str(directory)),
    )
    model = OnnxTdtModel(
        manifest=manifest, encoder_session=encoder, predictor_session=predictor, joint_session=joint,
        encoder_projection=projection,
    )
    logger.info("loaded onnx-asr layout %s (%s, %s)", directory, encoder_file, decoder_joint_file)
    return LoadedLayout(manifest=manifest, features=features, tokenizer=vocab_tokenizer(pieces), model=model)


# --- files -------------------------------------------------------------------------------------------


def _graph_files(directory: Path, quantization: str | None) -> tuple[str, str]:
    if quantization not in (None, "int8"):
        raise ManifestError(f"quantization must be None or 'int8', found {quantization!r}")
    suffixes = [".int8"] if quantization == "int8" else ["", ".int8"]
    for suffix in suffixes:
        names = (ENCODER_FILE.format(suffix=suffix), DECODER_JOINT_FILE.format(suffix=suffix))
        if all((directory / name).is_file() for name in names):
            return names
    wanted = ", ".join(ENCODER_FILE.format(suffix=s) + " and " + DECODER_JOINT_FILE.format(suffix=s) for s in suffixes)
    raise ModelDirectoryError(f"{directory}: an onnx-asr NeMo directory needs {wanted}")


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    model_type = raw.get("model_type", "nemo-conformer-tdt")
    if model_type != "nemo-conformer-tdt":
        raise ManifestError(f"{path}: model_type is {model_type!r}; the engine runs only 'nemo-conformer-tdt'")
    return raw


def _int(config: dict[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ManifestError(f"{CONFIG_FILE}: {key} must be a positive integer, found {value!r}")
    return value


def read_vocab(path: Path) -> tuple[list[str], int]:
    """The pieces of ``vocab.txt`` in id order (the blank left out) and the blank id.

    Raises:
        ManifestError: a malformed line, ids that are not ``0..n-1`` in order, or no ``<blk>`` last.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path.name}: not readable ({exc})") from exc
    pieces = []
    for number, line in enumerate(lines):
        piece, _, index = line.rpartition(" ")
        if not piece or not index.isdigit() or int(index) != number:
            raise ManifestError(f"{path.name}: line {number + 1} should be '<piece> {number}', found {line!r}")
        pieces.append(piece)
    if not pieces or pieces[-1] != BLANK_PIECE:
        raise ManifestError(f"{path.name}: the last entry must be the TDT blank {BLANK_PIECE!r}")
    pieces.pop()
    if len(set(pieces)) != len(pieces) or BLANK_PIECE in pieces:
        raise ManifestError(f"{path.name}: pieces must be unique")
    return pieces, len(pieces)


def _mel_count(encoder_file: str, shape: Sequence[Any], config: dict[str, Any]) -> int:
    graph_mels = shape[1] if len(shape) == 3 and isinstance(shape[1], int) else None
    configured = config.get("features_size")
    if configured is not None:
        mels = _int(config, "features_size", 0)
        if graph_mels is not None and graph_mels != mels:
            raise ManifestError(
                f"{CONFIG_FILE}: features_size is {mels}, but {encoder_file} takes {graph_mels} mel bins"
            )
        return mels
    if graph_mels is None:
        raise ManifestError(
            f"{encoder_file}: audio_signal has no static mel size, and {CONFIG_FILE} has no features_size"
        )
    return graph_mels


def _durations(config: dict[str, Any], num_outputs: int, vocab_size: int, graph: str) -> tuple[int, ...]:
    raw = config.get("durations")
    if raw is None:
        durations = DEFAULT_DURATIONS
    elif isinstance(raw, list) and raw and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        durations = tuple(raw)
    else:
        raise ManifestError(f"{CONFIG_FILE}: durations must be a list of non-negative integers, found {raw!r}")
    expected = vocab_size + 1 + len(durations)
    if num_outputs != expected:
        source = f"{CONFIG_FILE}'s durations" if raw is not None else f"Parakeet's durations {list(durations)}"
        raise ManifestError(
            f"{graph}: the joint has {num_outputs} outputs, but {VOCAB_FILE} ({vocab_size} pieces + blank) and "
            f"{source} make {expected}; give the model's TDT durations as 'durations' in {CONFIG_FILE}"
        )
    return durations


def _subsampling(config: dict[str, Any], encoder: ort.InferenceSession, n_mels: int, graph: str) -> int:
    if "subsampling_factor" in config:
        return _int(config, "subsampling_factor", 0)
    frames = 256  # divisible by every FastConformer subsampling factor (4, 8, 16)
    features = np.zeros((1, n_mels, frames), dtype=np.float32)
    try:
        _, lengths = encoder.run(None, {"audio_signal": features, "length": np.array([frames], dtype=np.int64)})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions here
        raise ManifestError(f"{graph}: the encoder does not run on {n_mels} mel bins ({exc})") from exc
    encoded = int(np.asarray(lengths).reshape(-1)[0])
    if encoded <= 0 or frames % encoded:
        raise ManifestError(f"{graph}: {frames} feature frames encode to {encoded} frames; cannot infer subsampling")
    return frames // encoded


def _max_frames(path: Path, d_model: int) -> int:
    """Encoder frames the relative position table covers (its shape is ``(1, 2 * frames - 1, d_model)``)."""
    onnx = _import_onnx()
    model = onnx.load(str(path), load_external_data=False)
    shapes = [list(t.dims) for t in model.graph.initializer]
    constants = [n for n in model.graph.node if n.op_type == "Constant"]
    shapes += [list(a.t.dims) for n in constants for a in n.attribute if a.name == "value"]
    lengths = [
        int(s[1]) for s in shapes if len(s) == 3 and s[0] == 1 and s[2] == d_model and s[1] % 2 == 1 and s[1] > 1
    ]
    if not lengths:
        logger.info("%s: no position table found; assuming %d encoder frames at most", path.name, DEFAULT_MAX_FRAMES)
        return DEFAULT_MAX_FRAMES
    return (max(lengths) + 1) // 2


def _read_only(array: FloatArray) -> FloatArray:
    array.setflags(write=False)
    return array


# --- decoder_joint -> encoder projection, predictor, joint -------------------------------------------


@dataclass(frozen=True)
class DecoderJointParts:
    """The three graphs cut out of ``decoder_joint`` (serialised ONNX models) and the sizes read from them."""

    projection: bytes
    """``encoder_outputs`` ``(batch, d_model, frames)`` -> ``encoder_projected`` ``(batch, frames, joint_hidden)``."""
    predictor: bytes
    """``labels`` ``(batch,)``, ``input_states_1``/``_2`` -> ``predictor_output`` ``(batch, joint_hidden)``,
    ``output_states_1``/``_2``."""
    joint: bytes
    """``encoder_frame``, ``predictor_output`` ``(n, joint_hidden)`` -> ``logits`` ``(n, num_outputs)``."""
    d_model: int
    layers: int
    hidden: int
    num_outputs: int


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ModelDirectoryError(
            "loading an onnx-asr directory cuts its decoder_joint graph, which needs the onnx package: pip install onnx"
        ) from exc
    return onnx


def _static_dims(value: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def split_decoder_joint(path: Path) -> DecoderJointParts:
    """Cut NeMo's ``decoder_joint`` graph where the joint adds the encoder and predictor projections.

    Raises:
        ManifestError: the graph is not NeMo's ``RNNTDecoderJoint`` export.
    """
    onnx = _import_onnx()
    from onnx import helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others
        raise ManifestError(f"{path.name}: not an ONNX model ({exc})") from exc
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {v.name: v for v in graph.input if v.name not in initializers}
    outputs = {v.name: v for v in graph.output}
    wanted_in = {"encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2"}
    wanted_out = {"outputs", "output_states_1", "output_states_2"}
    if not wanted_in <= set(inputs) or not wanted_out <= set(outputs):
        raise ManifestError(
            f"{path.name}: expected NeMo's decoder_joint inputs {sorted(wanted_in)} and outputs {sorted(wanted_out)}, "
            f"found {sorted(inputs)} and {sorted(outputs)}"
        )
    encoder_side, predictor_side = _combine_inputs(graph, set(inputs), path.name)

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    known = {v.name for v in graph.value_info}
    for name in (encoder_side, predictor_side):  # the extractor needs a type for every tensor it cuts at
        if name not in known:
            graph.value_info.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    extractor = onnx.utils.Extractor(model)

    def axes_node(name: str, axes: list[int]) -> Any:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, onnx.TensorProto.INT64,
                                                                                   [len(axes)], axes))

    def reshaping(op: str, source: str, target: str, axes: list[int]) -> list[Any]:
        if opset >= 13:
            return [axes_node(target + "_axes", axes), helper.make_node(op, [source, target + "_axes"], [target])]
        return [helper.make_node(op, [source], [target], axes=axes)]

    def finish(part: Any, new_inputs: list[Any], head: list[Any], tail: list[Any], new_outputs: list[Any]) -> bytes:
        g = part.graph
        kept_inputs = [v for v in g.input if v.name not in {n for node in head for n in node.output}]
        nodes = [*head, *g.node, *tail]
        del g.node[:]
        g.node.extend(nodes)
        del g.input[:]
        g.input.extend([*new_inputs, *kept_inputs])
        replaced = {v.name for v in new_outputs} | {n for node in tail for n in node.input}
        kept_outputs = [v for v in g.output if v.name not in replaced]
        del g.output[:]
        g.output.extend([*new_outputs, *kept_outputs])
        onnx.checker.check_model(part)
        data: bytes = part.SerializeToString()
        return data

    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    targets_type = inputs["targets"].type.tensor_type.elem_type  # NeMo exports int32 targets
    labels_head = reshaping("Unsqueeze", _LABELS, "targets" if targets_type == i64 else "labels_2d", [1])
    if targets_type != i64:
        labels_head.append(helper.make_node("Cast", ["labels_2d"], ["targets"], to=targets_type))
    try:
        projection = finish(
            extractor.extract_model(["encoder_outputs"], [encoder_side]), [], [],
            reshaping("Squeeze", encoder_side, _PROJECTED, [2]),
            [helper.make_tensor_value_info(_PROJECTED, f32, ["batch", "frames", None])],
        )
        predictor = finish(
            extractor.extract_model(["targets", "input_states_1", "input_states_2"],
                                    [predictor_side, "output_states_1", "output_states_2"]),
            [helper.make_tensor_value_info(_LABELS, i64, ["batch"])],
            labels_head,
            reshaping("Squeeze", predictor_side, _PREDICTOR_OUTPUT, [1, 2]),
            [helper.make_tensor_value_info(_PREDICTOR_OUTPUT, f32, ["batch", None])],
        )
        joint = finish(
            extractor.extract_model([encoder_side, predictor_side], ["outputs"]),
            [helper.make_tensor_value_info(_ENCODER_FRAME, f32, ["rows", None]),
             helper.make_tensor_value_info(_PREDICTOR_OUTPUT, f32, ["rows", None])],
            [*reshaping("Unsqueeze", _ENCODER_FRAME, encoder_side, [1, 2]),
             *reshaping("Unsqueeze", _PREDICTOR_OUTPUT, predictor_side, [1, 2])],
            reshaping("Squeeze", "outputs", _LOGITS, [1, 2]),
            [helper.make_tensor_value_info(_LOGITS, f32, ["rows", None])],
        )
    except ManifestError:
        raise
    except Exception as exc:  # onnx's extractor and checker raise several untyped errors
        raise ManifestError(f"{path.name}: cannot cut the graph at the joint's sum ({exc})") from exc

    d_model = _static_dims(inputs["encoder_outputs"])[1]
    states = _static_dims(inputs["input_states_1"])
    num_outputs = _static_dims(outputs["outputs"])[-1]
    sizes = (d_model, states[0], states[-1], num_outputs)
    if any(size is None for size in sizes):
        raise ManifestError(
            f"{path.name}: graph sizes are not static (d_model, state layers and size, outputs): {sizes}"
        )
    d_model, layers, hidden, num_outputs = (int(s) for s in sizes if s is not None)
    return DecoderJointParts(
        projection=projection, predictor=predictor, joint=joint, d_model=d_model, layers=layers, hidden=hidden,
        num_outputs=num_outputs,
    )


def _combine_inputs(graph: Any, inputs: set[str], graph_name: str) -> tuple[str, str]:
    """The two inputs of the joint's sum: (encoder side, predictor side). In NeMo's export, the encoder
    side depends on ``encoder_outputs`` alone, the predictor side on the labels and states alone."""
    depends: dict[str, frozenset[str]] = {name: frozenset({name}) for name in inputs}
    found = []
    for node in graph.node:
        sources = frozenset().union(*(depends.get(name, frozenset()) for name in node.input if name))
        for name in node.output:
            depends[name] = sources
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        a, b = (depends.get(name, frozenset()) for name in node.input)
        predictor_inputs = {"targets", "input_states_1", "input_states_2"}
        if a == {"encoder_outputs"} and b and b <= predictor_inputs:
            found.append((node.input[0], node.input[1]))
        elif b == {"encoder_outputs"} and a and a <= predictor_inputs:
            found.append((node.input[1], node.input[0]))
    if len(found) != 1:
        raise ManifestError(
            f"{graph_name}: expected one sum of the encoder and predictor projections in the joint, found {len(found)}"
        )
    return found[0]


# --- features --------------------------------------------------------------------------------------


def hann_window(length: int) -> FloatArray:
    """``torch.hann_window(length, periodic=False)`` (NeMo's window), float32, in torch's order of
    operations (``cos(n * (2 pi / (length - 1))) * -0.5 + 0.5`` in float32). torch's float32 ``cos`` is
    faithfully rounded, this one correctly: a few values differ by one unit in the last place."""
    n = np.arange(length, dtype=np.float32)
    angle = n * np.float32(2.0 * math.pi / (length - 1))
    cosine = np.cos(angle.astype(np.float64)).astype(np.float32)
    window: FloatArray = cosine * np.float32(-0.5) + np.float32(0.5)
    return window


def _hz_to_mel(hz: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Slaney's mel scale (librosa ``hz_to_mel(htk=False)``): linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mels = hz / f_sp
    above = hz >= min_log_hz
    mels[above] = min_log_mel + np.log(hz[above] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    hz = f_sp * mels
    above = mels >= min_log_mel
    hz[above] = min_log_hz * np.exp(logstep * (mels[above] - min_log_mel))
    return hz


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> FloatArray:
    """librosa's ``filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney")`` in numpy, float32
    as librosa builds it (the triangles in float64, stored and area-normalised in float32).

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32.
    """
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = _hz_to_mel(np.array([fmin, fmax], dtype=np.float64))
    mel_freqs = _mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    spacing = np.diff(mel_freqs)
    ramps = np.subtract.outer(mel_freqs, fft_freqs)
    for i in range(n_mels):
        lower = -ramps[i] / spacing[i]
        upper = ramps[i + 2] / spacing[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    norm = 2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels])
    weights *= norm[:, np.newaxis]
    return weights


# --- tokenizer -------------------------------------------------------------------------------------

_PUNCTUATION_EXCLUDED = (re.compile(r"^\[.*\]$"), re.compile(r"^<.*>$"), re.compile(r"^##"), re.compile(r"^▁"),
                         re.compile(r"^\s*$"))


def punctuation_from_vocab(pieces: Sequence[str]) -> set[str]:
    """NeMo's ``extract_punctuation_from_vocab``: punctuation characters of pieces that are not special
    tokens and do not start a word (what NeMo's timestamps use when the tokenizer does not say)."""
    return {
        char
        for piece in pieces
        if not any(pattern.match(piece) for pattern in _PUNCTUATION_EXCLUDED)
        for char in piece
        if unicodedata.category(char).startswith("P")
    }


_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
"""SentencePiece ``ModelProto.SentencePiece.Type`` values."""
_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")


def _piece_type(piece: str) -> int:
    if piece == "<unk>":
        return _UNKNOWN
    if piece in ("<s>", "</s>", "<pad>"):
        return _CONTROL
    if _BYTE_PIECE.match(piece):
        return _BYTE
    return _NORMAL


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 fields are ten-byte varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _message(number: int, body: bytes) -> bytes:
    return _field(number, 2, _varint(len(body)) + body)


def sentencepiece_model(pieces: Sequence[str]) -> bytes:
    """A serialised SentencePiece ``ModelProto`` with these pieces (ids in order), for decoding only.

    Decoding needs only the pieces and their types, and the normaliser defaults SentencePiece trains with
    (a dummy prefix, so the first piece's word marker does not become a leading space).
    """
    body = bytearray()
    for piece in pieces:
        entry = _message(1, piece.encode("utf-8")) + _field(2, 5, struct.pack("<f", 0.0))
        entry += _field(3, 0, _varint(_piece_type(piece)))
        body += _message(1, entry)
    ids = {piece: index for index, piece in enumerate(pieces)}
    trainer = _field(3, 0, _varint(1))  # model_type UNIGRAM
    for number, piece in ((40, "<unk>"), (41, "<s>"), (42, "</s>"), (43, "<pad>")):
        trainer += _field(number, 0, _varint(ids.get(piece, -1)))
    if all(f"<0x{b:02X}>" in ids for b in range(256)):
        trainer += _field(35, 0, _varint(1))  # byte_fallback
    body += _message(2, trainer)
    body += _message(3, _message(1, b"identity"))
    return bytes(body)


def vocab_tokenizer(pieces: Sequence[str]) -> Tokenizer:
    """The engine's :class:`Tokenizer` over ``vocab.txt``'s pieces (no ``tokenizer.model`` in the layout).

    Raises:
        ManifestError: SentencePiece refuses the pieces (e.g. no ``<unk>``).
    """
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(sentencepiece_model(pieces))
    except (RuntimeError, OSError) as exc:
        raise ManifestError(f"{VOCAB_FILE}: SentencePiece cannot use these pieces ({exc})") from exc
    texts = tuple(processor.decode_pieces([piece]) for piece in pieces)
    return Tokenizer(processor=processor, pieces=tuple(pieces), texts=texts)
