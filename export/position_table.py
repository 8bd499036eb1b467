"""Precomputed relative-position projections: a table lookup instead of a matrix product per layer.

Every FastConformer attention layer projects the relative position embeddings, ``linear_pos(pos_emb)``,
a ``(2T, d_model) x (d_model, d_model)`` product for an input of ``T`` encoder frames: about 7% of
Parakeet's encoder arithmetic. The embeddings are a fixed slice of NeMo's sinusoid buffer that depends
only on ``T`` (rows ``center - T`` to ``center + T`` of ``pos_enc.pe``), so the projection of every
input up to ``frames`` encoder frames is a slice of one table per layer, the projection of the
``2 * frames`` rows around the centre, computed here once with NeMo's own weights.

The export's attention forward appends one row to the embeddings (``graph_forwards.rel_shift`` never
selects its scores); the table gives the next row of the buffer there, the exported graph a copy of the
first: the selected scores are the same.

Each position MatMul becomes an ``If``: inputs of at most ``frames`` frames slice the table, longer ones
run the MatMul as before, so the graph still takes every length the model does. The tables are stored
with the other weights (``d_model * 8 * frames`` bytes per layer; memory-mapped by ONNX Runtime, so a run
only reads the rows its length needs).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = 1024
"""Encoder frames the tables cover by default: 82 s of audio at Parakeet's 80 ms per frame (41 s at
40 ms); 8 MB per layer at d_model 1024."""


def _position_window(encoder: Any, frames: int) -> tuple[Any, int] | None:
    """NeMo's position buffer rows (a tensor) for inputs of up to ``frames`` frames, and the frames they
    cover; ``None`` unless the encoder uses NeMo's ``RelPositionalEncoding`` (local attention's encoding
    gives other rows)."""
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionalEncoding

    pos_enc = getattr(encoder, "pos_enc", None)
    pe = getattr(pos_enc, "pe", None)
    if type(pos_enc) is not RelPositionalEncoding or pe is None or pe.dim() != 3 or pe.shape[0] != 1:
        return None
    center = int(pe.shape[1]) // 2 + 1  # NeMo's RelPositionalEncoding: rows center - T .. center + T - 2
    frames = min(frames, center - 1)
    if frames < 1:
        return None
    return pe[0, center - frames : center + frames].detach().float(), frames


def _position_projections(encoder: Any) -> dict[bytes, Any]:
    """The ``linear_pos`` weights of the encoder's full relative-position attention layers, keyed by the
    bytes of the transposed float32 weight (as the exported MatMul holds it)."""
    import torch
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionMultiHeadAttention

    projections: dict[bytes, torch.Tensor] = {}
    for module in encoder.modules():
        if type(module) is RelPositionMultiHeadAttention and isinstance(module.linear_pos, torch.nn.Linear):
            pos_weight = module.linear_pos.weight
            projections[np.ascontiguousarray(pos_weight.detach().float().numpy().T).tobytes()] = pos_weight
    return projections


def _shared_constants(frames: int) -> dict[str, np.ndarray]:
    """The scalars every lookup reads (added to the graph once)."""
    return {
        "position_table/frames": np.array([frames], dtype=np.int64),
        "position_table/rows": np.array([2 * frames], dtype=np.int64),
        "position_table/two": np.array([2], dtype=np.int64),
        "position_table/axis0": np.array([0], dtype=np.int64),
        "position_table/zero": np.array([0], dtype=np.int64),
    }


def _projection_weight(node: Any, initializers: dict[str, Any], projections: dict[bytes, Any],
                       shapes: set[tuple[int, ...]]) -> Any:
    """The ``linear_pos`` weight whose transpose is ``node``'s MatMul weight, else ``None``. Only weights of
    the projections' shape are turned into bytes to look them up."""
    from onnx import TensorProto, numpy_helper

    weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
    if weight is None or weight.data_type != TensorProto.FLOAT or tuple(weight.dims) not in shapes:
        return None
    return projections.get(numpy_helper.to_array(weight).tobytes())


def _lookup_nodes(node: Any, prefix: str) -> list[Any]:
    """The nodes that replace the position MatMul ``node``: an ``If`` that slices the table ``{prefix}/table``
    for an even number of position rows up to the table's, and runs ``node``'s MatMul otherwise."""
    from onnx import TensorProto, helper

    positions, covered, within, remainder, even = (
        f"{prefix}/{name}" for name in ("positions", "covered", "within", "remainder", "even"))
    half, start, end, sliced = (f"{prefix}/{name}" for name in ("half", "start", "end", "rows"))
    then_branch = helper.make_graph(
        [
            helper.make_node("Div", [positions, "position_table/two"], [half]),
            helper.make_node("Sub", ["position_table/frames", half], [start]),
            helper.make_node("Add", [start, positions], [end]),
            helper.make_node("Slice", [f"{prefix}/table", start, end, "position_table/axis0"], [sliced]),
            helper.make_node("Unsqueeze", [sliced, "position_table/axis0"], [f"{prefix}/lookup"]),
        ],
        f"{prefix}/lookup_branch", [], [helper.make_tensor_value_info(f"{prefix}/lookup", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("MatMul", list(node.input), [f"{prefix}/product"], name=node.name)],
        f"{prefix}/product_branch", [],
        [helper.make_tensor_value_info(f"{prefix}/product", TensorProto.FLOAT, None)],
    )
    return [
        helper.make_node("Shape", [node.input[0]], [positions], start=1, end=2),
        helper.make_node("LessOrEqual", [positions, "position_table/rows"], [within]),
        helper.make_node("Mod", [positions, "position_table/two"], [remainder]),
        helper.make_node("Equal", [remainder, "position_table/zero"], [even]),
        helper.make_node("And", [within, even], [covered]),
        helper.make_node("If", [covered], [node.output[0]], name=f"{prefix}/if",
                         then_branch=then_branch, else_branch=else_branch),
    ]


def tabulate_positions(model: Any, encoder: Any, frames: int = DEFAULT_FRAMES) -> tuple[int, int]:
    """Replace the position projections of the exported encoder graph ``model`` (an ``onnx.ModelProto``)
    by table lookups for inputs of up to ``frames`` encoder frames.

    Returns (layers replaced, frames covered: ``frames``, or fewer when NeMo's buffer is shorter).
    Only the layers of NeMo's full relative-position attention (``RelPositionMultiHeadAttention`` with
    ``RelPositionalEncoding``; not local attention) are candidates, and a MatMul is replaced only when its
    weight is exactly the transposed weight of one of their ``linear_pos`` layers, so other graphs, or a
    layout this does not know, are left as they are. The lookup also requires an even number of position
    rows (the export's ``2T``); any other input runs the MatMul.
    """
    import torch
    from onnx import numpy_helper

    window = _position_window(encoder, frames) if frames >= 1 else None
    if window is None:
        return 0, 0
    rows, frames = window
    projections = _position_projections(encoder)
    if not projections:
        return 0, 0
    shapes = {tuple(weight.shape[::-1]) for weight in projections.values()}  # as the MatMul holds them

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes = []
    replaced = 0
    for node in graph.node:
        linear_weight = _projection_weight(node, initializers, projections, shapes)
        if linear_weight is None:
            nodes.append(node)
            continue
        with torch.inference_mode():
            table = torch.nn.functional.linear(rows, linear_weight.float())
        prefix = f"position_table/{replaced}"
        graph.initializer.append(numpy_helper.from_array(table.numpy(), name=f"{prefix}/table"))
        nodes += _lookup_nodes(node, prefix)
        replaced += 1
    if replaced:
        graph.initializer.extend(
            numpy_helper.from_array(value, name=name) for name, value in _shared_constants(frames).items())
        del graph.node[:]
        graph.node.extend(nodes)
        logger.info("position projections of %d layers tabulated for inputs up to %d frames", replaced, frames)
    return replaced, frames if replaced else 0
