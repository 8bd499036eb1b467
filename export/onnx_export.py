"""Export the encoder (with the joint's encoder projection), the predictor and the joint to ONNX."""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from parakeet_runtime.engine.model.manifest import EncoderExport

from .graph_forwards import export_forwards
from .position_table import DEFAULT_FRAMES, tabulate_positions

logger = logging.getLogger(__name__)

OPSET = 17
TWO_GB = 2_000_000_000


class EncoderGraph(nn.Module):
    """features ``(B, n_mels, T)``, lengths ``(B,)`` -> projected frames ``(B, T', H)``, lengths ``(B,)``."""

    def __init__(self, encoder: nn.Module, joint: nn.Module) -> None:
        super().__init__()
        self.encoder: Any = encoder
        self.joint: Any = joint

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, encoded_lengths = self.encoder.forward_for_export(audio_signal=features, length=feature_lengths)
        return self.joint.project_encoder(encoded.transpose(1, 2)), encoded_lengths


class PredictorGraph(nn.Module):
    """targets ``(B,)``, LSTM ``h``/``c`` ``(L, B, H)`` -> projected output ``(B, Hj)``, new ``h``, ``c``."""

    def __init__(self, decoder: nn.Module, joint: nn.Module) -> None:
        super().__init__()
        self.decoder: Any = decoder
        self.joint: Any = joint

    def forward(
        self, targets: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        output, state = self.decoder.predict(targets.unsqueeze(1), (h, c), add_sos=False, batch_size=None)
        projected = self.joint.project_prednet(output)
        return projected[:, 0, :], state[0], state[1]


class TablePredictorGraph(nn.Module):
    """The same step as :class:`PredictorGraph`, with the first LSTM layer's input side precomputed.

    A decoding step feeds one label, so the first layer's input gates ``embed(label) @ W_ih.T + b_ih`` can
    only take ``vocabulary + 1`` values: they are computed once here, into a table the graph indexes.
    Each step then reads one row of it instead of the embedding and the whole ``W_ih`` (6.5 MB of
    Parakeet's 28 MB of predictor weights; the step is bound by reading its weights). The first layer's
    cell is written out (PyTorch's gate order i, f, g, o and its sums: input gates, then the recurrent
    ones with ``b_hh``); the other layers stay one LSTM.
    """

    input_gates: torch.Tensor

    def __init__(self, joint: nn.Module, embed: nn.Embedding, lstm: Any) -> None:
        super().__init__()
        self.joint: Any = joint
        weight_ih: torch.Tensor = lstm.weight_ih_l0
        bias_ih: torch.Tensor = lstm.bias_ih_l0
        with torch.no_grad():
            table = functional.linear(embed.weight, weight_ih, bias_ih)
        self.register_buffer("input_gates", table.contiguous())
        self.weight_hh = nn.Parameter(lstm.weight_hh_l0.detach().clone(), requires_grad=False)
        self.bias_hh = nn.Parameter(lstm.bias_hh_l0.detach().clone(), requires_grad=False)
        self.rest: nn.LSTM | None = None
        if lstm.num_layers > 1:
            rest = nn.LSTM(lstm.hidden_size, lstm.hidden_size, num_layers=lstm.num_layers - 1)
            for layer in range(1, lstm.num_layers):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(rest, f"{kind}_l{layer - 1}").data.copy_(getattr(lstm, f"{kind}_l{layer}"))
            self.rest = rest.eval()

    def forward(
        self, targets: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gates = self.input_gates[targets] + functional.linear(h[0], self.weight_hh, self.bias_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c0 = torch.sigmoid(f) * c[0] + torch.sigmoid(i) * torch.tanh(g)
        h0 = torch.sigmoid(o) * torch.tanh(c0)
        if self.rest is None:
            output, h_out, c_out = h0, h0.unsqueeze(0), c0.unsqueeze(0)
        else:
            out, (h_rest, c_rest) = self.rest(h0.unsqueeze(0), (h[1:], c[1:]))
            output = out[0]
            h_out = torch.cat([h0.unsqueeze(0), h_rest], dim=0)
            c_out = torch.cat([c0.unsqueeze(0), c_rest], dim=0)
        return self.joint.project_prednet(output), h_out, c_out


def predictor_graph(decoder: Any, joint: nn.Module) -> nn.Module:
    """:class:`TablePredictorGraph` where the prediction network is NeMo's plain LSTM stack (no
    normalisation, projection or adapters), else :class:`PredictorGraph` (NeMo's own ``predict``)."""
    from nemo.collections.common.parts.rnn import LSTMDropout

    prediction = getattr(decoder, "prediction", None)
    embed = prediction["embed"] if prediction is not None and "embed" in prediction else None
    rnn = prediction["dec_rnn"] if prediction is not None and "dec_rnn" in prediction else None
    lstm = getattr(rnn, "lstm", None)
    plain_lstm = (
        type(rnn) is LSTMDropout
        and isinstance(lstm, nn.LSTM)
        and lstm.bias
        and not lstm.batch_first
        and not lstm.bidirectional
        and lstm.proj_size == 0
        and not (hasattr(decoder, "is_adapter_available") and decoder.is_adapter_available())
    )
    if isinstance(embed, nn.Embedding) and plain_lstm:
        return TablePredictorGraph(joint, embed, lstm)
    return PredictorGraph(decoder, joint)


class JointGraph(nn.Module):
    """projected encoder frame ``(B, Hj)``, projected predictor output ``(B, Hj)`` -> logits ``(B, K)``."""

    def __init__(self, joint: nn.Module) -> None:
        super().__init__()
        self.joint: Any = joint

    def forward(self, encoder_frame: torch.Tensor, predictor_output: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.joint.joint_after_projection(
            encoder_frame.unsqueeze(1), predictor_output.unsqueeze(1)
        )
        return logits[:, 0, 0, :]


@dataclass(frozen=True, eq=False)
class ExportModules:
    """Export-mode copies of a model's encoder, prediction network and joint (see :func:`prepare_for_export`)."""

    encoder: Any
    decoder: Any
    joint: Any

    def all(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.encoder, self.decoder, self.joint


@contextlib.contextmanager
def typecheck_disabled() -> Iterator[None]:
    """NeMo's process-wide type checking off for the block, back to what it was afterwards (also on error)."""
    from nemo.core.classes import typecheck
    from nemo.core.classes.common import is_typecheck_enabled

    previous = bool(is_typecheck_enabled())
    typecheck.set_typecheck_enabled(enabled=False)
    try:
        yield
    finally:
        typecheck.set_typecheck_enabled(enabled=previous)


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """``requires_grad`` off on every parameter for the block; each parameter's own flag back afterwards."""
    flags = [(param, param.requires_grad) for param in module.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _module_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s module tree that shares its parameter and buffer tensors (no second copy of the
    weights; nothing in the export writes to them): NeMo's export preparation swaps submodules and sets
    attributes in place, so it runs on the copy."""
    memo: dict[int, Any] = {id(tensor): tensor for tensor in (*module.parameters(), *module.buffers())}
    copied: nn.Module = copy.deepcopy(module, memo)
    return copied


@contextlib.contextmanager
def prepare_for_export(model: Any) -> Iterator[ExportModules]:
    """Export-mode copies of ``model``'s encoder, decoder and joint for the block: NeMo's type checks off, its
    export preparation (``_prepare_for_export``, ``replace_for_export``) applied to the copies, parameters
    frozen. ``model`` itself is left as it was (its modules, modes and flags; the weights are shared, unchanged),
    and so is NeMo's type checking, when the block ends, normally or not."""
    from nemo.core.classes.exportable import Exportable
    from nemo.utils.export_utils import replace_for_export

    with typecheck_disabled(), frozen_parameters(model):
        modules = ExportModules(*(_module_copy(m) for m in (model.encoder, model.decoder, model.joint)))
        for module in modules.all():
            module.eval()
            for sub in module.modules():
                if isinstance(sub, Exportable):
                    sub._prepare_for_export(noreplace=True)
            replace_for_export(module)
        yield modules


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic_axes: dict[str, dict[int, str]]) -> None:
    with torch.inference_mode():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def consolidate(path: Path, *, data_name: str, transform: Callable[[Any], object] | None = None) -> str | None:
    """Rewrite ``path`` so that its weights live inside it, or, above 2 GB, in ONE ``data_name`` file;
    ``transform`` may edit the loaded ``onnx.ModelProto`` first.

    Returns the external data file name, or ``None`` when the graph is self-contained.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    if transform is not None:
        transform(model)
    loose = {p for p in path.parent.iterdir() if p != path}
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size < TWO_GB:
        onnx.save_model(model, str(path))
        result = None
    else:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
        result = data_name
    for stale in loose - {path.parent / data_name}:
        if stale.is_file() and stale.suffix != ".onnx":
            stale.unlink()
    return result


@dataclass(frozen=True)
class ExportFacts:
    """What :func:`export_graphs` wrote, as the manifest records it."""

    predictor_layers: int
    predictor_hidden: int
    joint_hidden: int
    encoder_external_data: str | None
    """The encoder's external weights file (encoders over 2 GB), else ``None``."""
    encoder_export: EncoderExport


@dataclass(frozen=True, eq=False)
class GraphSpec:
    """One graph to export: the module, example inputs, and the ONNX names and dynamic axes."""

    file: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    export_forwards: bool = False
    """Trace with the encoder's export forwards (:mod:`.graph_forwards`)."""


def graph_specs(model: Any, modules: ExportModules) -> tuple[GraphSpec, GraphSpec, GraphSpec]:
    """The encoder (with the joint's encoder projection), predictor and joint graphs of ``modules``."""
    n_mels = int(model.preprocessor.featurizer.nfilt)
    layers, hidden = int(modules.decoder.pred_rnn_layers), int(modules.decoder.pred_hidden)
    joint_hidden = int(modules.joint.pred.out_features)
    encoder = GraphSpec(
        "encoder.onnx",
        EncoderGraph(modules.encoder, modules.joint).eval(),
        (torch.randn(2, n_mels, 241), torch.tensor([241, 200], dtype=torch.int64)),
        ("features", "feature_lengths"),
        ("encoder_projected", "encoded_lengths"),
        {"features": {0: "batch", 2: "frames"}, "feature_lengths": {0: "batch"},
         "encoder_projected": {0: "batch", 1: "encoded_frames"}, "encoded_lengths": {0: "batch"}},
        export_forwards=True,
    )
    predictor = GraphSpec(
        "predictor.onnx",
        predictor_graph(modules.decoder, modules.joint).eval(),
        (torch.tensor([0, 1], dtype=torch.int64), torch.zeros(layers, 2, hidden), torch.zeros(layers, 2, hidden)),
        ("targets", "h_in", "c_in"),
        ("predictor_projected", "h_out", "c_out"),
        {"targets": {0: "batch"}, "h_in": {1: "batch"}, "c_in": {1: "batch"},
         "predictor_projected": {0: "batch"}, "h_out": {1: "batch"}, "c_out": {1: "batch"}},
    )
    joint = GraphSpec(
        "joint.onnx",
        JointGraph(modules.joint).eval(),
        (torch.randn(2, joint_hidden), torch.randn(2, joint_hidden)),
        ("encoder_frame", "predictor_output"),
        ("logits",),
        {"encoder_frame": {0: "batch"}, "predictor_output": {0: "batch"}, "logits": {0: "batch"}},
    )
    return encoder, predictor, joint


def _export_graph(spec: GraphSpec, encoder: nn.Module, scratch: Path, out_dir: Path,
                  transform: Callable[[Any], object] | None, *, portable: bool = False) -> str | None:
    """Trace ``spec`` into its own folder under ``scratch``, consolidate it into ``out_dir``; returns the
    external data file's name, if any."""
    folder = scratch / spec.file.removesuffix(".onnx")
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s", spec.file)
    forwards = export_forwards(encoder, portable=portable) if spec.export_forwards else contextlib.nullcontext(0)
    with forwards as patched:
        logger.info("%s: %d modules with export forwards", spec.file, patched)
        _export(spec.module, spec.example_inputs, folder / spec.file, list(spec.input_names),
                list(spec.output_names), {name: dict(axes) for name, axes in spec.dynamic_axes.items()})
    data = consolidate(folder / spec.file, data_name=f"{spec.file}.data", transform=transform)
    shutil.move(str(folder / spec.file), str(out_dir / spec.file))
    if data is not None:
        shutil.move(str(folder / data), str(out_dir / data))
    return data


def export_graphs(
    model: Any, scratch: Path, out_dir: Path, *, position_table_frames: int = DEFAULT_FRAMES, portable: bool = False
) -> ExportFacts:
    """Export the three graphs into ``out_dir``; returns facts the manifest needs.

    The graphs come from export-mode copies of the model's modules (:func:`prepare_for_export`): ``model``
    and NeMo's type checking are as they were afterwards. The encoder's position projections become table
    lookups for inputs of up to ``position_table_frames`` encoder frames (0: none; :mod:`.position_table`).
    ``portable``: the encoder in standard ONNX operators only (``convert-model --target tensorrt``; :mod:`.portable`).

    Each graph is first written into its own folder under ``scratch`` (torch may scatter external
    data files there) and then consolidated into ``out_dir``.
    """
    with prepare_for_export(model) as modules:
        encoder_spec, predictor_spec, joint_spec = graph_specs(model, modules)
        exported: list[EncoderExport] = []

        def finish_encoder(graph: Any) -> None:  # count the fused attention layers, add the position tables
            fused = sum(node.op_type == "MultiHeadAttention" for node in graph.graph.node)
            layers, frames = tabulate_positions(graph, modules.encoder, position_table_frames)
            exported.append(EncoderExport(fused, layers, frames))

        encoder_data = _export_graph(encoder_spec, modules.encoder, scratch, out_dir, finish_encoder,
                                     portable=portable)
        for spec in (predictor_spec, joint_spec):  # (never near 2 GB; a data file would sit beside its graph)
            _export_graph(spec, modules.encoder, scratch, out_dir, None)
        return ExportFacts(
            predictor_layers=int(modules.decoder.pred_rnn_layers),
            predictor_hidden=int(modules.decoder.pred_hidden),
            joint_hidden=int(modules.joint.pred.out_features),
            encoder_external_data=encoder_data,
            encoder_export=exported[0],
        )
