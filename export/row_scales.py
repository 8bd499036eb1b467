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

:func:`centre_rows` goes one step further: each row is centred on the middle of its range and divided by half its
span, so that every row spans exactly [-1, 1], and the ``DynamicQuantizeLinear`` is replaced by a fixed quantiser
(``QuantizeLinear``, scale 1/127, zero point 128). Each row's integer codes then depend on that row alone: an
input gives the same int8 products (bit for bit) alone and in any padded batch, so an engine may batch such a
directory's requests. After each product the row is scaled back and the centre's share added,
``half · (xs @ W) + mid · colsum(W)`` (the column sums of the dequantised weights, computed here). On the demo model
its error against fp32 is a little lower again (0.89% against 1.07% per row; benchmarks/README.md, "int8 activations
centred per row"), for 7–14% more time than per row.

:func:`bound_rows` (the default, ``per-row-fixed``) gets most of that for no time: every row is quantised by a fixed
quantiser, so it is batch-invariant too, but only inputs bounded below by their activation are shifted. Swish (after
the feed-forward modules' first layer and in the convolution module) is at least -0.2785: its rows are shifted by
that bound and scaled to [0, 1], so all 256 levels fall on values that occur (a quantiser symmetric about zero would
leave nearly half of them to negative values Swish never reaches), and the shift's share of each product,
``bound · colsum(W)``, is the same for every row, so it joins the product's bias (no pass over the output). The
other inputs (LayerNorm's outputs, the attention's) are divided by their largest magnitude (codes 1..255 around 128,
the resolution ``scale_rows`` gets) and multiplied back. Where ``scale_rows`` quantises with ``DynamicQuantizeLinear``
(a pass for the range, a pass to quantise), a fixed ``QuantizeLinear`` is one pass. ONNX Runtime fuses an integer
product, its cast and its scaling into one kernel only behind a ``DynamicQuantizeLinear``, so both rewrites with a
fixed quantiser write that kernel (``MatMulIntegerToFloat``) themselves (:func:`_fuse_products`). On the demo model:
encoder error 0.93% against per row's 1.08% (benchmarks/README.md, "int8 activations per row, at a fixed
quantiser"); the same time as per row on the v2 and v3 shapes.
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


def _consumers(graph: Any) -> dict[str, list[Any]]:
    """The nodes that read each tensor."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _producers(graph: Any) -> dict[str, Any]:
    """The node that writes each tensor."""
    return {name: node for node in graph.node for name in node.output}


def _last_axis(model: Any, prefix: str) -> str | None:
    """The reductions' axes: from opset 18 an input (an initializer named after ``prefix``, added here), before
    an attribute (``None``)."""
    from onnx import numpy_helper

    if _opset(model) < 18:
        return None
    name = f"{prefix}_axes"
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), name))
    return name


def _reduce(op: str, source: str, output: str, name: str, axes: str | None) -> Any:
    """``op`` over the last axis, keeping it (``axes``: :func:`_last_axis`)."""
    from onnx import helper

    if axes is not None:
        return helper.make_node(op, [source, axes], [output], name=name, keepdims=1)
    return helper.make_node(op, [source], [output], name=name, keepdims=1, axes=[-1])


def _divided_by_magnitude(source: str, prefix: str, tiny: str, axes: str | None) -> list[Any]:
    """Nodes giving ``{prefix}_scale``, each row's largest magnitude ``max(max(x), -min(x), tiny)`` (two reads of
    the input, no ``|x|`` written), and ``{prefix}_input``, the rows divided by it."""
    from onnx import helper

    return [
        _reduce("ReduceMax", source, f"{prefix}_high", f"{prefix}/high", axes),
        _reduce("ReduceMin", source, f"{prefix}_low", f"{prefix}/low", axes),
        helper.make_node("Neg", [f"{prefix}_low"], [f"{prefix}_minus_low"], name=f"{prefix}/minus_low"),
        helper.make_node("Max", [f"{prefix}_high", f"{prefix}_minus_low", tiny], [f"{prefix}_scale"],
                         name=f"{prefix}/scale"),
        helper.make_node("Div", [source, f"{prefix}_scale"], [f"{prefix}_input"], name=f"{prefix}/normalise"),
    ]


def _splice(graph: Any, nodes: list[Any], after: dict[int, list[Any]]) -> None:
    """Make ``nodes`` the graph's nodes, each followed by the nodes ``after`` holds for it (by ``id``)."""
    ordered = []
    for node in nodes:
        ordered.append(node)
        ordered += after.get(id(node), [])
    del graph.node[:]
    graph.node.extend(ordered)


def scale_rows(model: Any) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto`` from ``quantize_dynamic``) in place so that each
    ``DynamicQuantizeLinear`` feeding integer products quantises its input row by row (the module's docstring);
    returns how many quantised inputs now have a scale per row."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers = _consumers(graph)
    tiny = f"{_PREFIX}_tiny"
    axes = _last_axis(model, _PREFIX)
    graph.initializer.append(numpy_helper.from_array(np.array(_TINY), tiny))
    nodes: list[Any] = []
    after: dict[int, list[Any]] = {}  # id(scale Mul) -> the Mul that scales its output row back
    count = skipped = 0
    for node in list(graph.node):
        muls = _product_scale_muls(node, consumers) if node.op_type == "DynamicQuantizeLinear" else None
        if muls is None:
            skipped += node.op_type == "DynamicQuantizeLinear"
            nodes.append(node)
            continue
        source, prefix = node.input[0], f"{_PREFIX}{count}"
        scale, normalised = f"{prefix}_scale", f"{prefix}_input"
        nodes += _divided_by_magnitude(source, prefix, tiny, axes)
        node.input[0] = normalised
        nodes.append(node)
        for index, mul in enumerate(muls):
            output = mul.output[0]
            mul.output[0] = f"{output}_{prefix}"
            after[id(mul)] = [helper.make_node("Mul", [mul.output[0], scale], [output],
                                               name=f"{prefix}/restore{index}")]
        count += 1
    if skipped:
        logger.warning("%d quantised inputs keep one scale per tensor (their readers are not integer products)",
                       skipped)
    _splice(graph, nodes, after)
    return count


_CENTRE = "row_centre"
CENTRED_SCALE = np.float32(1 / 127)
"""The fixed quantiser's step: a centred row's [-1, 1] becomes codes 1..255 around the zero point."""
CENTRED_ZERO_POINT = np.uint8(128)


def _weight_column_sums(product: Any, scale_mul: Any, initializers: dict[str, Any],
                        producers: dict[str, Any]) -> np.ndarray | None:
    """The column sums of ``product``'s dequantised weights (``MatMulInteger`` with constant weights and zero
    point, its scale ``Mul`` reading ``activation scale × weight scale``), or ``None`` if its inputs are not so."""
    from onnx import numpy_helper

    if product.input[1] not in initializers:
        return None
    weights = numpy_helper.to_array(initializers[product.input[1]]).astype(np.float64)
    zero_point: Any = 0.0
    if len(product.input) > 3 and product.input[3]:
        if product.input[3] not in initializers:
            return None
        zero_point = numpy_helper.to_array(initializers[product.input[3]]).astype(np.float64)
    scales = producers.get(scale_mul.input[1])
    if scales is None or scales.op_type != "Mul" or scales.input[1] not in initializers:
        return None
    weight_scale = numpy_helper.to_array(initializers[scales.input[1]]).astype(np.float64)
    if weights.ndim != 2:
        return None
    sums: np.ndarray = ((weights - zero_point) * weight_scale).sum(axis=0).astype(np.float32)
    return sums


def centre_rows(model: Any) -> tuple[int, int]:
    """Rewrite ``model`` (an ``onnx.ModelProto`` from ``quantize_dynamic``) in place so that each
    ``DynamicQuantizeLinear`` feeding integer products quantises its input centred row by row at a fixed scale
    (the module's docstring); returns how many quantised inputs are centred and how many are left per tensor
    (their readers are not integer products with constant weights)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers = _consumers(graph)
    producers = _producers(graph)
    initializers = {init.name: init for init in graph.initializer}
    axes = _last_axis(model, _CENTRE)
    constants = {f"{_CENTRE}_tiny": np.array(_TINY), f"{_CENTRE}_half": np.array(0.5, dtype=np.float32)}
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    nodes: list[Any] = []
    after: dict[int, list[Any]] = {}  # id(scale Mul) -> the nodes that scale its output back and add the centre
    centred = kept = 0
    codes: set[str] = set()
    for node in list(graph.node):
        muls = _product_scale_muls(node, consumers) if node.op_type == "DynamicQuantizeLinear" else None
        sums = None if muls is None else [
            _weight_column_sums(product, mul, initializers, producers)
            for product, mul in zip(consumers[node.output[0]], muls, strict=True)]
        if muls is None or sums is None or any(s is None for s in sums):
            kept += node.op_type == "DynamicQuantizeLinear"
            nodes.append(node)
            continue
        source, prefix = node.input[0], f"{_CENTRE}{centred}"
        # The quantiser's scale and zero point become constants under the names its readers already use.
        graph.initializer.extend([numpy_helper.from_array(np.array(CENTRED_SCALE), node.output[1]),
                                  numpy_helper.from_array(np.array(CENTRED_ZERO_POINT), node.output[2])])
        high, low, mid, half = (f"{prefix}_{part}" for part in ("high", "low", "mid", "half"))
        nodes += [
            _reduce("ReduceMax", source, high, f"{prefix}/high", axes),
            _reduce("ReduceMin", source, low, f"{prefix}/low", axes),
            helper.make_node("Add", [high, low], [f"{prefix}_sum"], name=f"{prefix}/sum"),
            helper.make_node("Mul", [f"{prefix}_sum", f"{_CENTRE}_half"], [mid], name=f"{prefix}/mid"),
            helper.make_node("Sub", [high, low], [f"{prefix}_span"], name=f"{prefix}/span"),
            helper.make_node("Mul", [f"{prefix}_span", f"{_CENTRE}_half"], [f"{prefix}_half_span"],
                             name=f"{prefix}/half_span"),
            helper.make_node("Max", [f"{prefix}_half_span", f"{_CENTRE}_tiny"], [half], name=f"{prefix}/half"),
            helper.make_node("Sub", [source, mid], [f"{prefix}_centred"], name=f"{prefix}/centre"),
            helper.make_node("Div", [f"{prefix}_centred", half], [f"{prefix}_input"], name=f"{prefix}/normalise"),
            helper.make_node("QuantizeLinear", [f"{prefix}_input", node.output[1], node.output[2]], [node.output[0]],
                             name=f"{prefix}/quantize"),
        ]
        codes.add(node.output[0])
        for index, (mul, column_sums) in enumerate(zip(muls, sums, strict=True)):
            assert column_sums is not None
            output = mul.output[0]
            mul.output[0] = f"{output}_{prefix}"
            graph.initializer.append(numpy_helper.from_array(column_sums, f"{prefix}_column_sums{index}"))
            after[id(mul)] = [
                helper.make_node("Mul", [mul.output[0], half], [f"{prefix}_scaled{index}"],
                                 name=f"{prefix}/restore{index}"),
                helper.make_node("Mul", [mid, f"{prefix}_column_sums{index}"], [f"{prefix}_centre{index}"],
                                 name=f"{prefix}/centre_share{index}"),
                helper.make_node("Add", [f"{prefix}_scaled{index}", f"{prefix}_centre{index}"], [output],
                                 name=f"{prefix}/add_centre{index}"),
            ]
        centred += 1
    _finish_fixed(model, nodes, after, codes, kept)
    return centred, kept


SWISH_MINIMUM = -0.2785
"""A bound below Swish/SiLU's least value (``x * sigmoid(x)`` reaches -0.27846 at x = -1.2785)."""
_SHAPE_ONLY = frozenset({"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"})
_BOUNDED = "row_bound"
_MS_DOMAIN = "com.microsoft"
BOUNDED_SCALE = np.float32(1 / 255)
"""The fixed quantiser of a one-sided input: its rows, shifted and scaled to [0, 1], become codes 0..255."""


def lower_bound(source: str, producers: dict[str, Any]) -> float | None:
    """The least value ``source`` can hold where it is (a reshaping of) an activation bounded below: Swish/SiLU
    (``x * sigmoid(x)``: :data:`SWISH_MINIMUM`), ``Relu``, ``Sigmoid``, ``Softplus`` (0); else ``None``."""
    node = producers.get(source)
    for _ in range(8):
        if node is None or node.op_type not in _SHAPE_ONLY:
            break
        node = producers.get(node.input[0])
    if node is None:
        return None
    if node.op_type in ("Relu", "Sigmoid", "Softplus"):
        return 0.0
    if node.op_type == "Mul" and len(node.input) == 2:
        made = [producers.get(name) for name in node.input]
        if any(m is not None and m.op_type == "Sigmoid" and m.input[0] in node.input and m.input[0] != m.output[0]
               for m in made):
            return float(SWISH_MINIMUM)
    return None


def _bias_initializer(output: str, width: int, consumers: dict[str, list[Any]],
                      initializers: dict[str, Any]) -> Any | None:
    """The ``(width,)`` float initializer an ``Add`` adds to ``output``, where that ``Add`` is ``output``'s only
    reader and the initializer is read by nothing else (so that it can be changed in place)."""
    readers = consumers.get(output, [])
    if len(readers) != 1 or readers[0].op_type != "Add" or len(readers[0].input) != 2:
        return None
    other: str | None = next((str(name) for name in readers[0].input if name != output), None)
    tensor = initializers.get(other) if other is not None else None
    if other is None or tensor is None or len(consumers.get(other, [])) != 1 or tensor.data_type != 1:  # FLOAT
        return None
    return tensor if int(np.prod(tensor.dims)) == width else None


def _finish_fixed(model: Any, nodes: list[Any], after: dict[int, list[Any]], codes: set[str], kept: int) -> None:
    """End a rewrite to fixed quantisers: ``nodes`` with ``after`` spliced in as the graph's nodes, the integer
    products reading ``codes`` fused (:func:`_fuse_products`), and the inputs ``kept`` per tensor said."""
    if kept:
        logger.warning("%d quantised inputs keep one scale per tensor (their readers are not integer products "
                       "with constant weights)", kept)
    _splice(model.graph, nodes, after)
    _fuse_products(model, codes)


def _fuse_products(model: Any, codes: set[str]) -> int:
    """Make each ``MatMulInteger -> Cast -> Mul(a_scale × w_scale)`` that reads one of ``codes`` (outputs of a fixed
    ``QuantizeLinear``) one ``MatMulIntegerToFloat`` (ONNX Runtime's contrib op, its kernel for a quantised input
    and float output); returns how many. ONNX Runtime fuses that chain itself only behind a
    ``DynamicQuantizeLinear``: behind a fixed quantiser the three ran as separate passes (on Parakeet's shape the
    integer products, a cast and a scaling: 0.46 s of a 60 s request against the fused 0.38 s)."""
    from onnx import helper

    graph = model.graph
    consumers = _consumers(graph)
    producers = _producers(graph)
    initializers = {init.name for init in graph.initializer}
    dropped: set[str] = set()  # the outputs of the casts and the scale products fused away
    scalings: set[str] = set()  # the outputs of the scaling Muls fused away: the fused nodes' outputs now
    fused = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMulInteger" or node.input[0] not in codes or len(node.input) < 3:
            continue
        casts = consumers.get(node.output[0], [])
        if len(casts) != 1 or casts[0].op_type != "Cast":
            continue
        scaled = consumers.get(casts[0].output[0], [])
        if len(scaled) != 1 or scaled[0].op_type != "Mul" or scaled[0].input[0] != casts[0].output[0]:
            continue
        scales = producers.get(scaled[0].input[1])
        if (scales is None or scales.op_type != "Mul" or any(name not in initializers for name in scales.input)
                or len(consumers.get(scales.output[0], [])) != 1):
            continue
        inputs = [node.input[0], node.input[1], scales.input[0], scales.input[1], node.input[2],
                  *(node.input[3:4] if len(node.input) > 3 else [])]
        fused_node = helper.make_node("MatMulIntegerToFloat", inputs, [scaled[0].output[0]], domain=_MS_DOMAIN,
                                      name=f"{node.name or node.output[0]}/to_float")
        graph.node[index].CopyFrom(fused_node)
        dropped.update({casts[0].output[0], scales.output[0]})
        scalings.add(scaled[0].output[0])
        fused += 1
    kept = [node for node in graph.node if node.output[0] not in dropped
            and not (node.op_type == "Mul" and node.output[0] in scalings)]
    del graph.node[:]
    graph.node.extend(kept)
    if fused and not any(o.domain == _MS_DOMAIN for o in model.opset_import):
        model.opset_import.add(domain=_MS_DOMAIN, version=1)
    return fused


def bound_rows(model: Any) -> tuple[int, int]:
    """Rewrite ``model`` (an ``onnx.ModelProto`` from ``quantize_dynamic``) in place so that each
    ``DynamicQuantizeLinear`` feeding integer products becomes a fixed quantiser of its input scaled row by row
    (the module's docstring): each row's integer codes depend on that row alone, so an input gives the same
    products alone and in any padded batch. An input bounded below by its activation (:func:`lower_bound`: Swish
    after the feed-forward modules' first layer and in the convolution module) is shifted by that bound and scaled
    to [0, 1] (codes 0..255, every level on values that occur); the shift's share of the product,
    ``bound · colsum(W)``, is the same for every row, so it is added to the product's bias (or by an ``Add`` where
    there is none). Any other input is divided by its largest magnitude (codes 1..255 around 128) and multiplied
    back after the product, as :func:`scale_rows` does. Returns how many quantised inputs were rewritten and how
    many are left per tensor (their readers are not integer products with constant weights)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers = _consumers(graph)
    producers = _producers(graph)
    initializers = {init.name: init for init in graph.initializer}
    axes = _last_axis(model, _BOUNDED)
    tiny = f"{_BOUNDED}_tiny"
    graph.initializer.append(numpy_helper.from_array(np.array(_TINY), tiny))
    nodes: list[Any] = []
    after: dict[int, list[Any]] = {}  # id(scale Mul) -> the nodes that scale its output back (and add the shift)
    rewritten = kept = 0
    codes: set[str] = set()
    for node in list(graph.node):
        muls = _product_scale_muls(node, consumers) if node.op_type == "DynamicQuantizeLinear" else None
        source = node.input[0] if muls is not None else ""
        bound = None if muls is None else lower_bound(source, producers)
        sums = None if muls is None or not bound else [  # the shift's share: only for a bound other than 0
            _weight_column_sums(product, mul, initializers, producers)
            for product, mul in zip(consumers[node.output[0]], muls, strict=True)]
        if muls is None or (sums is not None and any(s is None for s in sums)):
            kept += node.op_type == "DynamicQuantizeLinear"
            nodes.append(node)
            continue
        prefix = f"{_BOUNDED}{rewritten}"
        scale, high = f"{prefix}_scale", f"{prefix}_high"
        if bound is None:  # symmetric about zero: codes 1..255 around 128, as centre_rows quantises
            quantiser = (CENTRED_SCALE, CENTRED_ZERO_POINT)
            nodes += _divided_by_magnitude(source, prefix, tiny, axes)
        else:  # [bound, high] to [0, 1]: codes 0..255
            quantiser = (BOUNDED_SCALE, np.uint8(0))
            shifted = source
            if bound != 0.0:
                graph.initializer.append(numpy_helper.from_array(np.array(bound, dtype=np.float32),
                                                                 f"{prefix}_bound"))
                shifted = f"{prefix}_shifted"
                nodes.append(helper.make_node("Sub", [source, f"{prefix}_bound"], [shifted], name=f"{prefix}/shift"))
            nodes += [
                _reduce("ReduceMax", shifted, high, f"{prefix}/high", axes),
                helper.make_node("Max", [high, tiny], [scale], name=f"{prefix}/scale"),
                helper.make_node("Div", [shifted, scale], [f"{prefix}_input"], name=f"{prefix}/normalise"),
            ]
        # The quantiser's scale and zero point become constants under the names its readers already use.
        graph.initializer.extend([numpy_helper.from_array(np.array(quantiser[0]), node.output[1]),
                                  numpy_helper.from_array(np.array(quantiser[1]), node.output[2])])
        nodes.append(helper.make_node("QuantizeLinear", [f"{prefix}_input", node.output[1], node.output[2]],
                                      [node.output[0]], name=f"{prefix}/quantize"))
        codes.add(node.output[0])
        for index, mul in enumerate(muls):
            output = mul.output[0]
            mul.output[0] = f"{output}_{prefix}"
            restored = [helper.make_node("Mul", [mul.output[0], scale], [output], name=f"{prefix}/restore{index}")]
            shift = None if sums is None else sums[index]
            if shift is not None:
                share = (np.float32(bound) * shift).astype(np.float32)
                bias = _bias_initializer(output, share.size, consumers, initializers)
                if bias is not None:  # the shift's share joins the bias the graph already adds
                    values = numpy_helper.to_array(bias).astype(np.float32) + share.reshape(tuple(bias.dims))
                    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
                else:
                    restored[0].output[0] = f"{output}_{prefix}_restored"
                    graph.initializer.append(numpy_helper.from_array(share, f"{prefix}_share{index}"))
                    restored.append(helper.make_node("Add", [restored[0].output[0], f"{prefix}_share{index}"],
                                                     [output], name=f"{prefix}/add_share{index}"))
            after[id(mul)] = restored
        rewritten += 1
    _finish_fixed(model, nodes, after, codes, kept)
    return rewritten, kept
