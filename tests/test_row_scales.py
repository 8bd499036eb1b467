"""int8 activations with a scale per row (``export/row_scales.py``) and what ``quantize_directory`` keeps fp32."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[1] / "engine" / "default_model"


def _products(tmp_path: Path, opset: int) -> Path:
    """An fp32 graph whose one input feeds two weight products (as the attention's Q/K/V share theirs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((64, n)).astype(np.float32), f"w{i}")
               for i, n in enumerate((48, 32))]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["y0"], name="/layers.0/feed_forward1/linear1/MatMul"),
         helper.make_node("MatMul", ["x", "w1"], ["y1"], name="/layers.0/self_attn/linear_q/MatMul")],
        "products",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 64])],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, ["batch", "time", 48]),
         helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["batch", "time", 32])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / f"fp32-{opset}.onnx"
    onnx.save(model, str(path))
    return path


def _quantized(source: Path, target: Path, per_row: bool) -> int:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from parakeet_runtime.export.row_scales import scale_rows

    quantize_dynamic(model_input=str(source), model_output=str(target), op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8, per_channel=True, extra_options={"MatMulConstBOnly": True})
    if not per_row:
        return 0
    model = onnx.load(str(target))
    count = scale_rows(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return count


@pytest.mark.parametrize("opset", [17, 18])
def test_each_row_is_quantised_at_its_own_scale(opset: int, tmp_path: Path) -> None:
    """Rows a thousand times quieter than the loudest keep their precision with a scale per row, where one
    scale per tensor rounds them to almost nothing; rows of zeros (padding) stay zeros."""
    import onnxruntime as ort

    source = _products(tmp_path, opset)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 64)).astype(np.float32)
    x *= np.array([1e3, 1.0, 1e-2, 3.0, 0.5, 1.0], dtype=np.float32)[None, :, None]
    x[1, 5] = 0.0
    expected = [x @ np.asarray(w) for w in _weights(source)]
    errors = {}
    for per_row in (False, True):
        target = tmp_path / f"int8-{opset}-{per_row}.onnx"
        assert _quantized(source, target, per_row) == (1 if per_row else 0)  # one shared input, two products
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x})
        assert all(np.isfinite(g).all() for g in got)
        # Relative error of each row: its error against its own size.
        errors[per_row] = max(
            float((np.linalg.norm(g - e, axis=-1) / np.maximum(np.linalg.norm(e, axis=-1), 1e-30))[:, :5].max())
            for g, e in zip(got, expected, strict=True))
        if per_row:
            assert all(not g[1, 5].any() for g in got)
    assert errors[True] < 0.03, errors
    assert errors[False] > 10 * errors[True], errors


def _weights(path: Path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(init) for init in sorted(graph.initializer, key=lambda i: i.name)]


def test_other_readers_keep_one_scale_per_tensor(caplog: pytest.LogCaptureFixture) -> None:
    """A quantised input read by something other than an integer product is left as it is, and said."""
    import onnx
    from onnx import TensorProto, helper

    from parakeet_runtime.export.row_scales import scale_rows

    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with caplog.at_level(logging.WARNING):
        assert scale_rows(model) == 0
    assert [n.op_type for n in model.graph.node] == ["DynamicQuantizeLinear", "DequantizeLinear"]
    assert "keep one scale per tensor" in caplog.text
    onnx.checker.check_model(model)


def _frame_error(reference: Path, directory: Path, audio: Path) -> float:
    import soundfile

    from parakeet_runtime.engine import Engine

    samples, _ = soundfile.read(str(audio), dtype="float32")
    frames = []
    for model in (reference, directory):
        with Engine.load(model) as engine:
            features, valid = engine.features(samples)
            projected, _ = engine.model.encode(features[None], np.array([valid], dtype=np.int64))
            frames.append(projected[0])
    return float(np.linalg.norm(frames[1] - frames[0]) / np.linalg.norm(frames[0]))


def test_quantize_directory_scales_rows_and_keeps_positions_fp32(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """On the bundled demo model (exported without position tables): the position projections stay fp32
    MatMuls, every other weight product is an integer one whose input is scaled per row, the manifest says so,
    and the int8 encoder's frames are nearer fp32's than with ONNX Runtime's one scale per tensor."""
    import onnx

    from parakeet_runtime.engine import load_manifest
    from parakeet_runtime.export.errors import ConversionError
    from parakeet_runtime.export.quantize import quantize_directory

    manifest = load_manifest(DEMO)
    with pytest.raises(ConversionError, match="activation scaling"):
        quantize_directory(DEMO, tmp_path / "bad", manifest, "uint8", activations="per-column")
    per_row = quantize_directory(DEMO, tmp_path / "per-row", manifest, "int8", activations="per-row")
    per_tensor = quantize_directory(DEMO, tmp_path / "per-tensor", manifest, "int8", activations="per-tensor")
    recorded = per_row.provenance.quantization
    assert recorded is not None and recorded.activations == "per-row" and "per row" in recorded.method
    assert load_manifest(tmp_path / "per-row").provenance.quantization == recorded
    assert per_tensor.provenance.quantization is not None
    assert per_tensor.provenance.quantization.activations == "per-tensor"

    fp32 = onnx.load(str(DEMO / manifest.encoder.file)).graph
    layers = sum("linear_pos" in n.name for n in fp32.node if n.op_type == "MatMul")
    assert layers >= 2  # the demo model has no position tables: its position projections are plain MatMuls
    graph = onnx.load(str(tmp_path / "per-row" / manifest.encoder.file)).graph
    weights = {init.name for init in graph.initializer}
    produced = {out: node for node in graph.node for out in node.output}
    float_weighted = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert len(float_weighted) == layers and all("linear_pos" in name for name in float_weighted)
    quantisers = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert quantisers and all(produced[n.input[0]].op_type == "Div" for n in quantisers)
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) > len(quantisers)

    # The engine says at load how the directory's activations are scaled (older manifests do not record it).
    import json
    import shutil

    from parakeet_runtime.engine import Engine

    shutil.copytree(tmp_path / "per-tensor", tmp_path / "unrecorded")
    manifest_file = tmp_path / "unrecorded" / "manifest.json"
    raw = json.loads(manifest_file.read_text())
    del raw["provenance"]["quantization"]["activations"]
    manifest_file.write_text(json.dumps(raw))
    for name, said in (("per-row", "activations per-row ("), ("per-tensor", "activations per-tensor ("),
                       ("unrecorded", "activations per-tensor (converted before per-row scales")):
        with caplog.at_level(logging.INFO, logger="parakeet_runtime"), Engine.load(tmp_path / name):
            pass
        assert said in caplog.text, (name, caplog.text)
        caplog.clear()

    audio = DEMO.parents[0] / "data" / "sample.wav"
    row_error = _frame_error(DEMO, tmp_path / "per-row", audio)
    tensor_error = _frame_error(DEMO, tmp_path / "per-tensor", audio)
    assert 0.0 < row_error < tensor_error, (row_error, tensor_error)


@pytest.mark.parametrize("opset", [17, 18])
def test_centred_rows_are_batch_invariant(opset: int, tmp_path: Path) -> None:
    """``centre_rows``: each row centred and scaled to [-1, 1] with a fixed quantiser gives every row the same
    products (bit for bit) alone and beside any other rows, loud or silent; the products stay near fp32's, rows
    that sit far from zero (a large offset) included."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from parakeet_runtime.export.row_scales import centre_rows

    source = _products(tmp_path, opset)
    target = tmp_path / f"centred-{opset}.onnx"
    quantize_dynamic(model_input=str(source), model_output=str(target), op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8, per_channel=True, extra_options={"MatMulConstBOnly": True})
    model = onnx.load(str(target))
    assert centre_rows(model) == (1, 0)  # one shared input, two products
    assert not [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 5, 64)).astype(np.float32)
    x[0, 1] += 40.0  # a row far from zero: its centre's share carries it
    x[0, 3] *= 1e-3
    expected = [x @ np.asarray(w) for w in _weights(source)]
    alone = session.run(None, {"x": x})
    for got, want in zip(alone, expected, strict=True):
        error = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
        assert float(error.max()) < 0.03, error
    loud = np.concatenate([x, 1e3 * rng.standard_normal((1, 5, 64)).astype(np.float32)], axis=0)
    silent = np.concatenate([np.zeros((1, 2, 64), np.float32), x], axis=1)  # padding rows before it
    for batch, rows in ((loud, (0, slice(None))), (silent, (0, slice(2, None)))):
        for got, single in zip(session.run(None, {"x": batch}), alone, strict=True):
            assert np.array_equal(got[rows], single[0])


def _swish_and_plain(tmp_path: Path, opset: int) -> Path:
    """An fp32 graph with a feed-forward's two products (the second reads Swish of the first, then its bias is
    added) and a product of the raw input with no bias (as the attention's projections read a LayerNorm's)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    tensors = {"w1": rng.standard_normal((64, 96)), "b1": rng.standard_normal(96), "w2": rng.standard_normal((96, 48)),
               "b2": rng.standard_normal(48), "w3": rng.standard_normal((64, 32))}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="/ff/linear1/MatMul"),
         helper.make_node("Add", ["h", "b1"], ["hb"]),
         helper.make_node("Sigmoid", ["hb"], ["gate"]),
         helper.make_node("Mul", ["hb", "gate"], ["swish"]),
         helper.make_node("MatMul", ["swish", "w2"], ["y"], name="/ff/linear2/MatMul"),
         helper.make_node("Add", ["y", "b2"], ["out"]),
         helper.make_node("MatMul", ["x", "w3"], ["plain"], name="/attn/linear_q/MatMul")],
        "swish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "time", 48]),
         helper.make_tensor_value_info("plain", TensorProto.FLOAT, ["batch", "time", 32])],
        [numpy_helper.from_array((0.3 * v).astype(np.float32), k) for k, v in tensors.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / f"swish-{opset}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("opset", [17, 18])
def test_fixed_rows_are_batch_invariant_and_shift_one_sided_inputs(opset: int, tmp_path: Path) -> None:
    """``bound_rows``: a fixed quantiser of each row scaled on its own gives every row the same products (bit for
    bit) alone and beside any other rows, loud, silent or padding; Swish's output is shifted by its lower bound to
    [0, 1] (the shift's share folded into the next bias, no node added) and the other input scaled about zero; the
    outputs stay near fp32's."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from parakeet_runtime.export.row_scales import SWISH_MINIMUM, bound_rows

    source = _swish_and_plain(tmp_path, opset)
    target = tmp_path / f"fixed-{opset}.onnx"
    quantize_dynamic(model_input=str(source), model_output=str(target), op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8, per_channel=True, extra_options={"MatMulConstBOnly": True})
    model = onnx.load(str(target))
    bias_before = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b2")).copy()
    assert bound_rows(model) == (2, 0)  # x (read by two products) and the Swish output
    nodes = list(model.graph.node)
    assert not [n for n in nodes if n.op_type == "DynamicQuantizeLinear"]
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) == 2
    assert [n.name for n in nodes if n.name.endswith("/shift")] == ["row_bound1/shift"]  # the Swish input alone
    assert not [n for n in nodes if "add_share" in n.name]
    bias_after = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b2"))
    assert not np.array_equal(bias_after, bias_before)  # the shift's share, bound x column sums, joined the bias
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 6, 64)).astype(np.float32)
    x[0, 2] *= 1e-3  # a quiet row keeps its precision
    x[0, 4] *= 30.0
    expected = reference.run(None, {"x": x})
    alone = session.run(None, {"x": x})
    for got, want in zip(alone, expected, strict=True):
        error = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
        assert float(error.max()) < 0.03, error
    grid = np.linspace(-20.0, 20.0, 400_001)
    assert float(SWISH_MINIMUM) < float((grid / (1 + np.exp(-grid))).min()) < float(SWISH_MINIMUM) + 1e-4
    loud = np.concatenate([x, 1e3 * rng.standard_normal((1, 6, 64)).astype(np.float32)], axis=0)
    silent = np.concatenate([np.zeros((1, 3, 64), np.float32), x], axis=1)  # padding rows before it
    for batch, rows in ((loud, (0, slice(None))), (silent, (0, slice(3, None)))):
        for got, single in zip(session.run(None, {"x": batch}), alone, strict=True):
            assert np.array_equal(got[rows], single[0])


@pytest.mark.parametrize(("activations", "said"), [("per-row-fixed", "per row fixed"),
                                                   ("per-row-centred", "per row centred")])
def test_batch_invariant_directory_is_batched_with_the_same_results(tmp_path: Path, activations: str,
                                                                    said: str) -> None:
    """A directory converted with ``per-row-fixed`` (the default) or ``per-row-centred`` activations records them;
    the engine batches its inputs (and their int8 decoding, where this machine allows) and gives every input the
    transcript it gets alone; an int8 directory scaled ``per-row`` is still encoded input by input."""
    import glob

    from parakeet_runtime.engine import AudioInput, BatchingOptions, Engine, load_manifest
    from parakeet_runtime.engine.requests.prepare import PreparedAudio
    from parakeet_runtime.export.quantize import quantize_directory

    manifest = load_manifest(DEMO)
    centred = quantize_directory(DEMO, tmp_path / "centred", manifest, "auto", activations=activations)
    assert centred.provenance.quantization is not None
    assert centred.provenance.quantization.activations == activations
    assert said in centred.provenance.quantization.method
    if activations == "per-row-fixed":  # the default
        default = quantize_directory(DEMO, tmp_path / "default", manifest, "uint8").provenance.quantization
        assert default is not None and default.activations == "per-row-fixed"
    quantize_directory(DEMO, tmp_path / "per-row", manifest, "auto", activations="per-row")
    clips = sorted(glob.glob(str(DEMO.parents[1] / "engine" / "data" / "*.wav")))
    assert clips
    audio: list[AudioInput] = [_tile(clip, seconds, gain) for clip in clips for seconds in (2.0, 3.5, 5.0)
                               for gain in (1.0, 0.2)]
    with Engine.load(tmp_path / "centred", batching=BatchingOptions(enabled=False)) as engine:
        alone = [engine.transcribe(a) for a in audio]
    with Engine.load(tmp_path / "centred", batching=BatchingOptions(max_length_ratio=100.0)) as engine:
        assert engine.inference.batch_invariant
        # int8 decoding weights are searched in batches too where this machine computes a row alike in any batch
        assert engine.inference.batched_decoding == (engine.model.decoder_weights == "fp32"
                                                     or engine.model.rows_decode_alike())
        made = [engine.prepare(a) for a in audio]
        assert all(isinstance(p, PreparedAudio) for p in made)  # one pass each: nothing is long here
        prepared = cast(list[PreparedAudio], made)
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].valid_frames)
        assert max(len(bucket) for bucket in engine.inference.buckets(order, prepared)) > 1
        assert engine.transcribe(audio) == alone
        assert [t.text for t in alone if t.text]
    with Engine.load(tmp_path / "per-row") as engine:
        assert not engine.inference.batch_invariant


def _tile(clip: str, seconds: float, gain: float) -> tuple[np.ndarray, int]:
    """``seconds`` of ``clip`` (repeated as needed) at ``gain``, as an (array, rate) input."""
    import soundfile

    samples, rate = soundfile.read(clip, dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    count = int(seconds * rate)
    return (gain * np.resize(samples, count)).astype(np.float32), int(rate)
