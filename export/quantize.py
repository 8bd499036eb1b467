"""Int8 quantisation of the encoder, and how far its tokens agree with the fp32 directory's.

Only the encoder is quantised: dynamic int8 for the weights of all its top-level MatMuls (the
feed-forward and attention projections and the pointwise convolutions, which hold nearly all of its FLOPs
and bytes), activations quantised on the fly to uint8 with a scale per row (each encoder frame its own, at a
fixed quantiser: :mod:`.row_scales`; ONNX Runtime's own is one range per tensor). The relative-position projections
stay fp32: tables
for inputs up to the converter's ``--position-table-frames``, a MatMul inside the ``If`` for longer ones (ONNX
Runtime's quantiser does not enter ``If`` branches), and the plain ``linear_pos`` MatMuls of a graph exported
without tables (they are left out of the quantiser by name). The weights have a scale (and for unsigned
weights a zero point) per output channel, stored in one of three ways (:data:`WEIGHT_SCHEMES`):

* ``uint8`` (the default): u8×u8 products, which ONNX Runtime widens to 16 bits, so they never saturate:
  the same tokens on every CPU, at the slowest integer rate.
* ``int7``: signed weights in [-64, 64] (ONNX Runtime's ``reduce_range``). x86 CPUs without VNNI (AVX2
  only) add pairs of u8×s8 products in saturating 16-bit lanes (``vpmaddubsw``); with 7-bit weights a pair
  cannot overflow, so the tokens are again the same on every CPU, and the faster u8×s8 kernels run. One
  bit less weight precision.
* ``int8``: signed weights over the full range. Exact on CPUs with int8 dot products (VNNI, AMX, ARM's
  ``sdot``), where it is the fastest and most precise; on an AVX2-only CPU pair sums can saturate, so the
  tokens there may differ from a VNNI CPU's.

``auto`` (the default) writes two encoder graphs: ``uint8`` weights in the manifest's ``encoder.file`` and
``int8`` weights in ``encoder.signed_int8_file``; the engine loads the signed one on CPUs with VNNI or AMX
(exact there, and the fastest) and the uint8 one elsewhere (exact there); ``SessionOptions(int8_weights=...)``
forces either. The price is a second int8 encoder: a quarter of the fp32 encoder's size on disk, where
re-quantising at load would need the fp32 graph (four times the size) and minutes at Parakeet size.

On the tiny fixture models, which scheme agrees best with fp32 flips with the build (a long clip's drift
decides it; benchmarks/README.md, "int8 token agreement"). Convolutions, normalisation, the prediction
network and the joint stay fp32: they are cheap, and the predictor and the joint decide every token (an
int8 predictor lost agreement on the fixtures).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConversionError

if TYPE_CHECKING:  # the CLI's argument parser reads the scheme table: this module stays light to import
    from parakeet_runtime.engine.model.manifest import Manifest
    from parakeet_runtime.engine.options import Int8Weights

logger = logging.getLogger(__name__)

PRECISIONS = ("int8",)


@dataclass(frozen=True)
class Agreement:
    """Token agreement of the quantised directory with the fp32 one on the probe clips."""

    clips: int
    identical_clips: int
    reference_tokens: int
    token_edits: int

    @property
    def token_agreement(self) -> float:
        """1 - token edit distance / fp32 tokens: 1.0 identical, 0.0 when the int8 tokens differ by as many
        edits as fp32 has tokens or more (an int8 model that runs away can emit many more)."""
        if not self.reference_tokens:
            return 1.0 if not self.token_edits else 0.0
        return max(0.0, 1.0 - self.token_edits / self.reference_tokens)


def _edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class WeightScheme:
    """How the encoder's MatMul weights are stored in an int8 directory."""

    name: str
    signed: bool
    reduce_range: bool
    """Signed weights in [-64, 64] instead of [-127, 127] (both symmetric), so that a u8×s8 pair sum (at
    most 2 × 255 × 64 = 32640) cannot saturate a 16-bit lane."""
    description: str


WEIGHT_SCHEMES: dict[str, WeightScheme] = {
    scheme.name: scheme
    for scheme in (
        WeightScheme("uint8", signed=False, reduce_range=False,
                     description="uint8 weights per output channel"),
        WeightScheme("int7", signed=True, reduce_range=True,
                     description="signed 7-bit weights ([-64, 64]) per output channel"),
        WeightScheme("int8", signed=True, reduce_range=False,
                     description="int8 weights per output channel (u8 x s8 pair sums can saturate on x86 CPUs "
                     "without VNNI)"),
    )
}
AUTO_WEIGHTS = "auto"
"""Both ``uint8`` and ``int8`` graphs in the directory; the engine picks one at load from the CPU's flags."""
DEFAULT_WEIGHTS = AUTO_WEIGHTS
WEIGHT_CHOICES = (AUTO_WEIGHTS, *WEIGHT_SCHEMES)
"""What ``convert-model --int8-weights`` accepts."""


def signed_int8_file(encoder_file: str) -> str:
    """The name of the signed-weights encoder beside ``encoder_file`` (``encoder.onnx`` -> ``encoder.int8w.onnx``)."""
    stem = encoder_file[: -len(".onnx")] if encoder_file.endswith(".onnx") else encoder_file
    return f"{stem}.int8w.onnx"


def weight_scheme(name: str) -> WeightScheme:
    """The scheme called ``name`` (``auto``: the uint8 scheme of its first graph); :class:`ConversionError`
    for an unknown one."""
    try:
        return WEIGHT_SCHEMES["uint8" if name == AUTO_WEIGHTS else name]
    except KeyError:
        raise ConversionError(
            f"unknown int8 weight scheme {name!r} (choose from: {', '.join(WEIGHT_CHOICES)})"
        ) from None


ACTIVATIONS = ("per-row-fixed", "per-row", "per-tensor", "per-row-centred")
"""How the quantised products' inputs are scaled (the first is the default): ``per-row-fixed`` (each row scaled on
its own, Swish's output shifted by its lower bound first, and a fixed quantiser: the same products alone and in any
padded batch, so the engine batches such a directory's requests; :func:`.row_scales.bound_rows`), ``per-row``
(each row scaled on its own before ONNX Runtime's quantiser, which takes one range over the whole batch:
:func:`.row_scales.scale_rows`; the default of directories converted 2026-12-05), ``per-tensor`` (ONNX Runtime's
dynamic quantisation as it is: directories converted before) or ``per-row-centred`` (each row centred and scaled to
[-1, 1], a fixed quantiser, batch-invariant too, a little slower: :func:`.row_scales.centre_rows`)."""



def activation_scaling(name: str) -> str:
    """``name`` if it is one of :data:`ACTIVATIONS`, else :class:`ConversionError`."""
    if name not in ACTIVATIONS:
        raise ConversionError(f"unknown int8 activation scaling {name!r} (choose from: {', '.join(ACTIVATIONS)})")
    return name


POSITION_PROJECTION = "linear_pos"
"""The name part of NeMo's relative-position projections (``.../self_attn/linear_pos/MatMul``), kept fp32."""


def _position_projections(model: Any) -> list[str]:
    """The top-level MatMuls that project the position embeddings (a graph exported without position tables)."""
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and POSITION_PROJECTION in node.name.split("/")]


def _quantize_encoder(source: Path, target: Path, scheme: WeightScheme, activations: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .row_scales import bound_rows, centre_rows, scale_rows

    try:
        excluded = _position_projections(onnx.load(str(source), load_external_data=False))
        quantize_dynamic(
            model_input=str(source),
            model_output=str(target),
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8 if scheme.signed else QuantType.QUInt8,
            per_channel=True,
            reduce_range=scheme.reduce_range,
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
        if activations != "per-tensor":  # ONNX Runtime's quantiser already scales per tensor
            model = onnx.load(str(target))
            if activations == "per-row":
                rows = scale_rows(model)
            else:
                rows, kept = (centre_rows if activations == "per-row-centred" else bound_rows)(model)
                if kept:
                    raise ConversionError(f"{kept} quantised inputs are not read by integer products with constant "
                                          f"weights alone, so they cannot be quantised {activations}; use "
                                          "--int8-activations per-row")
            onnx.save(model, str(target))
            logger.info("%s: %d quantised inputs scaled %s", target.name, rows, activations.replace("-", " "))
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"int8 quantisation failed: {type(exc).__name__}: {exc}") from exc


def quantize_directory(fp32_dir: Path, out_dir: Path, manifest: Manifest, weights: str = DEFAULT_WEIGHTS,
                       activations: str = ACTIVATIONS[0]) -> Manifest:
    """Write ``out_dir``: a copy of ``fp32_dir`` whose encoder is dynamically quantised to int8, its MatMul
    weights stored as ``weights`` (a key of :data:`WEIGHT_SCHEMES`, or ``auto``: uint8 and int8 graphs), its
    activations scaled as ``activations`` (:data:`ACTIVATIONS`)."""
    from parakeet_runtime.engine.model.manifest import MANIFEST_NAME, Quantization

    scheme = weight_scheme(weights)
    activation_scaling(activations)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = manifest.encoder
    signed_file = signed_int8_file(spec.file) if weights == AUTO_WEIGHTS else None
    for item in fp32_dir.iterdir():
        if item.name not in (spec.file, spec.external_data, MANIFEST_NAME, signed_file):
            shutil.copy2(item, out_dir / item.name)
    _quantize_encoder(fp32_dir / spec.file, out_dir / spec.file, scheme, activations)
    method = (f"onnxruntime quantize_dynamic of the encoder's MatMuls but the position projections: "
              f"{scheme.description}, activations uint8 {activations.replace('-', ' ')}")
    if signed_file is not None:
        signed = WEIGHT_SCHEMES["int8"]
        _quantize_encoder(fp32_dir / spec.file, out_dir / signed_file, signed, activations)
        method += f"; {signed_file}: {signed.description} (loaded on CPUs with VNNI or AMX)"
    quantized = replace(
        manifest,
        digests=(),  # the encoder changes; convert-model records the new directory's digests last
        encoder=replace(spec, precision="int8", external_data=None, signed_int8_file=signed_file),
        provenance=replace(manifest.provenance, quantization=Quantization(
            precision="int8", weights=scheme.name, method=method, activations=activations,
        )),
    )
    (out_dir / MANIFEST_NAME).write_text(quantized.to_json(), encoding="utf-8")
    return quantized


def token_agreement(
    fp32_dir: Path, int8_dir: Path, clips: Sequence[Path], *, int8_weights: Int8Weights = "auto"
) -> Agreement:
    """Decode ``clips`` with both directories and count where the tokens differ; ``int8_weights``: which of
    the int8 directory's graphs (``auto``: the one the engine picks on this CPU)."""
    from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions

    options = BatchingOptions(enabled=False)
    session = SessionOptions(int8_weights=int8_weights)
    with Engine.load(fp32_dir, providers=["CPUExecutionProvider"], batching=options) as fp32, Engine.load(
        int8_dir, providers=["CPUExecutionProvider"], batching=options, session=session
    ) as int8:
        identical = edits = total = 0
        for clip in clips:
            a = [t.id for t in fp32.transcribe(clip).tokens]
            b = [t.id for t in int8.transcribe(clip).tokens]
            identical += a == b
            edits += _edit_distance(a, b)
            total += len(a)
    return Agreement(clips=len(clips), identical_clips=identical, reference_tokens=total, token_edits=edits)
