"""int8 weights for the decoding graphs (prediction network and joint), made at load time.

Every decoding step reads all of the prediction network's and the joint's weights for one row of
activations: for Parakeet v3 that is about 42 MB of fp32 per emitted token (the LSTM's 2 × 13 MB minus the
first layer's input side, which the export turned into a table lookup; the joint's 8,198-row output
layer, 21 MB), so a step is bound by memory traffic, not arithmetic. This module rewrites those graphs so
that their matrix products read int8 weights instead: ONNX Runtime's ``MatMulNBits`` (8 bits, one scale and
zero point per block of :data:`BLOCK_SIZE` weights of an output row) at ``accuracy_level`` 4, which also
quantises the activations per block and multiplies in int8; the joint's output layer, whose int8 values only
rank its labels, goes through ``MatMulIntegerToFloat`` (one scale per label, each row of activations divided by
its largest magnitude and quantised at a fixed step), which is faster at the several frames a joint call scores.
A quarter of the bytes per step. Every row's values are its own: none depends on the other rows of a run (a
batch's other rows, the lookahead's other frames), so a batched search can give each row what it gets alone
(whether this machine's kernels sum a row alike at every batch size is checked at load: the engine's
``OnnxTdtModel.rows_decode_alike``).

What it rewrites, in any graph (the engine's step graph and predictor, other runtimes' layouts):

- ``MatMul`` by a 2-D float initializer, ``Gemm`` by one (``alpha = beta = 1``, ``transA = 0``; the bias
  becomes an ``Add``);
- a single-step ``LSTM`` (forward, default activations, no peepholes or clipping, initial states given):
  written out as one product of ``[x, h]`` by ``[W, R]`` and the cell's elementwise operations. The step
  graphs run it on one label per step; a ``Squeeze`` of the sequence axis makes a longer sequence an error,
  never a silently wrong result.

The joint's output layer (the product whose width is the joint's: labels and durations) keeps its argmaxes
exact in practice: the int8 product ranks the labels, the :data:`EXACT_TOP` best of them (bias included) are
scored again in fp32 from their own weight rows (a few kB per step), and the duration columns come from an
fp32 product of their few rows. The label the search picks is then fp32's whenever fp32's best label is among
int8's best :data:`EXACT_TOP` (the int8 error is a fraction of a percent of the logits' range); the other label
columns keep their int8 values (confidence scores read them: close, not equal, to fp32's).

With :class:`ChoiceOutputs` the graph ends in those choices instead of the logits: the label is the lowest label
index among the rescored best labels with the highest fp32 score, the duration the first best duration column, and
nothing full-width is assembled after the ranking product (no scatter of the rescored values, no concatenation,
no bias added to every column, no copy out). This is the logits' argmax, except where a label outside the best
:data:`EXACT_TOP` has an int8 value above every rescored score, or equal to it at a lower index (the logits would
pick that int8 value; the choices keep the rescored best), and in a row with a NaN score, which gets the blank (the
last label). Only where the layer's output (with its bias) reaches the logits output unchanged, only reshaped; the
graph also gives the joint's width (:attr:`ChoiceOutputs.width`) for the engine to check at load.

The prediction network's products have no such check: its int8 state drifts from fp32's step by step, so
tokens may differ where two labels' scores nearly tie. The engine uses this rewrite only where asked
(``SessionOptions.decoder_weights``), and its token agreement with fp32 is measured
(``benchmarks/precision_agreement.py``). Nothing is written to the model directory; the rewritten graph lives
in memory for the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import onnx_proto
from .cpu import x86_without_int8_dot_products

logger = logging.getLogger(__name__)

BLOCK_SIZE = 32
"""Weights per quantisation block along the reduction axis (one float scale and one zero point each)."""
_ACCURACY_LEVEL = 4
"""``MatMulNBits`` accuracy level 4: int8 activations and int8 products (levels 0–1 dequantise the
weights to fp32 on every run, which is slower than the fp32 product itself on CPU)."""
_MS_DOMAIN = "com.microsoft"
_UINT8 = 2
"""``TensorProto.DataType.UINT8``."""
_INT8 = 3
"""``TensorProto.DataType.INT8``."""
RANKING_LIMIT = 127
"""Range of the joint's int8 ranking weights where ONNX Runtime's u8×s8 products are exact."""
RANKING_LIMIT_SATURATING = 64
"""The range on x86 CPUs without VNNI or AMX: 2 × 255 × 64 fits the 16-bit lanes their kernels add pairs in."""
EXACT_TOP = 8
"""Labels of the joint's int8 logits scored again in fp32 at every step (see the module's docstring)."""
_PROOF_SLACK = 1.01
"""The proof's error bounds are taken this much larger (the bounds themselves are computed in fp32)."""
_PROOF_RELATIVE = 1e-5
"""Relative rounding the proof allows for the fp32 scaling, bias and sums of each compared value."""
_LSTM_ATTRIBUTES = frozenset({"hidden_size", "direction", "layout"})
"""LSTM attributes this rewrite understands; any other (activations, clip, input_forget) leaves the node."""


@dataclass(frozen=True)
class JointColumns:
    """The joint's logits: ``labels`` label columns (vocabulary and blank) first, then durations, ``width`` in all."""

    labels: int
    width: int


@dataclass(frozen=True)
class ChoiceOutputs:
    """Asks the rewrite to end the joint in its greedy choices instead of its logits: the graph output
    ``logits`` is replaced by ``label`` (the best label of each row) and ``duration`` (the index of its best
    duration column), int64 ``(rows,)`` each, computed from the int8 ranking and the fp32 rescoring alone (no
    full-width logits are assembled or copied out)."""

    logits: str
    label: str
    duration: str
    width: str
    """An int64 ``(1,)`` output: the joint's width the choices were made from (its columns, checked at load)."""
    proven: str | None = None
    """Also rank with a proof (:func:`checked_ranking_graph`): a bool ``(rows,)`` output, true where the label
    choice is provably the fp32 logits' argmax. ``None``: no proof asked (the int8 rewrite)."""


@dataclass(frozen=True)
class Rewritten:
    """A decoding graph with int8 products: its bytes and what was rewritten."""

    data: bytes
    products: int
    """``MatMul`` and ``Gemm`` nodes now reading int8 weights."""
    lstms: int
    """Single-step ``LSTM`` nodes written out over an int8 product."""
    fp32_bytes: int
    """Bytes of fp32 weights the rewritten products read before."""
    exact_top: int
    """Joint output layers whose best labels and durations are scored in fp32 (0 or 1)."""
    choices: bool = False
    """The graph ends in the joint's choices (:class:`ChoiceOutputs`), not its logits."""


def quantize_blocks(weights: npt.NDArray[np.float32], block_size: int = BLOCK_SIZE) -> tuple[
        npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Asymmetric uint8 quantisation of an ``(N, K)`` matrix (``N`` outputs, ``K`` reduction) in blocks of
    ``block_size`` along ``K`` (zero-padded at the end): ``MatMulNBits``' ``B`` ``(N, blocks, block_size)``,
    ``scales`` ``(N · blocks,)`` and ``zero_points`` ``(N · blocks,)``. Every block's range includes 0, so a
    zero weight (and the padding) is exact."""
    rows, depth = weights.shape
    blocks = -(-depth // block_size)
    padded = np.zeros((rows, blocks * block_size), dtype=np.float32)
    padded[:, :depth] = weights
    grouped = padded.reshape(rows, blocks, block_size)
    low = np.minimum(grouped.min(axis=-1), 0.0)
    high = np.maximum(grouped.max(axis=-1), 0.0)
    scale = ((high - low) / 255.0).astype(np.float32)
    scale[scale == 0.0] = 1.0
    zero = np.clip(np.rint(-low / scale), 0, 255)
    quantized = np.clip(np.rint(grouped / scale[..., None]) + zero[..., None], 0, 255).astype(np.uint8)
    return quantized, scale.reshape(-1), zero.astype(np.uint8).reshape(-1)


def dequantize_blocks(quantized: npt.NDArray[np.uint8], scales: npt.NDArray[np.float32],
                      zero_points: npt.NDArray[np.uint8], depth: int) -> npt.NDArray[np.float32]:
    """The ``(N, K)`` matrix that :func:`quantize_blocks`' output stands for (tests, error bounds)."""
    rows, blocks, block_size = quantized.shape
    values = (quantized.astype(np.float32) - zero_points.reshape(rows, blocks, 1)) * scales.reshape(rows, blocks, 1)
    result: npt.NDArray[np.float32] = values.reshape(rows, blocks * block_size)[:, :depth]
    return result


def _array(tensor: Any) -> npt.NDArray[np.float32] | None:
    """A float initializer's values (``None``: not float, or stored outside the graph)."""
    if tensor.data_type != onnx_proto.FLOAT or len(tensor.external_data) > 0:
        return None
    shape = tuple(int(d) for d in tensor.dims)
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype="<f4").reshape(shape).astype(np.float32)
    return np.asarray(tensor.float_data, dtype=np.float32).reshape(shape)


def _tensor(name: str, array: npt.NDArray[Any], data_type: int) -> Any:
    return onnx_proto.TensorProto(name=name, data_type=data_type, dims=list(array.shape),
                                  raw_data=np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


def _attributes(node: Any) -> dict[str, Any]:
    return {a.name: a for a in node.attribute}


class _Builder:
    """Collects the replacement nodes and initializers of one graph (names prefixed, so none collide)."""

    def __init__(self, model: Any, ranking_limit: int, choices: ChoiceOutputs | None = None,
                 joint_only: bool = False) -> None:
        self.model = model
        self.ranking_limit = ranking_limit
        self.choices = choices
        self.joint_only = joint_only
        """Rewrite the joint's output layer alone (the other products and LSTMs keep their fp32 nodes)."""
        self.scored = ""
        self.highest = ""
        self.durations = ""
        """The choices' rescored label scores (bias included), their highest, and the duration scores (for the
        proof)."""
        self.joint_result: str | None = None
        """The graph's tensor that holds the joint's output layer with its bias (``None``: a bias the rewrite
        could not fold; the choices would leave it out)."""
        self.initializers: list[Any] = []
        self.counter = 0
        self.fp32_bytes = 0
        self.exact_top = 0
        self.ranking_bounds: tuple[float, float, float, int] | None = None
        """For the proof (:func:`checked_ranking_graph`): the largest weight error of the ranking (half its largest
        scale), the largest L1 norm of a label's weights, the largest weight, and the reduction depth."""
        self.ranking_rows: tuple[str, str, str] = ("", "", "")
        """For the proof: the ranking's activation magnitudes (``|x|``, or ``x`` itself after a ``Relu``), its
        per-row divisor ``(..., 1)`` and its fixed step (scalar; times the divisor, each row's quantisation step)."""

    def name(self, base: str) -> str:
        self.counter += 1
        return f"int8_decoding/{self.counter}/{base}"

    def product(self, source: str, matrix: npt.NDArray[np.float32], output: str,
                block_size: int | None = None) -> Any:
        """``MatMulNBits`` of ``source`` ``(..., K)`` by an ``(N, K)`` matrix into ``output`` (blocks of
        ``block_size``, default :data:`BLOCK_SIZE`)."""
        block_size = block_size or BLOCK_SIZE
        quantized, scales, zeros = quantize_blocks(matrix, block_size)
        rows, depth = matrix.shape
        names = [self.name("B"), self.name("scales"), self.name("zero_points")]
        self.initializers += [_tensor(names[0], quantized, _UINT8), _tensor(names[1], scales, onnx_proto.FLOAT),
                              _tensor(names[2], zeros, _UINT8)]
        self.fp32_bytes += matrix.nbytes
        made = onnx_proto.node("MatMulNBits", [source, *names], [output], K=depth, N=rows, bits=8,
                               block_size=block_size, accuracy_level=_ACCURACY_LEVEL)
        made.domain = _MS_DOMAIN
        return made

    def ranking_product(self, source: str, matrix: npt.NDArray[np.float32], output: str,
                        bias: str | None = None, nonnegative: bool = False) -> list[Any]:
        """The nodes of ``source @ matrix.T`` into ``output`` (``source`` ``(..., K)``, ``matrix`` ``(N, K)``) with
        int8 weights, one scale per output row (symmetric), for the joint's output layer, whose int8 values only
        rank the labels. The activations are quantised row by row: each row divided by its largest magnitude,
        quantised at a fixed step (1/255 from 0 where ``nonnegative``, the output of a ``Relu``; 1/127 around 128
        otherwise), multiplied in ``MatMulIntegerToFloat`` and scaled back: a row's values never depend on the
        other rows of a run (the lookahead's other frames, a batch's other rows), so a batched search ranks as
        one row alone does. ONNX Runtime's quantised GEMM is faster here than ``MatMulNBits`` at the several
        frames a joint call scores (v3's 6 × 640 × 8,192 on an AMX Xeon, as ``DynamicQuantizeMatMul`` before
        2026-12-05: 129 µs against 207 µs, 424 µs in fp32; the v3 step graph runs as fast with this per-row chain:
        benchmarks/README.md, "int8 decoding in batches").
        Weights span ``±ranking_limit``: 127, or 64 on x86 CPUs without VNNI or AMX, whose u8×s8 kernels add
        pairs of products in 16-bit lanes (2 × 255 × 64 cannot saturate). ``bias``: an fp32 ``(N,)`` tensor
        added to the result."""
        limit = float(self.ranking_limit)
        largest = np.abs(matrix).max(axis=1)
        scales = (largest / limit).astype(np.float32)
        self.ranking_bounds = (float(scales.max()) / 2.0, float(np.abs(matrix).sum(axis=1).max()),
                               float(largest.max()), matrix.shape[1])
        scales[scales == 0.0] = 1.0
        quantized = np.clip(np.rint(matrix / scales[:, None]), -limit, limit).astype(np.int8)
        levels = 255.0 if nonnegative else 127.0
        step = self.constant("activation_step", np.array(1.0 / levels, np.float32), onnx_proto.FLOAT)
        zero = self.constant("activation_zero", np.array(0 if nonnegative else 128, np.uint8), _UINT8)
        nodes: list[Any] = []
        magnitudes = source
        if not nonnegative:
            made, magnitudes = self.node("Abs", [source], "magnitudes")
            nodes.append(made)
        largest_name = self.name("row_largest")
        nodes.append(self.reduce("ReduceMax", magnitudes, largest_name, keepdims=1))
        # A row of zeros is divided by the smallest normal float instead (it stays zeros).
        floor = self.constant("row_floor", np.array(np.finfo(np.float32).tiny, np.float32), onnx_proto.FLOAT)
        divisor, divisor_name = self.node("Max", [largest_name, floor], "row_divisor")
        scaled, scaled_name = self.node("Div", [source, divisor_name], "row_scaled")
        quantise, quantised_name = self.node("QuantizeLinear", [scaled_name, step, zero], "row_quantized")
        nodes += [divisor, scaled, quantise]
        self.ranking_rows = (magnitudes, divisor_name, step)
        names = [self.name("B"), self.name("scales")]
        self.initializers += [_tensor(names[0], np.ascontiguousarray(quantized.T), _INT8),
                              _tensor(names[1], scales, onnx_proto.FLOAT)]
        self.fp32_bytes += matrix.nbytes
        unscaled = self.name("row_product")
        made = onnx_proto.node("MatMulIntegerToFloat", [quantised_name, names[0], step, names[1], zero], [unscaled])
        made.domain = _MS_DOMAIN
        rescaled = output if bias is None else self.name("row_rescaled")
        nodes += [made, onnx_proto.node("Mul", [unscaled, divisor_name], [rescaled])]
        if bias is not None:
            nodes.append(onnx_proto.node("Add", [rescaled, bias], [output]))
        return nodes

    def constant(self, base: str, array: npt.NDArray[Any], data_type: int) -> str:
        name = self.name(base)
        self.initializers.append(_tensor(name, array, data_type))
        return name

    def node(self, op_type: str, inputs: list[str], base: str) -> tuple[Any, str]:
        output = self.name(base)
        return onnx_proto.node(op_type, inputs, [output]), output

    def joint_product(self, source: str, matrix: npt.NDArray[np.float32], bias: npt.NDArray[np.float32] | None,
                      output: str, labels: int, result: str | None, nonnegative: bool = False) -> list[Any]:
        """The joint's output layer ``source @ matrix.T`` (``matrix`` ``(width, K)``, ``bias`` added by the graph
        after it): int8 label columns with the best :data:`EXACT_TOP` of them (ranked with ``bias``) scored
        again in fp32, and fp32 duration columns; with :class:`ChoiceOutputs`, the choices instead.
        ``nonnegative``: ``source`` is a ``Relu``'s output (see :meth:`ranking_product`)."""
        approximate = self.name("approximate")
        label_bias = None if bias is None else self.constant("bias", bias[:labels], onnx_proto.FLOAT)
        # The choices read the ranking only through TopK: it may carry the bias itself. The logits keep it out
        # (the graph adds the bias to them after this layer).
        folded = self.choices is not None and label_bias is not None
        nodes = self.ranking_product(source, matrix[:labels], approximate, label_bias if folded else None,
                                     nonnegative=nonnegative)
        ranked = approximate
        if label_bias is not None and not folded:
            ranked = self.name("ranked")
            nodes.append(onnx_proto.node("Add", [approximate, label_bias], [ranked]))
        top = min(EXACT_TOP, labels)
        best = [self.name("best_values"), self.name("best")]
        nodes.append(onnx_proto.node("TopK", [ranked, self.constant("k", np.array([top], np.int64), onnx_proto.INT64)],
                                     best, axis=-1, largest=1, sorted=0))
        rows = self.constant("label_rows", np.ascontiguousarray(matrix[:labels]), onnx_proto.FLOAT)
        picked, picked_name = self.node("Gather", [rows, best[1]], "picked_rows")  # (..., top, K)
        nodes.append(picked)
        nodes += self.squeeze("Unsqueeze", source, self.name("frame"), -2)
        frame = nodes[-1].output[0]
        product, product_name = self.node("Mul", [frame, picked_name], "products")
        exact_name = self.name("exact")
        nodes += [product, self.reduce("ReduceSum", product_name, exact_name)]
        durations_name = self.name("durations")
        durations = self.constant("duration_rows", np.ascontiguousarray(matrix[labels:].T), onnx_proto.FLOAT)
        nodes.append(onnx_proto.node("MatMul", [source, durations], [durations_name]))
        self.exact_top += 1
        self.joint_result = result
        if self.choices is not None:
            nodes += self.choice_nodes(best[1], exact_name, label_bias, durations_name, bias, labels)
            if self.choices.proven is not None:
                nodes += self.proof_nodes(best[0], labels > top, top, matrix[labels:])
            return nodes
        scored_name = self.name("labels")
        nodes.append(onnx_proto.node("ScatterElements", [approximate, best[1], exact_name], [scored_name], axis=-1))
        nodes.append(onnx_proto.node("Concat", [scored_name, durations_name], [output], axis=-1))
        return nodes

    def choice_nodes(self, best: str, exact: str, label_bias: str | None, durations: str,
                     bias: npt.NDArray[np.float32] | None, labels: int) -> list[Any]:
        """The greedy choices from the rescored best labels and the fp32 duration columns: the label is the
        lowest label index among the best labels with the highest fp32 score (``numpy.argmax`` over full logits
        keeps the first of equal maxima too), the duration the first best duration column."""
        assert self.choices is not None
        nodes: list[Any] = []
        if label_bias is not None:
            picked_bias, picked_bias_name = self.node("Gather", [label_bias, best], "picked_bias")
            scored, exact = self.node("Add", [exact, picked_bias_name], "scored")
            nodes += [picked_bias, scored]
        highest = self.name("highest")
        self.scored = exact
        self.highest = highest
        nodes.append(self.reduce("ReduceMax", exact, highest, keepdims=1))
        tied, tied_name = self.node("Equal", [exact, highest], "tied")
        # A row without a highest score (NaN) gets the blank (the last label), never an index out of range.
        last = self.constant("last_label", np.array(labels - 1, np.int64), onnx_proto.INT64)
        candidates, candidates_name = self.node("Where", [tied_name, best, last], "candidates")
        chosen = self.name("chosen")
        nodes += [tied, candidates, self.reduce("ReduceMin", candidates_name, chosen)]
        flat = self.constant("flat", np.array([-1], np.int64), onnx_proto.INT64)
        nodes.append(onnx_proto.node("Reshape", [chosen, flat], [self.choices.label]))
        if bias is not None:
            biased = self.name("durations_biased")
            nodes.append(onnx_proto.node("Add", [durations, self.constant("duration_bias", bias[labels:],
                                                                           onnx_proto.FLOAT)], [biased]))
            durations = biased
        self.durations = durations
        duration_index = self.name("duration_index")
        nodes.append(onnx_proto.node("ArgMax", [durations], [duration_index], axis=-1, keepdims=0))
        nodes.append(onnx_proto.node("Reshape", [duration_index, flat], [self.choices.duration]))
        return nodes

    def proof_nodes(self, ranked_best: str, excluded: bool, top: int,
                    duration_rows: npt.NDArray[np.float32]) -> list[Any]:
        """The :attr:`ChoiceOutputs.proven` output: per row, whether the chosen label and duration are provably the
        argmaxes of the fp32 logits (see :func:`checked_ranking_graph`). ``ranked_best``: the ranking's ``top`` best
        values (bias included); ``excluded``: some labels are outside them; ``duration_rows``: the duration
        columns' weights."""
        assert self.choices is not None and self.choices.proven is not None and self.ranking_bounds is not None
        half_scale, widest, largest, depth = self.ranking_bounds
        nodes: list[Any] = []

        def op(op_type: str, inputs: list[str], base: str, **attributes: int) -> str:
            output = self.name(base)
            nodes.append(onnx_proto.node(op_type, inputs, [output], **attributes))
            return output

        def scalar(base: str, value: float) -> str:
            return self.constant(base, np.array(value, np.float32), onnx_proto.FLOAT)

        # The activations' quantisation step, row by row (ranking_product): the row's divisor times the fixed step
        # (an element is off by at most half of it; a whole step allows for the rounding of the division). Their L1
        # norm from the magnitudes the ranking took its divisor from.
        magnitudes, divisor, per_level = self.ranking_rows
        step = op("Mul", [divisor, per_level], "step")
        l1 = self.name("input_l1")
        nodes.append(self.reduce("ReduceSum", magnitudes, l1, keepdims=1))
        # Rounding of a fp32 dot product of `depth` terms, in the graph's logits and in the rescoring, for two labels.
        rounding = 4.0 * depth * 2.0**-23 * largest
        # |int8 value - fp32 value| <= half_scale * |x_hat|_1 + step * |w|_1, |x_hat|_1 <= |x|_1 + depth * step.
        error = op("Add", [op("Mul", [l1, scalar("per_l1", (half_scale + rounding) * _PROOF_SLACK)], "l1_part"),
                           op("Mul", [step, scalar("per_step", (half_scale * depth + widest) * _PROOF_SLACK)],
                              "step_part")], "error")
        tolerance = op("Mul", [l1, scalar("rounding", rounding * _PROOF_SLACK)], "tolerance")
        highest = self.highest
        relative = scalar("relative", _PROOF_RELATIVE)
        two = self.constant("two", np.array([2], np.int64), onnx_proto.INT64)
        # The best rescored label beats the runner-up among the rescored by more than rounding ...
        if top > 1:
            pair = op("TopK", [self.scored, two], "pair", axis=-1, largest=1, sorted=1)
            nodes[-1].output.append(self.name("pair_index"))
            runner_up = self.name("runner_up")
            nodes.append(self.reduce("ReduceMin", pair, runner_up, keepdims=1))
            lead = op("Sub", [highest, runner_up], "lead")
            needed = op("Add", [tolerance, op("Mul", [op("Abs", [highest], "size"), relative], "size_part")],
                        "needed")
            proven = op("Greater", [lead, needed], "clear")
        else:
            proven = op("Equal", [highest, highest], "clear")  # one label: nothing to beat (false where NaN)
        if excluded:  # ... and every label the ranking left out, at most its last best value plus the error
            last = self.name("last_ranked")
            nodes.append(self.reduce("ReduceMin", ranked_best, last, keepdims=1))
            gap = op("Sub", [highest, last], "gap")
            sizes = op("Add", [op("Abs", [highest], "high_size"), op("Abs", [last], "last_size")], "sizes")
            bound = op("Add", [op("Add", [error, tolerance], "bound_base"), op("Mul", [sizes, relative], "sizes_part")],
                       "bound")
            proven = op("And", [proven, op("Greater", [gap, bound], "beyond")], "proven_rows")
        if duration_rows.shape[0] > 1:  # ... and the best duration beats the next by more than their rounding
            best_two = op("TopK", [self.durations, two], "duration_pair", axis=-1, largest=1, sorted=1)
            nodes[-1].output.append(self.name("duration_pair_index"))
            first, second = self.name("duration_first"), self.name("duration_second")
            nodes += [self.reduce("ReduceMax", best_two, first, keepdims=1),
                      self.reduce("ReduceMin", best_two, second, keepdims=1)]
            duration_rounding = 4.0 * depth * 2.0**-23 * float(np.abs(duration_rows).max()) * _PROOF_SLACK
            duration_tolerance = op("Mul", [l1, scalar("duration_rounding", duration_rounding)], "duration_tolerance")
            margin = op("Add", [duration_tolerance, op("Mul", [op("Abs", [first], "duration_size"), relative],
                                                             "duration_size_part")], "duration_needed")
            clear = op("Greater", [op("Sub", [first, second], "duration_lead"), margin], "duration_clear")
            proven = op("And", [proven, clear], "proven_with_duration")
        flat = self.constant("flat", np.array([-1], np.int64), onnx_proto.INT64)
        nodes.append(onnx_proto.node("Reshape", [proven, flat], [self.choices.proven]))
        return nodes

    def reduce(self, op_type: str, source: str, target: str, keepdims: int = 0) -> Any:
        """``op_type`` (``ReduceSum``, ``ReduceMax``, ``ReduceMin``) over the last axis in the graph's opset
        (the axes became an input at opset 13 for ``ReduceSum``, at 18 for the others)."""
        moved = 13 if op_type == "ReduceSum" else 18
        if onnx_proto.opset(self.model) >= moved:
            axes = self.constant("axes", np.array([-1], np.int64), onnx_proto.INT64)
            return onnx_proto.node(op_type, [source, axes], [target], keepdims=keepdims)
        return onnx_proto.node(op_type, [source], [target], axes=[-1], keepdims=keepdims)

    def squeeze(self, op_type: str, source: str, target: str, axis: int = 0) -> list[Any]:
        """``Squeeze``/``Unsqueeze`` of ``source`` at ``axis`` into ``target`` in the graph's opset."""
        nodes, initializers = onnx_proto.squeeze_nodes(self.model, op_type, source, target, [axis])
        self.initializers += initializers
        return nodes


@dataclass(frozen=True)
class _Context:
    """What a rewriter may look at besides its node."""

    weights: dict[str, Any]
    """Initializers by name."""
    constants: dict[str, Any]
    """Tensors of ``Constant`` nodes by output name."""
    consumers: dict[str, list[Any]]
    """Nodes reading each tensor."""
    producers: dict[str, Any]
    """The node writing each tensor."""
    joint: JointColumns | None


def _bias_after(output: str, width: int, context: _Context) -> tuple[npt.NDArray[np.float32], str] | None:
    """The constant ``(width,)`` bias an ``Add`` adds to ``output`` when that ``Add`` is its only reader, and
    the ``Add``'s output."""
    readers = context.consumers.get(output, [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    others = [n for n in readers[0].input if n != output]
    if len(others) != 1 or others[0] not in context.weights:
        return None
    bias = _array(context.weights[others[0]])
    return (bias.reshape(-1), readers[0].output[0]) if bias is not None and bias.size == width else None


def _product(source: str, rows: npt.NDArray[np.float32], output: str, bias: npt.NDArray[np.float32] | None,
             context: _Context, builder: _Builder, result: str | None) -> list[Any] | None:
    """``source @ rows.T`` into ``output``: the joint's output layer when ``rows`` is as wide as the joint;
    ``result``: the graph's tensor that holds it with ``bias`` added (``None``: a bias that is not ``bias``).
    ``None``: the product stays as it is (another product where only the joint's output layer is rewritten)."""
    joint = context.joint
    if joint is not None and rows.shape[0] == joint.width and 0 < joint.labels < joint.width:
        writer = context.producers.get(source)
        nonnegative = writer is not None and writer.op_type == "Relu" and writer.domain in ("", "ai.onnx")
        return builder.joint_product(source, rows, bias, output, joint.labels, result, nonnegative)
    return None if builder.joint_only else [builder.product(source, rows, output)]


def _rewrite_matmul(node: Any, context: _Context, builder: _Builder) -> list[Any] | None:
    weights = context.weights
    if len(node.input) != 2 or node.input[1] not in weights:
        return None
    matrix = _array(weights[node.input[1]])
    if matrix is None or matrix.ndim != 2:
        return None
    bias, result = _bias_after(node.output[0], matrix.shape[1], context) or (None, node.output[0])
    return _product(node.input[0], np.ascontiguousarray(matrix.T), node.output[0], bias, context, builder, result)


def _rewrite_gemm(node: Any, context: _Context, builder: _Builder) -> list[Any] | None:
    weights = context.weights
    attributes = _attributes(node)
    if any(attributes[k].f != 1.0 for k in ("alpha", "beta") if k in attributes):
        return None
    if "transA" in attributes and attributes["transA"].i != 0:
        return None
    if len(node.input) < 2 or node.input[1] not in weights:
        return None
    matrix = _array(weights[node.input[1]])
    if matrix is None or matrix.ndim != 2:
        return None
    transposed = "transB" in attributes and attributes["transB"].i != 0
    rows = np.ascontiguousarray(matrix if transposed else matrix.T)
    if len(node.input) < 3 or not node.input[2]:
        return _product(node.input[0], rows, node.output[0], None, context, builder, node.output[0])
    bias = _array(weights[node.input[2]]) if node.input[2] in weights else None
    if bias is not None:
        bias = bias.reshape(-1) if bias.size == rows.shape[0] else None
    product = builder.name("product")
    add = onnx_proto.node("Add", [product, node.input[2]], [node.output[0]])
    result = node.output[0] if bias is not None else None
    made = _product(node.input[0], rows, product, bias, context, builder, result)
    return None if made is None else [*made, add]


def _rewrite_lstm(node: Any, context: _Context, builder: _Builder) -> list[Any] | None:
    """A one-step forward LSTM (ONNX gate order i, o, f, c) over one int8 product of ``[x, h]``."""
    weights = context.weights
    attributes = _attributes(node)
    if builder.joint_only or set(attributes) - _LSTM_ATTRIBUTES:
        return None
    if "direction" in attributes and attributes["direction"].s not in (b"forward", b""):
        return None
    if "layout" in attributes and attributes["layout"].i != 0:
        return None
    inputs = list(node.input) + [""] * (8 - len(node.input))
    x, w_name, r_name, b_name, sequence_lens, initial_h, initial_c, peepholes = inputs[:8]
    if sequence_lens or peepholes or not initial_h or not initial_c or w_name not in weights or r_name not in weights:
        return None
    w, r = _array(weights[w_name]), _array(weights[r_name])
    bias = _array(weights[b_name]) if b_name in weights else None
    if w is None or r is None or w.ndim != 3 or r.ndim != 3 or w.shape[0] != 1 or r.shape[0] != 1:
        return None
    if b_name and bias is None:
        return None
    hidden = r.shape[2]
    if r.shape[1] != 4 * hidden or w.shape[1] != 4 * hidden:
        return None
    nodes: list[Any] = []
    x0, h0, c0 = builder.name("x"), builder.name("h"), builder.name("c")
    nodes += builder.squeeze("Squeeze", x, x0)  # fails at run time on more than one step
    nodes += builder.squeeze("Squeeze", initial_h, h0)
    nodes += builder.squeeze("Squeeze", initial_c, c0)
    joined = builder.name("xh")
    concat = onnx_proto.node("Concat", [x0, h0], [joined], axis=1)
    nodes.append(concat)
    gates = builder.name("gates")
    nodes.append(builder.product(joined, np.concatenate([w[0], r[0]], axis=1), gates))
    if bias is not None:
        summed = bias.reshape(2, 4 * hidden).sum(axis=0).astype(np.float32)
        biased = builder.name("gates_biased")
        nodes.append(onnx_proto.node("Add", [gates, builder.constant("bias", summed, onnx_proto.FLOAT)], [biased]))
        gates = biased
    axis = builder.constant("axis", np.array([1], dtype=np.int64), onnx_proto.INT64)
    parts = []
    for index, activation in enumerate(("Sigmoid", "Sigmoid", "Sigmoid", "Tanh")):  # i, o, f, c
        start = builder.constant("start", np.array([index * hidden], dtype=np.int64), onnx_proto.INT64)
        end = builder.constant("end", np.array([(index + 1) * hidden], dtype=np.int64), onnx_proto.INT64)
        sliced, sliced_name = builder.node("Slice", [gates, start, end, axis], "gate")
        activated, activated_name = builder.node(activation, [sliced_name], "activated")
        nodes += [sliced, activated]
        parts.append(activated_name)
    i_gate, o_gate, f_gate, candidate = parts
    kept, kept_name = builder.node("Mul", [f_gate, c0], "kept")
    added, added_name = builder.node("Mul", [i_gate, candidate], "added")
    cell, cell_name = builder.node("Add", [kept_name, added_name], "cell")
    squashed, squashed_name = builder.node("Tanh", [cell_name], "squashed")
    hidden_out, hidden_name = builder.node("Mul", [o_gate, squashed_name], "hidden")
    nodes += [kept, added, cell, squashed, hidden_out]
    outputs = list(node.output) + [""] * (3 - len(node.output))
    y, y_h, y_c = outputs[:3]
    state_h = y_h or builder.name("y_h")
    nodes += builder.squeeze("Unsqueeze", hidden_name, state_h)
    if y:
        nodes += builder.squeeze("Unsqueeze", state_h, y)
    if y_c:
        nodes += builder.squeeze("Unsqueeze", cell_name, y_c)
    return nodes


def checked_ranking_graph(source: Path | bytes, name: str, joint: JointColumns, choices: ChoiceOutputs, *,
                          ranking_limit: int | None = None) -> Rewritten | None:
    """``source`` ending in the joint's choices (``choices``, whose ``proven`` must be set) with its fp32 weights,
    except that the joint's output layer ranks the labels in int8 first: the exact path's decoding, with a quarter
    of the output layer's weight traffic per step (for Parakeet v3, 5 MB instead of 21 MB).

    The best :data:`EXACT_TOP` labels of the ranking are scored again in fp32, and the graph proves, row by row,
    that the label it picks is the fp32 logits' argmax (``choices.proven``): the int8 value of every label differs
    from its fp32 value by at most ``s_w/2 * |x_q|_1 + s_x * |w|_1`` (``s_w`` the label's weight scale, ``s_x``
    the activations' quantisation step, ``x_q`` the quantised activations), so a label outside the best is below
    the last of them plus that bound; and the rescored scores themselves may differ from the logits' by the
    rounding of two fp32 dot products. A row is proven where the chosen label beats both by more than those bounds
    (and a relative allowance for the fp32 scaling, bias and sums), and its best duration (an fp32 product of the
    duration columns alone) the next by more than that rounding; rows with NaN, ties or near-ties are not, and
    their choices must be made again from the fp32 logits (the engine reruns those rows on the fp32 joint).
    ``None`` where the graph cannot end in proven choices (see :func:`int8_decoding_graph`)."""
    if choices.proven is None:
        raise ValueError("checked_ranking_graph needs ChoiceOutputs.proven")
    rewritten = int8_decoding_graph(source, name, joint, ranking_limit=ranking_limit, choices=choices,
                                    joint_only=True)
    return rewritten if rewritten is not None and rewritten.choices else None


def int8_decoding_graph(source: Path | bytes, name: str, joint: JointColumns | None = None, *,
                        ranking_limit: int | None = None, choices: ChoiceOutputs | None = None,
                        joint_only: bool = False) -> Rewritten | None:
    """``source`` with int8 products (see the module's docstring), or ``None`` when nothing in it is
    rewritten (no constant weights in the shapes above, or a graph this module cannot parse). ``joint``: the
    joint's columns, so that its output layer (the product as wide as the joint) keeps fp32's best label
    and duration (``None``: every product plain int8). ``ranking_limit``: the int8 range of the joint's ranking
    weights (default: 127, or 64 on x86 CPUs without VNNI or AMX; see ``_Builder.ranking_product``).
    ``choices``: end the graph in the joint's greedy choices instead of its logits (see
    :class:`ChoiceOutputs`); ignored (``Rewritten.choices`` false) unless the graph has that logits output, one
    joint output layer, and opset 13 or later. ``joint_only``: rewrite the joint's output layer alone, and only
    into choices (``None`` otherwise)."""
    if ranking_limit is None:
        ranking_limit = RANKING_LIMIT_SATURATING if x86_without_int8_dot_products() else RANKING_LIMIT
    if not 1 <= ranking_limit <= 127:
        raise ValueError(f"ranking_limit must be in [1, 127], got {ranking_limit}")
    try:
        model = onnx_proto.read_source(source, name)
    except Exception as exc:  # a graph the engine cannot parse here is left to ONNX Runtime as it is
        logger.warning("%s: decoding weights stay fp32 (%s)", name, exc)
        return None
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for item in graph.node:
        for used in item.input:
            consumers.setdefault(used, []).append(item)
    constants = {item.output[0]: attribute.t for item in graph.node if item.op_type == "Constant"
                 for attribute in item.attribute if attribute.name == "value" and item.output}
    producers = {name: item for item in graph.node for name in item.output if name}
    context = _Context(weights={t.name: t for t in graph.initializer}, constants=constants, consumers=consumers,
                       producers=producers, joint=joint)
    if choices is not None and (choices.logits not in onnx_proto.graph_outputs(model) or onnx_proto.opset(model) < 13):
        choices = None
    if joint_only and choices is None:
        return None
    builder = _Builder(model, ranking_limit, choices, joint_only)
    rewriters = {"MatMul": _rewrite_matmul, "Gemm": _rewrite_gemm, "LSTM": _rewrite_lstm}
    nodes: list[Any] = []
    products = lstms = 0
    for item in graph.node:
        rewrite = rewriters.get(item.op_type) if item.domain in ("", "ai.onnx") else None
        replaced = rewrite(item, context, builder) if rewrite is not None else None
        if replaced is None:
            nodes.append(item)
            continue
        nodes += replaced
        if item.op_type == "LSTM":
            lstms += 1
        else:
            products += 1
    if products + lstms == 0:
        return None
    chose = choices is not None and builder.exact_top == 1
    if chose:
        assert choices is not None and joint is not None
        result, outputs = builder.joint_result, set(onnx_proto.graph_outputs(model))
        chose = result is not None and _unchanged_up_to(result, choices.logits, context, joint.width, outputs)
        if chose:
            nodes = _ending_in_choices(graph, nodes, choices, joint.width)
            available = {t.name for t in [*graph.initializer, *builder.initializers]} | {v.name for v in graph.input}
            chose = _complete(nodes, available)  # no kept node may read what only led to the logits
    if choices is not None and not chose and builder.exact_top > 0:  # the logits stay: rewrite again without choices
        return None if joint_only else int8_decoding_graph(source, name, joint, ranking_limit=ranking_limit)
    still_read = {n for item in nodes for n in item.input}
    outputs = {v.name for v in graph.output}
    kept = [t for t in graph.initializer if t.name in still_read or t.name in outputs]
    dropped = {t.name for t in graph.initializer} - {t.name for t in kept}
    inputs = [v for v in graph.input if v.name not in dropped]  # graphs of IR < 4 list initializers as inputs
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *builder.initializers])
    if not any(o.domain == _MS_DOMAIN for o in model.opset_import):
        model.opset_import.add(domain=_MS_DOMAIN, version=1)
    return Rewritten(data=onnx_proto.serialize(model), products=products, lstms=lstms,
                     fp32_bytes=builder.fp32_bytes, exact_top=builder.exact_top, choices=chose)


_SHAPE_ONLY = frozenset({"Identity", "Squeeze", "Unsqueeze", "Gather", "Reshape"})
"""Operators that may stand between the joint's output layer and its logits output for the choices to be made
from the layer itself (:func:`_unchanged_up_to` checks what each does)."""


def _int_values(name: str, context: _Context) -> list[int] | None:
    """The values of a constant int64 tensor (an initializer or a ``Constant`` node's), ``None`` otherwise."""
    tensor = context.weights.get(name) or context.constants.get(name)
    if tensor is None or tensor.data_type != onnx_proto.INT64 or len(tensor.external_data) > 0:
        return None
    if tensor.raw_data:
        return [int(v) for v in np.frombuffer(tensor.raw_data, dtype="<i8")]
    return [int(v) for v in tensor.int64_data]


def _unchanged_up_to(start: str, logits: str, context: _Context, width: int, outputs: set[str]) -> bool:
    """Does ``start`` (the joint's output layer with its bias) reach the graph output ``logits`` with its values
    unchanged, only reshaped: a chain of single readers, each dropping or adding size-1 axes (``Squeeze``,
    ``Unsqueeze``, ``Gather`` of index 0 on an axis other than the last, ``Reshape`` to a shape ending in the
    joint's width) or ``Identity``? Anything else there (a scale, a second reader) and the choices, made from the
    layer, would not be the logits' argmaxes."""
    name = start
    for _ in range(64):
        if name == logits:
            return True
        readers = context.consumers.get(name, [])
        if name in outputs or len(readers) != 1:
            return False
        item = readers[0]
        if item.op_type not in _SHAPE_ONLY or item.domain not in ("", "ai.onnx") or item.input[0] != name:
            return False
        attributes = _attributes(item)
        if item.op_type == "Gather":
            axis = attributes["axis"].i if "axis" in attributes else 0
            if axis == -1 or _int_values(item.input[1], context) != [0]:
                return False
        if item.op_type == "Reshape":
            shape = _int_values(item.input[1], context)
            if shape is None or not shape or shape[-1] != width:
                return False
        if item.op_type in ("Squeeze", "Unsqueeze"):
            axes = _int_values(item.input[1], context) if len(item.input) > 1 else (
                list(attributes["axes"].ints) if "axes" in attributes else None)
            if axes is None or -1 in axes:
                return False
        name = item.output[0]
    return False


def _complete(nodes: list[Any], available: set[str]) -> bool:
    """Does every input of ``nodes`` come from ``available`` (graph inputs, initializers) or an earlier node?"""
    made = set(available) | {""}
    for item in nodes:
        if any(name not in made for name in item.input):
            return False
        made.update(item.output)
    return True


def _ending_in_choices(graph: Any, nodes: list[Any], choices: ChoiceOutputs, width: int) -> list[Any]:
    """``graph``'s outputs with the logits replaced by the choices (int64, one per row of the logits) and the
    joint's width, and the ``nodes`` that still compute an output, in their order (what only led to the logits
    goes)."""
    rows = onnx_proto.row_dim(next(v for v in graph.output if v.name == choices.logits))
    kept_outputs = [v for v in graph.output if v.name != choices.logits]
    del graph.output[:]
    graph.output.extend(kept_outputs)
    graph.output.extend(onnx_proto.value_info(out, onnx_proto.INT64, rows) for out in (choices.label, choices.duration))
    if choices.proven is not None:
        graph.output.append(onnx_proto.value_info(choices.proven, onnx_proto.BOOL, rows))
    graph.output.append(onnx_proto.value_info(choices.width, onnx_proto.INT64, [1]))
    width_name = choices.width + "/value"
    graph.initializer.append(onnx_proto.int64_tensor(width_name, [width]))
    nodes = [*nodes, onnx_proto.node("Identity", [width_name], [choices.width])]
    needed = {v.name for v in graph.output}
    live: list[Any] = []
    for item in reversed(nodes):
        if any(out in needed for out in item.output):
            live.append(item)
            needed.update(n for n in item.input if n)
    return live[::-1]
