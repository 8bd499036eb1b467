"""Int8 quantisation of the encoder, and how far its tokens agree with the fp32 directory's.

Only the encoder is quantised: dynamic int8 for the weights of all its MatMuls (the feed-forward,
attention and position projections and the pointwise convolutions, which hold nearly all of its FLOPs and
bytes), activations quantised on the fly. Weights are unsigned 8-bit with a scale and zero point per output
channel (:data:`WEIGHT_SCHEME`). Signed weights are ONNX Runtime's default, but on x86 CPUs without VNNI
(AVX2 only) its u8×s8 kernel adds pairs of products in saturating 16-bit lanes, so the same model gives
different tokens on different CPUs; u8×u8 products never saturate, so the int8 tokens do not depend on
which integer kernel the CPU has. On the tiny fixture models the two schemes agree with fp32 about equally
well (a long clip's drift decides it; benchmarks/README.md, "int8 token agreement"). Convolutions,
normalisation, the prediction network and the joint stay fp32: they are cheap, and the predictor and the
joint decide every token (an int8 predictor lost agreement on the fixtures).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from parakeet_runtime.engine import BatchingOptions, Engine
from parakeet_runtime.engine.manifest import MANIFEST_NAME, Manifest

from .errors import ConversionError

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


WEIGHT_SCHEME = "uint8 weights per output channel, activations uint8 per tensor"
"""How ``quantize_directory`` quantises the encoder's MatMul weights (recorded in the manifest)."""


def quantize_directory(fp32_dir: Path, out_dir: Path, manifest: Manifest) -> Manifest:
    """Write ``out_dir``: a copy of ``fp32_dir`` whose encoder is dynamically quantised to int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = manifest.encoder
    for item in fp32_dir.iterdir():
        if item.name not in (spec.file, spec.external_data, MANIFEST_NAME):
            shutil.copy2(item, out_dir / item.name)
    try:
        quantize_dynamic(
            model_input=str(fp32_dir / spec.file),
            model_output=str(out_dir / spec.file),
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QUInt8,
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )
    except Exception as exc:
        raise ConversionError(f"int8 quantisation failed: {type(exc).__name__}: {exc}") from exc
    quantized = replace(manifest, encoder=replace(spec, precision="int8", external_data=None))
    (out_dir / MANIFEST_NAME).write_text(quantized.to_json(), encoding="utf-8")
    return quantized


def token_agreement(fp32_dir: Path, int8_dir: Path, clips: Sequence[Path]) -> Agreement:
    """Decode ``clips`` with both directories and count where the tokens differ."""
    options = BatchingOptions(enabled=False)
    with Engine.load(fp32_dir, providers=["CPUExecutionProvider"], batching=options) as fp32, Engine.load(
        int8_dir, providers=["CPUExecutionProvider"], batching=options
    ) as int8:
        identical = edits = total = 0
        for clip in clips:
            a = [t.id for t in fp32.transcribe(clip).tokens]
            b = [t.id for t in int8.transcribe(clip).tokens]
            identical += a == b
            edits += _edit_distance(a, b)
            total += len(a)
    return Agreement(clips=len(clips), identical_clips=identical, reference_tokens=total, token_edits=edits)
