"""``convert-model --target tensorrt``: a portable encoder graph, checked, and TensorRT engines where possible.

The default encoder export runs the full-context attention as ONNX Runtime's contrib
``com.microsoft.MultiHeadAttention`` (fast on ONNX Runtime's CPU and CUDA providers; TensorRT does not
parse it). The portable export traces the same arithmetic as standard ONNX operators (``MatMul``, ``Add``,
``Softmax``: :func:`.graph_forwards.export_forwards` with ``portable=True``), without position tables (their
``If`` nodes and large tables buy nothing on a GPU). The result is checked before it is written:

* only default-domain ONNX operators (no contrib domain), each in TensorRT's supported list
  (:mod:`.tensorrt_ops`, from onnx-tensorrt's operator matrix: no GPU or TensorRT needed);
* fp16-safe constants: no float constant is infinite, NaN or beyond fp16's range (±65504). NeMo #4590: masks
  built from huge constants break fp16 TensorRT engines. The attention mask adds ``MASK_VALUE`` (-10000,
  exactly representable in fp16) to masked scores, which are scaled dot products far below it in size;
* dynamic batch and time axes on the encoder's inputs and outputs;
* positions computed for any length (the full-attention export already does: ``computes_positions``).

Where the ``tensorrt`` package and a CUDA GPU are present, :func:`build_tensorrt_engines` also serialises an
fp16 engine of the encoder (TensorRT's own runtime, for the benchmarks; ``Engine.load(device="tensorrt")``
runs through ONNX Runtime's TensorRT provider, which builds and caches its own engines at the first load).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_runtime.engine.model.manifest import EncoderSpec

from .errors import ConversionError
from .tensorrt_ops import TENSORRT_MAX_OPSET, TENSORRT_ONNX_OPS

logger = logging.getLogger(__name__)

TARGETS = ("tensorrt",)
"""``convert-model --target`` values."""
PORTABLE = "portable"
"""``encoder.target`` of a portable encoder graph in the manifest."""
FP16_MAX = 65504.0
"""The largest finite float16."""
DEFAULT_DOMAINS = ("", "ai.onnx")


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph of its nodes (``If`` branches, loop bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def op_types(model: Any) -> dict[str, set[str]]:
    """The operators an ``onnx.ModelProto`` uses, subgraphs included, by domain (``""``: the default one)."""
    found: dict[str, set[str]] = {}
    for graph in _graphs(model.graph):
        for node in graph.node:
            domain = "" if node.domain in DEFAULT_DOMAINS else node.domain
            found.setdefault(domain, set()).add(node.op_type)
    return found


def contrib_ops(model: Any) -> list[str]:
    """``domain.op`` of every operator outside the default ONNX domain (e.g. ``com.microsoft.MultiHeadAttention``)."""
    return sorted(f"{domain}.{op}" for domain, ops in op_types(model).items() if domain for op in ops)


def unsupported_by_tensorrt(model: Any) -> list[str]:
    """Operators of the model that TensorRT's ONNX parser does not list (:mod:`.tensorrt_ops`): contrib ops and
    default-domain ops missing from the list."""
    default = op_types(model).get("", set())
    return sorted([*contrib_ops(model), *(op for op in default if op not in TENSORRT_ONNX_OPS)])


def _float_arrays(model: Any) -> Iterator[tuple[str, Any]]:
    """``(name, array)`` of every float initializer and float ``Constant``/``ConstantOfShape`` value."""
    from onnx import numpy_helper

    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            yield tensor.name, numpy_helper.to_array(tensor)
        for node in graph.node:
            if node.op_type in ("Constant", "ConstantOfShape"):
                for attribute in node.attribute:
                    if attribute.HasField("t"):
                        yield f"{node.op_type} {node.name or node.output[0]}", numpy_helper.to_array(attribute.t)
                    elif attribute.name == "value_float":
                        yield f"{node.op_type} {node.name or node.output[0]}", np.float32(attribute.f)
                    elif attribute.name == "value_floats":
                        yield f"{node.op_type} {node.name or node.output[0]}", np.asarray(attribute.floats)


def fp16_unsafe_constants(model: Any) -> list[str]:
    """Float constants that an fp16 engine cannot hold: infinite, NaN, or larger than :data:`FP16_MAX` in size
    (``name: value``)."""
    unsafe = []
    for name, array in _float_arrays(model):
        values = np.asarray(array)
        if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
            continue
        bad = ~np.isfinite(values) | (np.abs(values) > FP16_MAX)
        if np.any(bad):
            unsafe.append(f"{name}: {values[bad].flat[0]!r}")
    return unsafe


def static_axes(model: Any, axes: dict[str, tuple[int, ...]]) -> list[str]:
    """``name: axis`` of each of the given graph inputs' and outputs' ``axes`` that is a fixed number (or of a
    name the graph lacks): the batch and time axes must be dynamic."""
    problems = []
    values = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for name, wanted in axes.items():
        value = values.get(name)
        if value is None:
            problems.append(f"{name}: missing")
            continue
        dims = value.type.tensor_type.shape.dim
        for axis in wanted:
            if axis >= len(dims) or dims[axis].HasField("dim_value"):
                fixed = dims[axis].dim_value if axis < len(dims) else "absent"
                problems.append(f"{name}: axis {axis} is {fixed}")
    return problems


def check_portable(path: Path, spec: EncoderSpec) -> None:
    """Check the portable encoder graph at ``path`` (see the module docstring).

    Raises:
        ConversionError: a contrib operator, an operator TensorRT does not parse, an fp16-unsafe constant, a
            fixed batch or time axis, or an opset newer than TensorRT's.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    problems = []
    unsupported = unsupported_by_tensorrt(model)
    if unsupported:
        problems.append(f"operators TensorRT does not parse: {', '.join(unsupported)}")
    unsafe = fp16_unsafe_constants(model)
    if unsafe:
        problems.append(f"constants beyond fp16's range: {'; '.join(unsafe[:5])}")
    fixed = static_axes(model, {spec.input_features: (0, 2), spec.input_lengths: (0,), spec.output_frames: (0, 1),
                                spec.output_lengths: (0,)})
    if fixed:
        problems.append(f"axes that must be dynamic: {'; '.join(fixed)}")
    opset = next((int(o.version) for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
    if opset > TENSORRT_MAX_OPSET:
        problems.append(f"opset {opset} is newer than TensorRT's {TENSORRT_MAX_OPSET}")
    if problems:
        raise ConversionError(f"{path.name} is not a portable graph: " + "; ".join(problems))


@dataclass(frozen=True)
class TensorRTBuild:
    """What :func:`build_tensorrt_engines` built."""

    version: str
    """TensorRT's version."""
    gpu: str
    """The GPU the engines were built on (and are only valid for)."""
    engines: tuple[str, ...]
    """Engine files, relative to the model directory."""


def build_tensorrt_engines(out_dir: Path, spec: EncoderSpec, n_mels: int, max_frames: int) -> TensorRTBuild | None:
    """Serialise an fp16 TensorRT engine of the encoder into ``out_dir`` (``encoder.fp16.plan``) when the ``tensorrt``
    package and a CUDA GPU are here (``None`` otherwise: ``Engine.load(device="tensorrt")`` builds its engines
    at the first load). The optimisation profile covers batch 1..128 (optimum 32) and 1..``max_frames``
    feature frames (optimum a quarter of it).

    Raises:
        ConversionError: TensorRT is present but cannot parse or build the graph.
    """
    try:
        import tensorrt as trt
        import torch
    except ImportError:
        logger.info("tensorrt (or torch) is not installed: no TensorRT engines at conversion")
        return None
    if not torch.cuda.is_available():
        logger.info("no CUDA GPU: no TensorRT engines at conversion")
        return None
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(out_dir / spec.file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT cannot parse {spec.file}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    optimum = max(1, max_frames // 4)
    profile.set_shape(spec.input_features, (1, n_mels, 1), (32, n_mels, optimum), (128, n_mels, max_frames))
    profile.set_shape(spec.input_lengths, (1,), (32,), (128,))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConversionError(f"TensorRT could not build an engine of {spec.file}")
    engine = f"{Path(spec.file).stem}.fp16.plan"
    (out_dir / engine).write_bytes(bytes(serialized))
    gpu = str(torch.cuda.get_device_name(0))
    logger.info("TensorRT %s fp16 engine of %s built on %s", trt.__version__, spec.file, gpu)
    return TensorRTBuild(version=str(trt.__version__), gpu=gpu, engines=(engine,))


def engine_frames(max_frames: int | None, subsampling: int, default_seconds: float, frames_per_second: float) -> int:
    """Feature frames the TensorRT profile covers: the encoder's limit when it has one, else ``default_seconds``."""
    if max_frames is not None:
        return max_frames * subsampling
    return math.ceil(default_seconds * frames_per_second)
