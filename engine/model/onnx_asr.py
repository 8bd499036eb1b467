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
in, logits out). A directory written by ``convert-model --layout onnx-asr`` differs: its encoder gives projected
frames and its ``decoder_joint`` takes them, returning ``(batch, outputs)`` logits; the graph's metadata names the
two tensors where its joint begins, and it is cut there (the projection is then a transpose). The graph is cut
with protobuf alone (``model/onnx_proto.py``), so a runtime-only install
(onnxruntime, numpy) loads the layout: the ``onnx`` package is not needed.

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
from . import onnx_proto
from .decoder_weights import JointColumns
from .devices import Provider
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
    check_ranges,
    read_json_object,
    read_small_text,
)
from .onnx_model import (
    EncoderProjection,
    OnnxTdtModel,
    decoding_sessions,
    default_providers,
    graph_session,
    release_above_frames,
    spin_asked,
    subsampling_by_difference,
)
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

WRITTEN_ENCODER_FRAME = "parakeet_runtime.encoder_frame"
"""Metadata key of a ``decoder_joint`` written by ``convert-model --layout onnx-asr``: the tensor that holds one
projected encoder frame ``(batch, joint_hidden)`` (that graph's joint takes projected frames, NeMo's does not)."""
WRITTEN_PREDICTOR_OUTPUT = "parakeet_runtime.predictor_output"
"""Metadata key of such a graph: the tensor that holds the projected prediction network output ``(batch,
joint_hidden)``, where the predictor ends and the joint begins."""
WRITTEN_D_MODEL = "parakeet_runtime.d_model"
"""Metadata key of such a graph: the encoder's model dimension (its frames are projected, so the graph's
``encoder_outputs`` width is the joint's)."""
WRITTEN_MAX_FRAMES = "parakeet_runtime.max_frames"
"""Metadata key of such a graph: the most encoder frames one pass takes, or ``none`` (any number)."""


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
    providers: Sequence[Provider] | None,
    session: SessionOptions,
    precision: str | None = None,
) -> LoadedLayout:
    """Load an onnx-asr NeMo TDT directory (see the module docstring for what is assumed).

    Args:
        directory: the directory.
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        session: ONNX Runtime threading.
        precision: ``"fp32"``, ``"int8"`` (``*.int8.onnx``), or ``None``: fp32 when present, else int8.

    Raises:
        ModelDirectoryError: a file of the layout is missing.
        ManifestError: a file is invalid, or the graphs disagree with the vocabulary or the assumptions.
    """
    encoder_file, decoder_joint_file = _graph_files(directory, precision)
    config = _read_config(directory)
    pieces, blank_id = read_vocab(directory / VOCAB_FILE)
    chosen = list(providers) if providers is not None else default_providers()
    threads, spin = session.threads, spin_asked(session.spinning)

    encoder = graph_session(directory / encoder_file, chosen, threads, spin)
    encoder_inputs = {i.name: i.shape for i in encoder.get_inputs()}
    if set(encoder_inputs) != {"audio_signal", "length"}:
        raise ManifestError(f"{encoder_file}: expected inputs audio_signal and length, found {sorted(encoder_inputs)}")
    n_mels = _mel_count(encoder_file, encoder_inputs["audio_signal"], config)

    measured, encoder_width = measure_encoder(encoder, n_mels, encoder_file)
    parts = split_decoder_joint(directory / decoder_joint_file)
    projection = EncoderProjection(
        session=graph_session(parts.projection, chosen, threads, spin, name=decoder_joint_file),
        input="encoder_outputs", output=_PROJECTED,
    )
    width = parts.d_model if parts.frames_width is None else parts.frames_width
    check_frame_width(encoder_width, width, encoder_file, decoder_joint_file)
    try:
        (projected,) = projection.session.run(None, {"encoder_outputs": np.zeros((1, width, 1), np.float32)})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions here
        raise ManifestError(f"{decoder_joint_file}: the joint's encoder projection does not run ({exc})") from exc
    joint_hidden = int(projected.shape[-1])
    decoding = decoding_sessions((parts.predictor, "prediction network"), (parts.joint, "joint"),
                                 JointColumns(labels=blank_id + 1, width=parts.num_outputs), chosen, session,
                                 "int8" if ".int8." in encoder_file else "fp32")

    vocab_size = blank_id
    durations = _durations(config, parts.num_outputs, vocab_size, decoder_joint_file)
    features_spec, features = parakeet_features(n_mels)
    subsampling = _subsampling(config, measured, encoder_file)
    manifest = Manifest(
        features=features_spec,
        encoder=EncoderSpec(
            file=encoder_file, subsampling_factor=subsampling, d_model=parts.d_model, joint_hidden=joint_hidden,
            max_frames=parts.max_frames if parts.written else _max_frames(directory / encoder_file, parts.d_model),
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
    check_ranges(manifest, str(directory))
    model = OnnxTdtModel(
        manifest=manifest, encoder_session=encoder, encoder_file=encoder_file, predictor_session=decoding.predictor,
        joint_session=decoding.joint, encoder_projection=projection, decoder_weights=decoding.weights,
        release_above_frames=release_above_frames(manifest, session.release_memory_above_seconds),
    )
    logger.info("loaded onnx-asr layout %s (%s, %s)", directory, encoder_file, decoder_joint_file)
    return LoadedLayout(manifest=manifest, features=features, tokenizer=vocab_tokenizer(pieces), model=model)


# --- files -------------------------------------------------------------------------------------------


def _graph_files(directory: Path, precision: str | None) -> tuple[str, str]:
    encoder, decoder_joint = variant_files(directory, precision, (ENCODER_FILE, DECODER_JOINT_FILE),
                                           "an onnx-asr NeMo directory")
    return encoder, decoder_joint


def variant_files(directory: Path, precision: str | None, templates: Sequence[str], what: str) -> tuple[str, ...]:
    """A layout's graph files (``templates`` with a ``{suffix}``) of one variant: ``precision`` ``"fp32"`` or
    ``"int8"`` (``.int8`` files), or ``None`` for fp32 when all its files are there, else int8 (said as a warning
    when some fp32 files are there: transcripts then differ from fp32's).

    Raises:
        ManifestError: an unknown precision.
        ModelDirectoryError: the variant's files are not all there (``what`` names the layout).
    """
    if precision not in (None, "fp32", "int8"):
        raise ManifestError(f"precision must be None, 'fp32' or 'int8', found {precision!r}")
    suffixes = {None: ["", ".int8"], "fp32": [""], "int8": [".int8"]}[precision]
    for suffix in suffixes:
        names = tuple(template.format(suffix=suffix) for template in templates)
        if all((directory / name).is_file() for name in names):
            fp32 = [template.format(suffix="") for template in templates]
            missing = [name for name in fp32 if not (directory / name).is_file()]
            if precision is None and suffix and len(missing) < len(fp32):
                logger.warning("%s: the fp32 graphs are incomplete (no %s): loading the int8 graphs instead; pass "
                               "precision='int8' to choose them, or add the missing files", directory,
                               " or ".join(missing))
            return names
    wanted = " or ".join(", ".join(template.format(suffix=s) for template in templates) for s in suffixes)
    raise ModelDirectoryError(f"{directory}: {what} needs {wanted}")


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        return {}
    raw = read_json_object(path, "a JSON config")
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
    lines = read_small_text(path, "a vocabulary", encoding="utf-8-sig").splitlines()  # a BOM some editors write
    pieces = []
    for number, line in enumerate(lines):
        piece, _, index = line.rpartition(" ")
        if not piece or not (index.isascii() and index.isdigit()) or int(index) != number:
            raise ManifestError(f"{path.name}: line {number + 1} should be '<piece> {number}', found {line!r:.80}")
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
    elif (isinstance(raw, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw)
          and any(d > 0 for d in raw)):
        durations = tuple(raw)
    else:  # no positive duration: every label would stay on its frame (up to max_tokens_per_step each)
        raise ManifestError(f"{CONFIG_FILE}: durations must be a list of non-negative integers, one of them "
                            f"positive, found {raw!r}")
    expected = vocab_size + 1 + len(durations)
    if num_outputs == vocab_size + 1:
        raise ManifestError(f"{graph}: the joint has {num_outputs} outputs, {VOCAB_FILE}'s pieces and the blank, "
                            "and no durations: an RNN-T model; the engine runs TDT models")
    if num_outputs != expected:
        source = f"{CONFIG_FILE}'s durations" if raw is not None else f"Parakeet's durations {list(durations)}"
        raise ManifestError(
            f"{graph}: the joint has {num_outputs} outputs, but {VOCAB_FILE} ({vocab_size} pieces + blank) and "
            f"{source} make {expected}; give the model's TDT durations as 'durations' in {CONFIG_FILE}"
        )
    return durations


def measure_encoder(encoder: ort.InferenceSession, n_mels: int, graph: str) -> tuple[int, int]:
    """The encoder's subsampling factor and the width of its output frames, measured by running it once on a
    batch of two zero inputs, one twice as long as the other (NeMo's export: ``outputs`` ``(batch, width,
    frames)`` and ``encoded_lengths``): the factor is the difference of their lengths, so that a subsampling
    that adds a frame (causal padding) measures as it is.

    Raises:
        ManifestError: it does not run, or its lengths give no whole subsampling factor.
    """
    frames = 256  # divisible by every FastConformer subsampling factor (4, 8, 16), and so is half of it
    features = np.zeros((2, n_mels, frames), dtype=np.float32)
    try:
        outputs, lengths = encoder.run(["outputs", "encoded_lengths"],
                                       {"audio_signal": features,
                                        "length": np.array([frames // 2, frames], dtype=np.int64)})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions here
        raise ManifestError(f"{graph}: the encoder does not run on {n_mels} mel bins ({exc})") from exc
    encoded = [int(n) for n in np.asarray(lengths).reshape(-1)]
    factor = subsampling_by_difference((frames // 2, frames), (encoded[0], encoded[1])) if len(encoded) == 2 else None
    if encoded[0] <= 0 or factor is None:
        raise ManifestError(f"{graph}: {frames // 2} and {frames} feature frames encode to {encoded} frames; cannot "
                            "infer subsampling")
    width = int(outputs.shape[1]) if np.ndim(outputs) == 3 else 0
    return factor, width


def check_frame_width(width: int, expected: int, encoder_graph: str, joint_graph: str) -> None:
    """Refuse an encoder whose frames are not as wide as the joint's encoder input (graphs of two models)."""
    if width != expected:
        raise ManifestError(f"{encoder_graph} outputs frames of {width} values, but {joint_graph} takes {expected}: "
                            "the two graphs come from different models")


def _subsampling(config: dict[str, Any], measured: int, graph: str) -> int:
    """The measured factor; a ``subsampling_factor`` in the config must agree with it (it decides every time)."""
    if "subsampling_factor" in config:
        declared = _int(config, "subsampling_factor", 0)
        if declared != measured:
            raise ManifestError(f"{CONFIG_FILE}: subsampling_factor is {declared}, but {graph} subsamples by "
                                f"{measured}")
    return measured


def _max_frames(path: Path, d_model: int) -> int:
    """Encoder frames the relative position table covers (its shape is ``(1, 2 * frames - 1, d_model)``)."""
    return max_frames_of(onnx_proto.read_model(path), d_model, path.name)


def max_frames_of(model: Any, d_model: int, name: str) -> int:
    """:func:`_max_frames` of a parsed encoder graph."""
    lengths = [
        int(s[1]) for s in onnx_proto.initializer_shapes(model)
        if len(s) == 3 and s[0] == 1 and s[2] == d_model and s[1] % 2 == 1 and s[1] > 1
    ]
    if not lengths:
        logger.info("%s: no position table found; assuming %d encoder frames at most", name, DEFAULT_MAX_FRAMES)
        return DEFAULT_MAX_FRAMES
    return (max(lengths) + 1) // 2


def parakeet_features(n_mels: int) -> tuple[FeatureSpec, FeatureExtractor]:
    """Parakeet's documented preprocessing with ``n_mels`` mel bins (see the module docstring)."""
    spec = FeatureSpec(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, window="hann",
        n_mels=n_mels, preemph=PREEMPH, mag_power=2.0, log=True, log_zero_guard_type="add",
        log_zero_guard_value=LOG_ZERO_GUARD, normalize="per_feature", exact_pad=False, pad_value=0.0,
        window_stride=HOP_LENGTH / SAMPLE_RATE, arrays_file="",
    )
    extractor = FeatureExtractor(
        spec=spec,
        window=_read_only(hann_window(WIN_LENGTH)),
        filterbank=_read_only(slaney_mel_filterbank(SAMPLE_RATE, N_FFT, n_mels, MEL_FMIN, MEL_FMAX)),
    )
    return spec, extractor


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
    frames_width: int | None = None
    """Width of the frames ``projection`` takes when it is not ``d_model`` (a graph written by this project: the
    joint's width)."""
    max_frames: int | None = None
    """The encoder's limit recorded by a graph written by this project (``None``: any number of frames)."""

    @property
    def written(self) -> bool:
        """Written by ``convert-model --layout onnx-asr`` (its frames are projected already, and ``max_frames``
        is recorded, not looked for in the encoder)."""
        return self.frames_width is not None


def labels_head(model: Any, targets: str, targets_type: int) -> tuple[list[Any], list[Any]]:
    """Nodes (and initializers) that turn ``labels`` ``(batch,)`` int64 into NeMo's ``targets`` ``(batch, 1)``
    of the graph's type (NeMo exports int32 targets)."""
    if targets_type == onnx_proto.INT64:
        return onnx_proto.squeeze_nodes(model, "Unsqueeze", _LABELS, targets, [1])
    nodes, initializers = onnx_proto.squeeze_nodes(model, "Unsqueeze", _LABELS, "labels_2d", [1])
    return [*nodes, onnx_proto.node("Cast", ["labels_2d"], [targets], to=targets_type)], initializers


def projection_part(model: Any, frames_input: str, encoder_side: str, name: str) -> bytes:
    """``frames_input`` ``(batch, d_model, frames)`` -> ``encoder_projected`` ``(batch, frames, joint_hidden)``:
    the joint's encoder projection, cut where the joint adds the two projections (``(batch, frames, 1, h)``)."""
    part = onnx_proto.extract(model, [frames_input], [encoder_side], name)
    tail, initializers = onnx_proto.squeeze_nodes(part, "Squeeze", encoder_side, _PROJECTED, [2])
    onnx_proto.rewire(part, [], tail, initializers, [],
                      [onnx_proto.value_info(_PROJECTED, onnx_proto.FLOAT, ["batch", "frames", None])])
    return onnx_proto.serialize(part)


def joint_part(model: Any, encoder_side: str, predictor_side: str, logits: str, name: str) -> bytes:
    """``encoder_frame``, ``predictor_output`` ``(rows, joint_hidden)`` -> ``logits`` ``(rows, outputs)``: the
    joint after its sum, with unsqueezes to the ``(batch, T, U, h)`` shapes it was exported with."""
    part = onnx_proto.extract(model, [encoder_side, predictor_side], [logits], name)
    head: list[Any] = []
    initializers: list[Any] = []
    for source, target in ((_ENCODER_FRAME, encoder_side), (_PREDICTOR_OUTPUT, predictor_side)):
        nodes, tensors = onnx_proto.squeeze_nodes(part, "Unsqueeze", source, target, [1, 2])
        head += nodes
        initializers += tensors
    tail, tensors = onnx_proto.squeeze_nodes(part, "Squeeze", logits, _LOGITS, [1, 2])
    f32 = onnx_proto.FLOAT
    onnx_proto.rewire(
        part, head, tail, [*initializers, *tensors],
        [onnx_proto.value_info(_ENCODER_FRAME, f32, ["rows", None]),
         onnx_proto.value_info(_PREDICTOR_OUTPUT, f32, ["rows", None])],
        [onnx_proto.value_info(_LOGITS, f32, ["rows", None])],
    )
    return onnx_proto.serialize(part)


def split_decoder_joint(path: Path) -> DecoderJointParts:
    """Cut NeMo's ``decoder_joint`` graph where the joint adds the encoder and predictor projections
    (with protobuf alone: no ``onnx`` package).

    Raises:
        ManifestError: the graph is not NeMo's ``RNNTDecoderJoint`` export.
    """
    model = onnx_proto.read_model(path, external_data=True)
    onnx_proto.check_no_subgraphs(model, path.name)
    inputs = onnx_proto.graph_inputs(model)
    outputs = onnx_proto.graph_outputs(model)
    wanted_in = {"encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2"}
    wanted_out = {"outputs", "output_states_1", "output_states_2"}
    if not wanted_in <= set(inputs) or not wanted_out <= set(outputs):
        raise ManifestError(
            f"{path.name}: expected NeMo's decoder_joint inputs {sorted(wanted_in)} and outputs {sorted(wanted_out)}, "
            f"found {sorted(inputs)} and {sorted(outputs)}"
        )
    if len(onnx_proto.static_dims(outputs["outputs"])) == 2:
        cut = onnx_proto.metadata(model)
        if WRITTEN_ENCODER_FRAME not in cut or WRITTEN_PREDICTOR_OUTPUT not in cut:
            raise ManifestError(
                f"{path.name}: its logits are not NeMo's (batch, frames, labels, outputs), and it does not say "
                "where its joint begins (a decoder_joint written by an earlier convert-model --layout onnx-asr): "
                "load the directory it was written from, or write it again"
            )
        return _split_written(model, path.name, inputs, outputs, cut)
    predictor_inputs = {"targets", "input_states_1", "input_states_2"}
    encoder_side, predictor_side = onnx_proto.combine_inputs(model, {"encoder_outputs"}, predictor_inputs, path.name)
    f32 = onnx_proto.FLOAT

    projection = projection_part(model, "encoder_outputs", encoder_side, path.name)
    predictor = onnx_proto.extract(model, ["targets", "input_states_1", "input_states_2"],
                                   [predictor_side, "output_states_1", "output_states_2"], path.name)
    head, initializers = labels_head(predictor, "targets", onnx_proto.elem_type(inputs["targets"]))
    tail, tensors = onnx_proto.squeeze_nodes(predictor, "Squeeze", predictor_side, _PREDICTOR_OUTPUT, [1, 2])
    onnx_proto.rewire(
        predictor, head, tail, [*initializers, *tensors],
        [onnx_proto.value_info(_LABELS, onnx_proto.INT64, ["batch"])],
        [onnx_proto.value_info(_PREDICTOR_OUTPUT, f32, ["batch", None])],
    )
    joint = joint_part(model, encoder_side, predictor_side, "outputs", path.name)

    d_model, layers, hidden, num_outputs = _graph_sizes(path.name, inputs, outputs, "d_model")
    return DecoderJointParts(
        projection=projection, predictor=onnx_proto.serialize(predictor), joint=joint, d_model=d_model,
        layers=layers, hidden=hidden, num_outputs=num_outputs,
    )


def _graph_sizes(name: str, inputs: dict[str, Any], outputs: dict[str, Any], frames: str) -> tuple[int, int, int, int]:
    """The ``decoder_joint`` graph's static sizes: the width of ``encoder_outputs`` (``frames`` says what it is,
    for the error), the state's layers and size, and the logits' outputs.

    Raises:
        ManifestError: a size that is not static.
    """
    states = inputs["input_states_1"]
    sizes = (onnx_proto.static_dim(inputs["encoder_outputs"], 1), onnx_proto.static_dim(states, 0),
             onnx_proto.static_dim(states, -1), onnx_proto.static_dim(outputs["outputs"], -1))
    if any(size is None for size in sizes):
        raise ManifestError(f"{name}: graph sizes are not static ({frames}, state layers and size, outputs): {sizes}")
    width, layers, hidden, num_outputs = (int(s) for s in sizes if s is not None)
    return width, layers, hidden, num_outputs



def _split_written(model: Any, name: str, inputs: dict[str, Any], outputs: dict[str, Any],
                   metadata: dict[str, str]) -> DecoderJointParts:
    """:func:`split_decoder_joint` for a graph written by ``convert-model --layout onnx-asr``: its encoder frames
    are projected already (``encoder_outputs`` ``(batch, joint_hidden, 1)``; the encoder graph beside it
    projects them), its logits are ``(batch, outputs)``, and its metadata names the two tensors where the joint
    begins, the encoder's model dimension and its frame limit."""
    encoder_frame, predictor_output = metadata[WRITTEN_ENCODER_FRAME], metadata[WRITTEN_PREDICTOR_OUTPUT]
    try:
        d_model = int(metadata.get(WRITTEN_D_MODEL, ""))
        limit = metadata.get(WRITTEN_MAX_FRAMES, "none")
        max_frames = None if limit == "none" else int(limit)
    except ValueError:
        raise ManifestError(f"{name}: its metadata's d_model or max_frames is not a number") from None
    if d_model < 1 or (max_frames is not None and max_frames < 1):
        raise ManifestError(f"{name}: its metadata's d_model ({d_model}) or max_frames ({max_frames}) is not positive")
    f32 = onnx_proto.FLOAT
    joint_hidden, layers, hidden, num_outputs = _graph_sizes(name, inputs, outputs, "joint_hidden")
    projection = onnx_proto.extract(model, ["encoder_outputs"], [encoder_frame], name)
    for part in (projection.graph.node, projection.graph.initializer, projection.graph.input, projection.graph.output):
        del part[:]
    onnx_proto.rewire(projection, [], [onnx_proto.node("Transpose", ["encoder_outputs"], [_PROJECTED], perm=[0, 2, 1])],
                      [], [onnx_proto.value_info("encoder_outputs", f32, ["batch", joint_hidden, "frames"])],
                      [onnx_proto.value_info(_PROJECTED, f32, ["batch", "frames", joint_hidden])])
    predictor = onnx_proto.extract(model, ["targets", "input_states_1", "input_states_2"],
                                   [predictor_output, "output_states_1", "output_states_2"], name)
    head, initializers = labels_head(predictor, "targets", onnx_proto.elem_type(inputs["targets"]))
    onnx_proto.rewire(
        predictor, head, [onnx_proto.node("Identity", [predictor_output], [_PREDICTOR_OUTPUT])], initializers,
        [onnx_proto.value_info(_LABELS, onnx_proto.INT64, ["batch"])],
        [onnx_proto.value_info(_PREDICTOR_OUTPUT, f32, ["batch", None])],
    )
    joint = onnx_proto.extract(model, [encoder_frame, predictor_output], ["outputs"], name)
    onnx_proto.rewire(
        joint,
        [onnx_proto.node("Identity", [_ENCODER_FRAME], [encoder_frame]),
         onnx_proto.node("Identity", [_PREDICTOR_OUTPUT], [predictor_output])],
        [onnx_proto.node("Identity", ["outputs"], [_LOGITS])], [],
        [onnx_proto.value_info(_ENCODER_FRAME, f32, ["rows", None]),
         onnx_proto.value_info(_PREDICTOR_OUTPUT, f32, ["rows", None])],
        [onnx_proto.value_info(_LOGITS, f32, ["rows", None])],
    )
    return DecoderJointParts(
        projection=onnx_proto.serialize(projection), predictor=onnx_proto.serialize(predictor),
        joint=onnx_proto.serialize(joint), d_model=d_model, layers=layers, hidden=hidden, num_outputs=num_outputs,
        frames_width=joint_hidden, max_frames=max_frames,
    )


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


def vocab_tokenizer(pieces: Sequence[str], vocab_file: str = VOCAB_FILE) -> Tokenizer:
    """The engine's :class:`Tokenizer` over ``vocab.txt``'s pieces (no ``tokenizer.model`` in the layout).

    Raises:
        ManifestError: SentencePiece refuses the pieces (e.g. no ``<unk>``).
    """
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(sentencepiece_model(pieces))
    except (RuntimeError, OSError) as exc:
        raise ManifestError(f"{vocab_file}: SentencePiece cannot use these pieces ({exc})") from exc
    texts = tuple(processor.decode_pieces([piece]) for piece in pieces)
    return Tokenizer(processor=processor, pieces=tuple(pieces), texts=texts)
