"""One activation scale per row for a dynamically quantised graph, instead of one per tensor.

ONNX Runtime's dynamic quantisation (``quantize_dynamic``) puts every quantised product's input through
``DynamicQuantizeLinear``: one uint8 scale and zero point for the whole tensor, every frame of the input (and of
every input in a padded batch) at once. One loud frame then sets the step for all the others: the quiet frames
of speech (pauses, soft consonants) keep few of their 256 levels.

:func:`scale_rows` gives each row (encoder frame) its own scale without another kernel: before the
``DynamicQuantizeLinear``, each row is divided by its largest magnitude, so every row spans the same range and
the tensor's one scale fits all of them; after each product (``MatMulInteger``, its ``Cast`` and its scale
``Mul``, which ONNX Runtime fuses into one op), the output row is multiplied back. In exact arithmetic the
result is the same product; in int8 each row is rounded at its own resolution. Measured on the bundled demo
model's held-out recordings (benchmarks/README.md, "int8 activations per row"): the int8 encoder's error
against fp32 falls by about a third; a 60 s request takes about 10% longer on the v3-shaped benchmark model
(each input is read twice more, and each product's row scale and bias add become passes of their own over its
output, where ONNX Runtime fused the bias add into the integer product before).

A quantised input whose products do not have that shape is left per tensor (and logged).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_PREFIX = "row_scale"
_TINY = np.float32(1e-30)
"""The smallest row scale: rows of zeros (padding) stay zeros instead of dividing by zero."""


def _opset(model: Any) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _product_scale_muls(quantize: Any, consumers: dict[str, list[Any]]) -> list[Any] | None:
    """The scale ``Mul`` ending each product that reads ``quantize``'s uint8 output (``MatMulInteger`` ->
    ``Cast`` -> ``Mul``), or ``None`` if any reader is something else."""
    muls = []
    for product in consumers.get(quantize.output[0], []):
        if product.op_type != "MatMulInteger" or product.input[0] != quantize.output[0]:
            return None
        casts = consumers.get(product.output[0], [])
        if len(casts) != 1 or casts[0].op_type != "Cast":
            return None
        scaled = consumers.get(casts[0].output[0], [])
        if len(scaled) != 1 or scaled[0].op_type != "Mul":
            return None
        muls.append(scaled[0])
    return muls or None


def _reduce(op: str, source: str, output: str, name: str, axes_input: bool) -> Any:
    """``op`` over the last axis, keeping it (from opset 18 the axes are an input, before an attribute)."""
    from onnx import helper

    if axes_input:
        return helper.make_node(op, [source, f"{_PREFIX}_axes"], [output], name=name, keepdims=1)
    return helper.make_node(op, [source], [output], name=name, keepdims=1, axes=[-1])


def scale_rows(model: Any) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto`` from ``quantize_dynamic``) in place so that each
    ``DynamicQuantizeLinear`` feeding integer products quantises its input row by row (the module's docstring);
    returns how many quantised inputs now have a scale per row."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tiny = f"{_PREFIX}_tiny"
    axes_input = _opset(model) >= 18  # ReduceMax takes its axes as an input from opset 18, before as an attribute
    if axes_input:
        graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{_PREFIX}_axes"))
    graph.initializer.append(numpy_helper.from_array(np.array(_TINY), tiny))
    nodes: list[Any] = []
    after: dict[int, Any] = {}  # id(scale Mul) -> the Mul that scales its output row back
    count = skipped = 0
    for node in list(graph.node):
        muls = _product_scale_muls(node, consumers) if node.op_type == "DynamicQuantizeLinear" else None
        if muls is None:
            skipped += node.op_type == "DynamicQuantizeLinear"
            nodes.append(node)
            continue
        source, prefix = node.input[0], f"{_PREFIX}{count}"
        scale, normalised = f"{prefix}_scale", f"{prefix}_input"
        # The largest magnitude of each row, max(max(x), -min(x)): two reads of the input, no |x| written.
        nodes += [
            _reduce("ReduceMax", source, f"{prefix}_high", f"{prefix}/high", axes_input),
            _reduce("ReduceMin", source, f"{prefix}_low", f"{prefix}/low", axes_input),
            helper.make_node("Neg", [f"{prefix}_low"], [f"{prefix}_minus_low"], name=f"{prefix}/minus_low"),
            helper.make_node("Max", [f"{prefix}_high", f"{prefix}_minus_low", tiny], [scale], name=f"{prefix}/scale"),
            helper.make_node("Div", [source, scale], [normalised], name=f"{prefix}/normalise"),
        ]
        node.input[0] = normalised
        nodes.append(node)
        for index, mul in enumerate(muls):
            output = mul.output[0]
            mul.output[0] = f"{output}_{prefix}"
            after[id(mul)] = helper.make_node("Mul", [mul.output[0], scale], [output], name=f"{prefix}/restore{index}")
        count += 1
    if skipped:
        logger.warning("%d quantised inputs keep one scale per tensor (their readers are not integer products)",
                       skipped)
    ordered = []
    for node in nodes:
        ordered.append(node)
        if id(node) in after:
            ordered.append(after[id(node)])
    del graph.node[:]
    graph.node.extend(ordered)
    return count
