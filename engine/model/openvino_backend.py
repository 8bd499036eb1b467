"""The encoder on OpenVINO (the optional extra ``parakeet-runtime[openvino]``), from the same ``encoder.onnx``.

OpenVINO reads the exported ONNX graph as it is (the fused attention and the position ``If`` included) and
compiles it for the CPU with dynamic batch and length, in ``fp32``, in ``bf16`` on CPUs with AVX-512 BF16 or AMX,
or in ``int8``: every product by a weight matrix gets int8 weights at load, one scale per output channel
(:func:`compress_weights`, in memory; no int8 directory needed), and the CPU plugin quantises those products'
activations at run time in groups of :data:`ACTIVATION_GROUP` values, each group with its own scale, and
multiplies in int8; everything else stays fp32. ONNX Runtime's int8 graphs take one scale per activation
tensor: the groups keep OpenVINO's results closer to fp32's (benchmarks/README.md).

One workaround: OpenVINO 2026.4's CPU plugin fuses the relative-position product of the
exported attention (``q @ pos^T``, a MatMul of two activations feeding the attention's bias) into something
that is wrong (max abs error ≈ 0.9 on encoder frames of magnitude 7, NaN at some lengths) beyond ≈ 200 encoder
frames, or with padding in a batch; in bf16 the fused attention's bias gives NaN at some lengths. Marking
those products and biases as model outputs keeps them unfused: the fp32 encoder frames then match ONNX
Runtime's to ≈ 4e-6, bf16's to ≈ 0.05 (tests/test_cpus.py). The fp32 fault was seen with heads of 24 and
36 dimensions (the fixtures, the demo model); with Parakeet's 128 the fused fp32 graph matches ONNX Runtime
to ≈ 7e-5 up to 750 encoder frames and in padded batches, runs up to 1.7× faster on long inputs and peaks
1.4–1.8 GB lower (benchmarks/README.md, "OpenVINO"), so fp32 encoders whose heads all have
:data:`FUSED_FP32_MIN_HEAD_SIZE` dimensions or more are compiled as they are; bf16 keeps the workaround at
every size (NaN in a padded batch of the Parakeet shape without it); ``int8``, which computes in fp32 around its
products, follows fp32's rule. Only the encoder runs here; the prediction network and the joint stay on ONNX
Runtime (they are small per-step graphs that OpenVINO would not speed up, and their exactness decides every
token).

``int8`` is refused on x86 CPUs without VNNI or AMX: OpenVINO 2026.4 compiles it there but cannot run its
products ("could not create a primitive descriptor" at the first run, seen with its oneDNN limited to AVX2 by
``ONEDNN_MAX_CPU_ISA``). Every precision runs once on silence at load, so that such a failure is a typed error
then, not in a request.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ManifestError
from ..options import Precision
from .cpu import cpu_name, this_cpu_has_bf16, x86_without_int8_dot_products

logger = logging.getLogger(__name__)

_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
"""OpenVINO's inference precision per engine precision: ``int8`` computes in fp32 around its int8 products."""
ACTIVATION_GROUP = 32
"""``int8``: activations are quantised at run time in groups of this many values along the reduction axis of each
product (OpenVINO's ``DYNAMIC_QUANTIZATION_GROUP_SIZE``), each group with its own scale."""


class OpenVinoEncoder:
    """A compiled encoder, run like an ONNX Runtime session (``run(output_names, feeds)``).

    Thread-safe: each concurrent ``run`` takes an infer request of its own from a pool (created on demand,
    returned after the run), and OpenVINO's compiled model is shared.
    """

    def __init__(self, path: Path, *, precision: Precision, threads: int | None,
                 inputs: Sequence[str], outputs: Sequence[str], mels: int) -> None:
        """Compile ``path`` for the CPU and run it once on :data:`WARM_UP_FRAMES` frames of silence of ``mels``
        features (``inputs``: the features' and lengths' names), so that what the CPU plugin cannot run fails
        here, not in a request.

        Raises:
            BackendUnavailableError: OpenVINO is not installed; ``bf16`` on a CPU without bfloat16; ``int8`` on
                an x86 CPU without int8 dot products (VNNI, AMX); the compiled graph does not run on this CPU.
            ManifestError: OpenVINO cannot read or compile the graph, or it lacks a named input or output.
        """
        try:
            import openvino
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend='openvino' needs OpenVINO: pip install 'parakeet-runtime[openvino]'") from exc
        if precision == "bf16" and not this_cpu_has_bf16():
            raise BackendUnavailableError(
                f"precision='bf16' needs a CPU with AVX-512 BF16 or AMX; this one ({cpu_name()}) has neither "
                "(use precision='fp32')")
        if precision == "int8" and x86_without_int8_dot_products():
            raise BackendUnavailableError(
                f"precision='int8' needs a CPU with int8 dot products (VNNI or AMX); this one ({cpu_name()}) has "
                "neither: OpenVINO's int8 products do not run there (use precision='fp32', or an int8 directory "
                "on ONNX Runtime)")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if precision == "int8":
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = ACTIVATION_GROUP
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = openvino.Core()
            model = core.read_model(str(path))
            if precision == "int8":
                compressed = compress_weights(model, openvino)
                logger.info("%s: %d matrix products with int8 weights", path.name, compressed)
            sizes = head_sizes(model)
            if needs_unfused_positions(sizes, precision):
                _keep_position_products(model)
            else:
                logger.info("%s: attention heads of %s dimensions in fp32: compiled without the position-product "
                            "workaround", path.name, sorted({s for s in sizes if s is not None}))
            self._compiled: Any = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises its own untyped exceptions here
            raise ManifestError(f"{path.name}: OpenVINO cannot compile this graph ({exc})") from exc
        present_in = {name for port in self._compiled.inputs for name in port.get_names()}
        present_out = {name for port in self._compiled.outputs for name in port.get_names()}
        for kind, names, present in (("input", inputs, present_in), ("output", outputs, present_out)):
            for name in names:
                if name not in present:
                    raise ManifestError(f"{path.name}: the graph has no {kind} {name!r:.80}; its {kind}s: "
                                        f"{', '.join(sorted(present))}")
        self.precision = precision
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        silence: dict[str, np.ndarray[Any, Any]] = {
            inputs[0]: np.zeros((1, mels, WARM_UP_FRAMES), dtype=np.float32),
            inputs[1]: np.array([WARM_UP_FRAMES], dtype=np.int64),
        }
        try:
            self.run(outputs, silence)
        except Exception as exc:  # OpenVINO raises its own untyped exceptions here
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailableError(f"{path.name}: OpenVINO compiled this graph in {precision} but cannot run "
                                          f"it on this CPU ({cpu_name()}): {reason[:300]}") from exc
        logger.info("encoder %s compiled by OpenVINO %s for the CPU in %s", path.name, openvino.__version__,
                    precision)

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray[Any, Any]],
            run_options: object = None) -> list[np.ndarray[Any, Any]]:
        """The outputs ``output_names`` for ``feeds`` (copies: later runs do not overwrite them);
        ``run_options`` (ONNX Runtime's) is ignored."""
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            results = request.infer(dict(feeds), share_inputs=False, share_outputs=True)
            return [np.array(results[name], copy=True) for name in output_names]
        finally:
            self._requests.put(request)


WARM_UP_FRAMES = 100
"""Feature frames (1 s at Parakeet's 10 ms hop) of the run at load that checks the compiled graph runs here."""


FUSED_FP32_MIN_HEAD_SIZE = 128
"""Smallest attention head size for which the fp32 graph is compiled without the workaround (measured at 128;
smaller heads unverified, so they keep it)."""


def head_sizes(model: Any) -> list[int | None]:
    """The head size of each ``ScaledDotProductAttention`` of an OpenVINO model (``None`` where not static)."""
    sizes: list[int | None] = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "ScaledDotProductAttention":
            continue
        shape = op.input(0).get_partial_shape()
        last = shape[shape.rank.get_length() - 1] if shape.rank.is_static else None
        sizes.append(last.get_length() if last is not None and last.is_static else None)
    return sizes


def needs_unfused_positions(sizes: Sequence[int | None], precision: Precision) -> bool:
    """Whether to keep the position products unfused: always in bf16, and in fp32 (also ``int8``, which computes
    in fp32 around its products) unless every attention's head size is known and at least
    :data:`FUSED_FP32_MIN_HEAD_SIZE` (no attention found: keep them)."""
    if precision == "bf16" or not sizes:
        return True
    return any(size is None or size < FUSED_FP32_MIN_HEAD_SIZE for size in sizes)


def int8_per_channel(weights: np.ndarray[Any, np.dtype[np.float32]], axis: int) -> tuple[
        np.ndarray[Any, np.dtype[np.int8]], np.ndarray[Any, np.dtype[np.float32]]]:
    """Symmetric int8 quantisation of a 2-D matrix with one scale per output channel (``axis``: the channels' axis):
    the int8 values (±127) and the scales, shaped to broadcast against them."""
    scales = (np.abs(weights).max(axis=1 - axis, keepdims=True) / 127.0).astype(np.float32)
    scales[scales == 0.0] = 1.0
    return np.clip(np.rint(weights / scales), -127, 127).astype(np.int8), scales


def compress_weights(model: Any, openvino: Any) -> int:
    """Give every ``MatMul`` of ``model`` by a constant 2-D fp32 matrix int8 weights (:func:`int8_per_channel`),
    in the form OpenVINO's CPU plugin runs as int8 products (an int8 constant, a conversion to fp32, a multiply by
    the scales); returns how many. With ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` the plugin quantises the activations
    per group at run time and multiplies in int8 (VNNI, AMX)."""
    ops = openvino.opset13
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        source = op.input(1).get_source_output().get_node()
        if source.get_type_name() != "Constant" or source.get_output_element_type(0) != openvino.Type.f32:
            continue
        weights = source.get_data()
        if weights.ndim != 2:
            continue
        transposed = bool(op.get_attributes().get("transpose_b", False))
        quantized, scales = int8_per_channel(weights, 0 if transposed else 1)
        restored = ops.multiply(ops.convert(ops.constant(quantized), openvino.Type.f32), ops.constant(scales))
        op.input(1).replace_source_output(restored.output(0))
        count += 1
    return count


def _keep_position_products(model: Any) -> None:
    """Mark each named MatMul of two activations (the exported attention's ``q @ pos^T`` products; the
    weights' MatMuls have a constant input, and the MatMuls OpenVINO makes of the fused attention have no
    tensor names), and the bias input of each ``ScaledDotProductAttention`` (OpenVINO's form of the fused
    attention), as outputs of ``model``, so that the CPU plugin does not fuse them (see the module's
    docstring)."""
    products = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "ScaledDotProductAttention" and len(op.inputs()) > 3:
            products.append(op.input(3).get_source_output())  # the bias: position scores + padding mask
        if op.get_type_name() != "MatMul" or not op.output(0).get_names():
            continue
        sources = {port.get_source_output().get_node().get_type_name() for port in op.inputs()}
        if not sources & {"Constant", "Convert"}:
            products.append(op.output(0))
    if products:
        model.add_outputs(products)
