"""Read, cut and join ONNX graphs with protobuf alone, without the ``onnx`` package.

ONNX files are protobuf messages (``onnx.proto``). ONNX Runtime depends on ``protobuf`` but does not
ship ``onnx``'s generated classes, so this module declares the part of ``onnx.proto`` the engine edits
(models, graphs, nodes, attributes, tensors, value infos and their types, with ``onnx.proto``'s field
numbers) in a descriptor pool of its own and lets protobuf build the message classes. Fields it does
not declare are kept as protobuf's unknown fields: a model parsed and serialised again is the same
message (unknown fields are written after the known ones, so the bytes may be in another order).

This is what loading other runtimes' layouts needs at run time (cutting small step graphs at the
joint's sum, gluing labels and squeezes on), so that a runtime-only install (onnxruntime, numpy,
protobuf) loads them. It does not check models: ONNX Runtime does, when it loads the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from ..errors import ManifestError
from .manifest import confined_file

FLOAT = 1
"""``TensorProto.DataType.FLOAT``."""
INT32 = 6
INT64 = 7
BOOL = 9

_GRAPH_ATTRIBUTES = (5, 10)
"""``AttributeProto.AttributeType`` GRAPH and GRAPHS (control flow: not cut here)."""

_PACKAGE = "parakeet_runtime.onnx_subset"

# message name -> fields (name, number, label, type, message type name or None); the numbers are onnx.proto's.
_O, _R = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_T = descriptor_pb2.FieldDescriptorProto
_SCHEMA: dict[str, list[tuple[str, int, int, int, str | None]]] = {
    "StringStringEntryProto": [("key", 1, _O, _T.TYPE_STRING, None), ("value", 2, _O, _T.TYPE_STRING, None)],
    "OperatorSetIdProto": [("domain", 1, _O, _T.TYPE_STRING, None), ("version", 2, _O, _T.TYPE_INT64, None)],
    "TensorProto": [
        ("dims", 1, _R, _T.TYPE_INT64, None),
        ("data_type", 2, _O, _T.TYPE_INT32, None),
        ("float_data", 4, _R, _T.TYPE_FLOAT, None),
        ("int32_data", 5, _R, _T.TYPE_INT32, None),
        ("int64_data", 7, _R, _T.TYPE_INT64, None),
        ("name", 8, _O, _T.TYPE_STRING, None),
        ("raw_data", 9, _O, _T.TYPE_BYTES, None),
        ("external_data", 13, _R, _T.TYPE_MESSAGE, "StringStringEntryProto"),
        ("data_location", 14, _O, _T.TYPE_INT32, None),
    ],
    "Dimension": [("dim_value", 1, _O, _T.TYPE_INT64, None), ("dim_param", 2, _O, _T.TYPE_STRING, None)],
    "TensorShapeProto": [("dim", 1, _R, _T.TYPE_MESSAGE, "Dimension")],
    "TensorTypeProto": [
        ("elem_type", 1, _O, _T.TYPE_INT32, None),
        ("shape", 2, _O, _T.TYPE_MESSAGE, "TensorShapeProto"),
    ],
    "TypeProto": [("tensor_type", 1, _O, _T.TYPE_MESSAGE, "TensorTypeProto")],
    "ValueInfoProto": [("name", 1, _O, _T.TYPE_STRING, None), ("type", 2, _O, _T.TYPE_MESSAGE, "TypeProto")],
    "AttributeProto": [
        ("name", 1, _O, _T.TYPE_STRING, None),
        ("f", 2, _O, _T.TYPE_FLOAT, None),
        ("i", 3, _O, _T.TYPE_INT64, None),
        ("s", 4, _O, _T.TYPE_BYTES, None),
        ("t", 5, _O, _T.TYPE_MESSAGE, "TensorProto"),
        ("ints", 8, _R, _T.TYPE_INT64, None),
        ("type", 20, _O, _T.TYPE_INT32, None),
    ],
    "NodeProto": [
        ("input", 1, _R, _T.TYPE_STRING, None),
        ("output", 2, _R, _T.TYPE_STRING, None),
        ("name", 3, _O, _T.TYPE_STRING, None),
        ("op_type", 4, _O, _T.TYPE_STRING, None),
        ("attribute", 5, _R, _T.TYPE_MESSAGE, "AttributeProto"),
        ("domain", 7, _O, _T.TYPE_STRING, None),
    ],
    "GraphProto": [
        ("node", 1, _R, _T.TYPE_MESSAGE, "NodeProto"),
        ("name", 2, _O, _T.TYPE_STRING, None),
        ("initializer", 5, _R, _T.TYPE_MESSAGE, "TensorProto"),
        ("input", 11, _R, _T.TYPE_MESSAGE, "ValueInfoProto"),
        ("output", 12, _R, _T.TYPE_MESSAGE, "ValueInfoProto"),
        ("value_info", 13, _R, _T.TYPE_MESSAGE, "ValueInfoProto"),
    ],
    "ModelProto": [
        ("ir_version", 1, _O, _T.TYPE_INT64, None),
        ("producer_name", 2, _O, _T.TYPE_STRING, None),
        ("graph", 7, _O, _T.TYPE_MESSAGE, "GraphProto"),
        ("opset_import", 8, _R, _T.TYPE_MESSAGE, "OperatorSetIdProto"),
        ("metadata_props", 14, _R, _T.TYPE_MESSAGE, "StringStringEntryProto"),
    ],
}
_ONEOFS = {("Dimension", "dim_value"), ("Dimension", "dim_param")}
_PACKED = {("TensorProto", "float_data"), ("TensorProto", "int32_data"), ("TensorProto", "int64_data")}


def _build_classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="parakeet_runtime_onnx_subset.proto", package=_PACKAGE,
                                              syntax="proto2")
    for message_name, fields in _SCHEMA.items():
        message = file.message_type.add(name=message_name)
        if any((message_name, f[0]) in _ONEOFS for f in fields):
            message.oneof_decl.add(name="value")
        for name, number, label, kind, type_name in fields:
            field = message.field.add(name=name, number=number, label=label, type=kind)
            if type_name is not None:
                field.type_name = f".{_PACKAGE}.{type_name}"
            if (message_name, name) in _ONEOFS:
                field.oneof_index = 0
            if (message_name, name) in _PACKED:
                field.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    descriptors = {name: pool.FindMessageTypeByName(f"{_PACKAGE}.{name}") for name in _SCHEMA}
    if hasattr(message_factory, "GetMessageClass"):  # protobuf 4.22 and later
        return {name: message_factory.GetMessageClass(d) for name, d in descriptors.items()}
    factory = message_factory.MessageFactory(pool)  # older protobuf
    return {name: factory.GetPrototype(d) for name, d in descriptors.items()}


_CLASSES = _build_classes()
ModelProto: Any = _CLASSES["ModelProto"]
NodeProto: Any = _CLASSES["NodeProto"]
TensorProto: Any = _CLASSES["TensorProto"]
ValueInfoProto: Any = _CLASSES["ValueInfoProto"]
AttributeProto: Any = _CLASSES["AttributeProto"]


def parse_model(data: bytes, name: str) -> Any:
    """A ``ModelProto`` from serialised bytes.

    Raises:
        ManifestError: the bytes are not an ONNX model.
    """
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise ManifestError(f"{name}: not an ONNX model ({exc})") from exc
    if not model.HasField("graph"):
        raise ManifestError(f"{name}: not an ONNX model (no graph)")
    return model


def read_model(path: Path, *, external_data: bool = False) -> Any:
    """A ``ModelProto`` read from a file. Its external data files are read into its initializers where
    ``external_data`` says (:func:`inline_external_data`: for graphs that are edited and loaded from bytes,
    which ONNX Runtime would resolve against the process's working directory), else only referred to.

    Raises:
        ManifestError: the file (or its external data) is not readable, or not an ONNX model.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path.name}: not readable ({exc})") from exc
    model = parse_model(data, path.name)
    if external_data:
        inline_external_data(model, path.parent, path.name)
    return model


def read_source(source: Path | bytes, name: str) -> Any:
    """A ``ModelProto`` from a graph file, with its external data read in (it is about to be edited and
    loaded from bytes), or from a serialised graph.

    Raises:
        ManifestError: as :func:`read_model` and :func:`parse_model`.
    """
    return read_model(source, external_data=True) if isinstance(source, Path) else parse_model(source, name)


_EXTERNAL = 1
"""``TensorProto.DataLocation.EXTERNAL``."""


def inline_external_data(model: Any, directory: Path, name: str) -> None:
    """Read the initializers' external data (``location`` relative to ``directory``, ``offset``, ``length``)
    into their ``raw_data``, in place: a model serialised afterwards is self-contained. Files outside
    ``directory`` (through ``..``, an absolute path or a symbolic link) are refused, as ONNX Runtime does.

    Raises:
        ManifestError: a reference outside ``directory``, to a missing file, or past its end.
    """
    root = directory.resolve()
    for tensor in model.graph.initializer:
        if tensor.data_location != _EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        label = f"{name}: initializer {tensor.name!r:.80}'s external data"
        target = confined_file(root, label, location) if location else None
        if target is None:
            raise ManifestError(f"{label} {location!r:.120} is not a file inside {directory}")
        try:
            size = target.stat().st_size
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else size - offset
            if offset < 0 or length < 0 or offset + length > size:
                raise ValueError(f"bytes {offset}..{offset + length} of a {size}-byte file")
            with target.open("rb") as file:
                file.seek(offset)
                tensor.raw_data = file.read(length)
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{label} {location!r:.120} cannot be read ({exc})") from exc
        del tensor.external_data[:]
        tensor.ClearField("data_location")


def opset(model: Any) -> int:
    """The model's default-domain opset version (0 when it imports none)."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def static_dims(value: Any) -> list[int | None]:
    """The dimensions of a value info: ``int`` where static, ``None`` where symbolic or unknown."""
    dims = value.type.tensor_type.shape.dim
    return [int(d.dim_value) if d.WhichOneof("value") == "dim_value" else None for d in dims]


def static_dim(value: Any, index: int) -> int | None:
    """Dimension ``index`` (negative: from the end) of a value info where it is static; ``None`` where it is
    symbolic, or the value has no such dimension (no declared shape, a lower rank)."""
    dims = static_dims(value)
    return dims[index] if -len(dims) <= index < len(dims) else None


def row_dim(value: Any) -> list[int | str | None]:
    """The first dimension of a value info, as :func:`value_info` takes it: static, named, or ``None`` where
    unnamed or where the value declares no shape."""
    dims = value.type.tensor_type.shape.dim[:1]
    return [(d.dim_param or None) if d.WhichOneof("value") != "dim_value" else int(d.dim_value) for d in dims] or [None]


def elem_type(value: Any) -> int:
    return int(value.type.tensor_type.elem_type)


def value_info(name: str, element: int, dims: Sequence[int | str | None] | None) -> Any:
    """A tensor value info; ``dims`` ``None`` leaves the rank unknown, a ``None`` dimension unnamed."""
    info = ValueInfoProto(name=name)
    tensor = info.type.tensor_type
    tensor.elem_type = element
    if dims is not None:
        shape = tensor.shape
        shape.SetInParent()
        for dim in dims:
            entry = shape.dim.add()
            if isinstance(dim, int):
                entry.dim_value = dim
            elif isinstance(dim, str):
                entry.dim_param = dim
    return info


def int64_tensor(name: str, values: Sequence[int]) -> Any:
    return TensorProto(name=name, data_type=INT64, dims=[len(values)], int64_data=list(values))


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attributes: int | Sequence[int]) -> Any:
    """A node of the default domain; attributes are ``int`` (INT) or sequences of ``int`` (INTS)."""
    made = NodeProto(op_type=op_type, input=list(inputs), output=list(outputs), name=f"{op_type}:{outputs[0]}")
    for key, value in attributes.items():
        if isinstance(value, int):
            made.attribute.append(AttributeProto(name=key, type=2, i=value))
        else:
            made.attribute.append(AttributeProto(name=key, type=7, ints=list(value)))
    return made


def squeeze_nodes(
    model: Any, op_type: str, source: str, target: str, axes: Sequence[int]
) -> tuple[list[Any], list[Any]]:
    """``Squeeze``/``Unsqueeze`` of ``source`` into ``target`` in this model's opset: (nodes, initializers)."""
    if opset(model) >= 13:
        axes_name = target + "/axes"
        return [node(op_type, [source, axes_name], [target])], [int64_tensor(axes_name, axes)]
    return [node(op_type, [source], [target], axes=list(axes))], []


def graph_inputs(model: Any) -> dict[str, Any]:
    """The graph's inputs that are not initializers, by name."""
    initializers = {t.name for t in model.graph.initializer}
    return {v.name: v for v in model.graph.input if v.name not in initializers}


def graph_outputs(model: Any) -> dict[str, Any]:
    return {v.name: v for v in model.graph.output}


def check_no_subgraphs(model: Any, name: str) -> None:
    """Refuse graphs with control flow (their subgraphs may read outer names this module does not track).

    Raises:
        ManifestError: a node with a graph attribute.
    """
    for item in model.graph.node:
        if any(a.type in _GRAPH_ATTRIBUTES for a in item.attribute):
            raise ManifestError(f"{name}: the graph has control flow ({item.op_type}); it cannot be cut here")


def extract(model: Any, inputs: Sequence[str], outputs: Sequence[str], name: str) -> Any:
    """The part of ``model`` that computes ``outputs`` from ``inputs`` (and its initializers), as a new model
    with those inputs and outputs. Inputs that are inner tensors become graph inputs typed from the graph's
    value infos where it has them, else float tensors of unknown shape.

    Raises:
        ManifestError: an output that needs a graph input not in ``inputs``, or a name the graph lacks.
    """
    graph = model.graph
    producers: dict[str, int] = {}
    for index, item in enumerate(graph.node):
        for produced in item.output:
            if produced:
                producers[produced] = index
    initializers = {t.name: t for t in graph.initializer}
    known_inputs = {v.name: v for v in graph.input}
    wanted_inputs = set(inputs)
    kept: set[int] = set()
    used_initializers: set[str] = set()
    pending = list(outputs)
    seen: set[str] = set()
    while pending:
        tensor = pending.pop()
        if tensor in seen or not tensor:
            continue
        seen.add(tensor)
        if tensor in wanted_inputs:
            continue
        if tensor in initializers:
            used_initializers.add(tensor)
            continue
        if tensor not in producers:
            source = "a graph input" if tensor in known_inputs else "not produced in the graph"
            raise ManifestError(f"{name}: {tensor!r} is {source}, outside the part from {sorted(inputs)}")
        index = producers[tensor]
        if index not in kept:
            kept.add(index)
            pending.extend(graph.node[index].input)
    missing = [i for i in inputs if i not in producers and i not in known_inputs]
    if missing:
        raise ManifestError(f"{name}: the graph has no tensor {missing[0]!r}")
    types = {v.name: v for v in [*graph.value_info, *graph.input, *graph.output]}
    part = ModelProto()
    part.CopyFrom(model)
    del part.metadata_props[:]
    new = part.graph
    del new.node[:]
    new.node.extend(graph.node[i] for i in sorted(kept))
    del new.initializer[:]
    new.initializer.extend(t for t in graph.initializer if t.name in used_initializers)
    del new.input[:]
    new.input.extend(_typed(types, i) for i in inputs)
    del new.output[:]
    new.output.extend(_typed(types, o) for o in outputs)
    del new.value_info[:]
    return part


def _typed(types: dict[str, Any], name: str) -> Any:
    if name in types and types[name].type.HasField("tensor_type"):
        info = ValueInfoProto()
        info.CopyFrom(types[name])
        return info
    return value_info(name, FLOAT, None)


def rename(model: Any, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere in the graph (node inputs and outputs, initializers, inputs, outputs)."""
    graph = model.graph
    for item in graph.node:
        item.input[:] = [mapping.get(n, n) for n in item.input]
        item.output[:] = [mapping.get(n, n) for n in item.output]
    for collection in (graph.initializer, graph.input, graph.output, graph.value_info):
        for entry in collection:
            entry.name = mapping.get(entry.name, entry.name)


def tensor_names(model: Any) -> set[str]:
    graph = model.graph
    names = {n for item in graph.node for n in (*item.input, *item.output) if n}
    return names | {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}


def prefix_names(model: Any, prefix: str, keep: Iterable[str] = ()) -> None:
    """Prefix every tensor and node name (but ``keep``), so that two graphs can be joined into one. Unnamed
    nodes stay unnamed (ONNX allows any number of them; prefixed, they would be duplicates)."""
    kept = set(keep)
    rename(model, {n: prefix + n for n in tensor_names(model) if n not in kept})
    for item in model.graph.node:
        if item.name:
            item.name = prefix + item.name


def rewire(model: Any, head: Sequence[Any], tail: Sequence[Any], initializers: Sequence[Any],
           new_inputs: Sequence[Any], new_outputs: Sequence[Any]) -> None:
    """Put glue around a graph: ``head`` nodes before its nodes, ``tail`` nodes after; graph inputs that a
    head node now produces are dropped, ``new_inputs`` put first; graph outputs that a tail node reads
    (or that ``new_outputs`` name) are dropped, ``new_outputs`` put first."""
    graph = model.graph
    produced = {n for item in head for n in item.output}
    nodes = [*head, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    kept_inputs = [v for v in graph.input if v.name not in produced]
    del graph.input[:]
    graph.input.extend([*new_inputs, *kept_inputs])
    replaced = {v.name for v in new_outputs} | {n for item in tail for n in item.input}
    kept_outputs = [v for v in graph.output if v.name not in replaced]
    del graph.output[:]
    graph.output.extend([*new_outputs, *kept_outputs])


def append_graph(model: Any, other: Any) -> None:
    """Add ``other``'s nodes and initializers to ``model`` (names must not collide: see
    :func:`prefix_names`); ``other``'s inputs must be tensors of ``model``. Outputs are left to the caller."""
    model.graph.node.extend(other.graph.node)
    model.graph.initializer.extend(other.graph.initializer)


def combine_inputs(model: Any, left: set[str], right: set[str], name: str) -> tuple[str, str]:
    """The two inputs of the one ``Add`` node whose operands depend on ``left``'s inputs alone and on
    ``right``'s inputs alone (the joint's sum of its encoder and predictor projections): (left side,
    right side).

    Raises:
        ManifestError: no such node, or more than one.
    """
    inputs = set(graph_inputs(model))
    depends: dict[str, frozenset[str]] = {n: frozenset({n}) for n in inputs}
    found = []
    for item in model.graph.node:
        sources = frozenset().union(*(depends.get(n, frozenset()) for n in item.input if n))
        for produced in item.output:
            depends[produced] = sources
        if item.op_type != "Add" or len(item.input) != 2:
            continue
        a, b = (depends.get(n, frozenset()) for n in item.input)
        if a and a <= left and b and b <= right:
            found.append((item.input[0], item.input[1]))
        elif b and b <= left and a and a <= right:
            found.append((item.input[1], item.input[0]))
    if len(found) != 1:
        raise ManifestError(
            f"{name}: expected one sum of the encoder and predictor projections in the joint, found {len(found)}"
        )
    return found[0]


def serialize(model: Any) -> bytes:
    data: bytes = model.SerializeToString()
    return data


def metadata(model: Any) -> dict[str, str]:
    return {entry.key: entry.value for entry in model.metadata_props}


def initializer_shapes(model: Any) -> list[list[int]]:
    """Shapes of the graph's initializers and of its ``Constant`` nodes' tensors."""
    shapes = [list(t.dims) for t in model.graph.initializer]
    for item in model.graph.node:
        if item.op_type == "Constant":
            shapes += [list(a.t.dims) for a in item.attribute if a.name == "value"]
    return shapes
