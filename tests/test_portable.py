"""GPUs, checked on the CPU: the portable encoder graph (``convert-model --target tensorrt``), the argmax step
heads, device selection and its errors. Tests that need a GPU are marked ``gpu`` (skipped without one)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from parakeet_runtime.decoding.rules import JointChoices, JointReader
from parakeet_runtime.engine import (
    BatchingOptions,
    DeviceUnavailableError,
    Engine,
    load_audio,
    load_manifest,
)
from parakeet_runtime.engine.model import devices
from parakeet_runtime.engine.options import ConfidenceOptions
from parakeet_runtime.engine.serving import cli as runtime_cli
from tests.conftest import FIXTURE_DIR, HAVE_NEMO, _source_hash
from tests.parity import assert_identical

FIXTURES = ("tdt_a", "tdt_a_dur0", "tdt_a_maxsym", "tdt_a_skip", "tdt_b", "tdt_b_skip")

nemo_only = pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo and torch (the export extra)")


@pytest.fixture(scope="module")
def portable(nemo_paths: dict[str, Path]) -> dict[str, Path]:
    """Every fixture model converted with ``target="tensorrt"`` (with NeMo's parity check), cached like
    ``converted`` by the hash of the exporter's source."""
    from parakeet_runtime.export.convert import convert

    root = FIXTURE_DIR / f"portable-{_source_hash()}"
    for stale in FIXTURE_DIR.glob("portable-*"):
        if stale != root:
            shutil.rmtree(stale, ignore_errors=True)
    out = {}
    for name in FIXTURES:
        target = root / name
        if not (target / "manifest.json").is_file():
            convert(str(nemo_paths[name]), target, overwrite=True, target="tensorrt")
        out[name] = target
    return out


def _onnx(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


# --- the portable graph ------------------------------------------------------------------------------------


@nemo_only
@pytest.mark.parametrize("name", FIXTURES)
def test_portable_graph_has_only_standard_operators(name: str, portable: dict[str, Path],
                                                    converted: dict[str, Path]) -> None:
    from parakeet_runtime.export.portable import contrib_ops, op_types, unsupported_by_tensorrt

    default = _onnx(converted[name] / "encoder.onnx")
    graph = _onnx(portable[name] / "encoder.onnx")
    assert "com.microsoft.MultiHeadAttention" in contrib_ops(default)  # what the portable export replaces
    assert contrib_ops(graph) == []
    assert set(op_types(graph)) == {""}
    assert unsupported_by_tensorrt(graph) == []
    assert unsupported_by_tensorrt(default) == ["com.microsoft.MultiHeadAttention"]
    assert "Softmax" in op_types(graph)[""]


@nemo_only
@pytest.mark.parametrize("name", FIXTURES)
def test_portable_graph_is_fp16_safe_and_dynamic(name: str, portable: dict[str, Path]) -> None:
    from onnx import numpy_helper

    from parakeet_runtime.export.graph_forwards import MASK_VALUE
    from parakeet_runtime.export.portable import fp16_unsafe_constants, static_axes

    graph = _onnx(portable[name] / "encoder.onnx")
    assert fp16_unsafe_constants(graph) == []
    # The mask the attention adds is in the graph, and fp16 holds it exactly.
    constants = [numpy_helper.to_array(t) for t in graph.graph.initializer] + [
        numpy_helper.to_array(a.t) for n in graph.graph.node if n.op_type == "Constant" for a in n.attribute
        if a.HasField("t")
    ]
    assert any(c.dtype == np.float32 and np.any(c == np.float32(MASK_VALUE)) for c in constants)
    assert float(np.float16(MASK_VALUE)) == MASK_VALUE
    manifest = load_manifest(portable[name])
    enc = manifest.encoder
    assert static_axes(graph, {enc.input_features: (0, 2), enc.input_lengths: (0,), enc.output_frames: (0, 1),
                               enc.output_lengths: (0,)}) == []
    assert enc.target == "portable" and enc.max_frames is None  # positions computed for any length
    assert manifest.provenance.encoder_export is not None
    assert manifest.provenance.encoder_export.fused_attention_layers == 0
    assert manifest.provenance.encoder_export.position_table_layers == 0
    assert manifest.provenance.parity  # NeMo's parity check ran on the portable graph, and passed
    assert json.loads((portable[name] / "manifest.json").read_text())["encoder"]["target"] == "portable"


@nemo_only
def test_default_manifest_does_not_write_the_target(converted: dict[str, Path]) -> None:
    raw = json.loads((converted["tdt_a"] / "manifest.json").read_text())
    assert "target" not in raw["encoder"] and "tensorrt_version" not in raw["encoder"]
    assert load_manifest(converted["tdt_a"]).encoder.target == "default"


@nemo_only
@pytest.mark.parametrize("name", FIXTURES)
def test_portable_graph_equals_default_graph_on_cpu(
    name: str, portable: dict[str, Path], engines: dict[str, Any], clips: dict[str, Path], reference: Any
) -> None:
    default = engines[name]
    ours = Engine.load(portable[name], device="cpu")
    expected = reference(name)
    rng = np.random.default_rng(0)
    for clip in clips.values():
        result = ours.transcribe(clip)
        assert [t.id for t in result.tokens] == [t.id for t in default.transcribe(clip).tokens]
        assert_identical(result, expected[str(clip)])
        samples = load_audio(clip, ours.sample_rate).samples
        features, valid = ours.features(samples)
        batch = np.stack([features, rng.standard_normal(features.shape).astype(np.float32)])
        lengths = np.array([valid, max(1, valid // 2)], dtype=np.int64)
        frames, frame_lengths = ours.model.encode(batch, lengths)
        reference_frames, reference_lengths = default.model.encode(batch, lengths)
        np.testing.assert_array_equal(frame_lengths, reference_lengths)
        for row, count in enumerate(frame_lengths):
            np.testing.assert_allclose(frames[row, :count], reference_frames[row, :count], atol=1e-4, rtol=0)
    batched = ours.transcribe(list(clips.values()))
    for clip, result in zip(clips.values(), batched, strict=True):
        assert_identical(result, expected[str(clip)])


@nemo_only
def test_check_portable_rejects_the_default_graph(converted: dict[str, Path]) -> None:
    from parakeet_runtime.export.errors import ConversionError
    from parakeet_runtime.export.portable import check_portable

    manifest = load_manifest(converted["tdt_a"])
    with pytest.raises(ConversionError, match=r"com\.microsoft\.MultiHeadAttention"):
        check_portable(converted["tdt_a"] / "encoder.onnx", manifest.encoder)


@nemo_only
def test_fp16_check_finds_infinite_and_huge_constants() -> None:
    import onnx
    from onnx import helper, numpy_helper

    from parakeet_runtime.export.portable import fp16_unsafe_constants

    def graph(value: float) -> Any:
        constant = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
            np.array([0.5, value], dtype=np.float32)))
        add = helper.make_node("Add", ["x", "c"], ["y"])
        io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2]) for n in ("x", "y")]
        return helper.make_model(helper.make_graph([constant, add], "g", io[:1], io[1:]))

    assert fp16_unsafe_constants(graph(-10000.0)) == []
    assert fp16_unsafe_constants(graph(-65504.0)) == []
    assert len(fp16_unsafe_constants(graph(-np.inf))) == 1
    assert len(fp16_unsafe_constants(graph(-1e9))) == 1
    assert len(fp16_unsafe_constants(graph(np.nan))) == 1


def test_tensorrt_operator_list_is_the_recorded_one() -> None:
    from parakeet_runtime.export import tensorrt_ops

    ops = tensorrt_ops.TENSORRT_ONNX_OPS
    assert tensorrt_ops.TENSORRT_VERSION == "10.0" and tensorrt_ops.TENSORRT_MAX_OPSET == 20
    assert {"MatMul", "Softmax", "Range", "Sin", "Cos", "ArgMax", "LSTM", "Where"} <= ops
    # Operators the onnx-tensorrt matrix marks unsupported are not in the list.
    assert not {"MatMulInteger", "DynamicQuantizeLinear", "MultiHeadAttention", "ConvInteger"} & ops


@nemo_only
def test_convert_refuses_quantized_or_unknown_targets(nemo_paths: dict[str, Path], tmp_path: Path) -> None:
    from parakeet_runtime.export.cli import parse_args
    from parakeet_runtime.export.convert import convert
    from parakeet_runtime.export.errors import ConversionError

    with pytest.raises(ConversionError, match="fp32 encoder"):
        convert(str(nemo_paths["tdt_a"]), tmp_path / "x", target="tensorrt", quantize="int8")
    with pytest.raises(ConversionError, match="unknown target"):
        convert(str(nemo_paths["tdt_a"]), tmp_path / "x", target="tpu")
    assert not (tmp_path / "x").exists()
    assert parse_args(["a.nemo", "out", "--target", "tensorrt"]).target == "tensorrt"
    with pytest.raises(SystemExit):
        parse_args(["a.nemo", "out", "--target", "tensorrt", "--quantize", "int8"])
    with pytest.raises(SystemExit):
        parse_args(["a.nemo", "out", "--target", "tensorrt", "--position-table-frames", "10"])


# --- the argmax step heads ---------------------------------------------------------------------------------


def test_joint_choices_are_read_as_the_argmaxes() -> None:
    durations = (0, 1, 2, 3, 4)
    reader = JointReader.of(blank_id=9, durations=durations)
    labels = np.array([0, 9, 4, 7], dtype=np.int64)
    indices = np.array([4, 0, 2, 1], dtype=np.int64)
    label, duration = reader.choose(JointChoices(labels, indices))
    np.testing.assert_array_equal(label, labels)
    np.testing.assert_array_equal(duration, np.asarray(durations)[indices])
    with pytest.raises(ValueError, match="chosen label"):
        reader.choose(JointChoices(np.array([10]), np.array([0])))
    with pytest.raises(ValueError, match="duration index"):
        reader.choose(JointChoices(np.array([3]), np.array([5])))


@nemo_only
@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_argmax_graph_equals_argmax_of_the_logits(name: str, converted: dict[str, Path]) -> None:
    manifest = load_manifest(converted[name])
    assert manifest.step is not None
    p, step = manifest.predictor, manifest.step
    num_labels = manifest.decoding.blank_id + 1
    heads = devices.argmax_graph(converted[name] / step.file, step.output_logits, num_labels, step.file)
    full = ort.InferenceSession(str(converted[name] / step.file), providers=["CPUExecutionProvider"])
    argmax = ort.InferenceSession(heads, providers=["CPUExecutionProvider"])
    assert step.output_logits not in [o.name for o in argmax.get_outputs()]
    rng = np.random.default_rng(1)
    rows = 64
    feeds = {
        p.input_targets: rng.integers(0, num_labels, rows),
        p.input_h: rng.standard_normal((p.layers, rows, p.hidden)).astype(np.float32),
        p.input_c: rng.standard_normal((p.layers, rows, p.hidden)).astype(np.float32),
        step.input_encoder: rng.standard_normal((rows, manifest.encoder.joint_hidden)).astype(np.float32),
    }
    (logits,) = full.run([step.output_logits], feeds)
    label, duration = argmax.run([devices.ARGMAX_LABEL, devices.ARGMAX_DURATION], feeds)
    assert label.dtype == np.int64 and label.shape == (rows,)
    np.testing.assert_array_equal(label, np.argmax(logits[:, :num_labels], axis=-1))
    np.testing.assert_array_equal(duration, np.argmax(logits[:, num_labels:], axis=-1))


@nemo_only
@pytest.mark.parametrize("name", FIXTURES)
def test_argmax_step_gives_identical_tokens(
    name: str, converted: dict[str, Path], clips: dict[str, Path], reference: Any
) -> None:
    expected = reference(name)
    for batching in (BatchingOptions(enabled=False), BatchingOptions(max_batch_size=8)):
        engine = Engine.load(converted[name], argmax_step=True, batching=batching)
        assert engine.model.argmax
        outputs = [o.name for o in engine.model.predictor_session.get_outputs()]
        assert devices.ARGMAX_LABEL in outputs and engine.manifest.joint.output_logits not in outputs
        with engine:
            for clip, result in zip(clips.values(), engine.transcribe(list(clips.values())), strict=True):
                assert_identical(result, expected[str(clip)])
            for clip in clips.values():
                assert_identical(engine.transcribe(clip), expected[str(clip)])


def test_argmax_step_on_the_bundled_model_without_a_step_graph() -> None:
    from parakeet_runtime.engine import sample_audio_path

    plain, heads = Engine.load(), Engine.load(argmax_step=True)
    assert heads.manifest.step is None and heads.model.argmax and not plain.model.argmax
    a, b = plain.transcribe(sample_audio_path()), heads.transcribe(sample_audio_path())
    assert a.text and [(t.id, t.frame, t.duration) for t in a.tokens] == [(t.id, t.frame, t.duration)
                                                                          for t in b.tokens]


def test_argmax_step_is_off_on_the_cpu_and_refused_with_confidence() -> None:
    assert not Engine.load(device="cpu").model.argmax
    with pytest.raises(ValueError, match="confidence"):
        Engine.load(argmax_step=True, confidence=ConfidenceOptions())


# --- devices and their errors ------------------------------------------------------------------------------


def _cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_device_without_its_provider_is_a_typed_error(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_only(monkeypatch)
    with pytest.raises(DeviceUnavailableError, match=r"CUDAExecutionProvider") as caught:
        Engine.load(device=device)
    assert isinstance(caught.value, RuntimeError)
    assert "pip install" in str(caught.value)


def test_this_onnxruntime_build_refuses_cuda_or_runs_it() -> None:
    """On this machine's onnxruntime (CPU-only in CI) device="cuda" is the typed error, never a CPU run."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA: the gpu-marked tests cover it")
    with pytest.raises(DeviceUnavailableError):
        Engine.load(device="cuda")


def test_device_providers() -> None:
    model_dir = Path("/models/x")
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert devices.device_providers("cpu", model_dir, every) == ["CPUExecutionProvider"]
    assert devices.device_providers("cuda", model_dir, every) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = devices.device_providers("tensorrt", model_dir, every)
    assert [devices.provider_name(p) for p in trt] == every
    options = trt[0][1] if isinstance(trt[0], tuple) else {}
    assert options["trt_fp16_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(devices.tensorrt_cache_dir(model_dir))
    with pytest.raises(DeviceUnavailableError, match="TensorrtExecutionProvider"):
        devices.device_providers("tensorrt", model_dir, every[1:])
    with pytest.raises(ValueError, match="unknown device"):
        devices.device_providers("gpu", model_dir, every)


class _Session:
    def __init__(self, providers: Sequence[str]) -> None:
        self.providers = list(providers)

    def get_providers(self) -> list[str]:
        return self.providers


def test_a_session_that_fell_back_to_the_cpu_is_an_error() -> None:
    devices.check_sessions("cuda", [_Session(["CUDAExecutionProvider", "CPUExecutionProvider"])])
    with pytest.raises(DeviceUnavailableError, match="does not fall back"):
        devices.check_sessions("cuda", [_Session(["CPUExecutionProvider"])])
    with pytest.raises(DeviceUnavailableError):
        devices.check_sessions(
            "tensorrt", [_Session(["CUDAExecutionProvider", "CPUExecutionProvider"])]
        )


def test_device_and_providers_do_not_go_together() -> None:
    with pytest.raises(ValueError, match="not both"):
        Engine.load(device="cpu", providers=["CPUExecutionProvider"])
    engine = Engine.load(providers=[("CPUExecutionProvider", {})])  # the low-level form, options included
    session = engine.model.encoder_session
    assert isinstance(session, ort.InferenceSession) and session.get_providers() == ["CPUExecutionProvider"]


def test_cli_device_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert runtime_cli.parse_args(["transcribe", "--device", "cuda"]).device == "cuda"
    assert runtime_cli.parse_args(["serve", "--device", "tensorrt"]).device == "tensorrt"
    assert runtime_cli.parse_args(["transcribe"]).device is None
    with pytest.raises(SystemExit):
        runtime_cli.parse_args(["transcribe", "--device", "gpu"])
    _cpu_only(monkeypatch)
    assert runtime_cli.main(["transcribe", "--device", "cuda"]) == 2
    assert "CUDAExecutionProvider" in capsys.readouterr().err
    pytest.importorskip("uvicorn")
    assert runtime_cli.main(["serve", "--device", "tensorrt", "--port", "1"]) == 2
    assert "TensorrtExecutionProvider" in capsys.readouterr().err


# --- on a GPU (skipped without one) ------------------------------------------------------------------------


@pytest.mark.gpu
@nemo_only
@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_cuda_gives_nemo_tokens(name: str, converted: dict[str, Path], clips: dict[str, Path],
                                reference: Any) -> None:
    engine = Engine.load(converted[name], device="cuda")
    assert engine.model.argmax
    session = engine.model.encoder_session
    assert isinstance(session, ort.InferenceSession) and session.get_providers()[0] == "CUDAExecutionProvider"
    expected = reference(name)
    for clip, result in zip(clips.values(), engine.transcribe(list(clips.values())), strict=True):
        assert_identical(result, expected[str(clip)])


@pytest.mark.gpu
@nemo_only
def test_tensorrt_runs_the_portable_graph(portable: dict[str, Path], clips: dict[str, Path],
                                          reference: Any) -> None:
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorRT provider")
    engine = Engine.load(portable["tdt_a"], device="tensorrt")
    expected = reference("tdt_a")
    same = sum(
        [t.id for t in result.tokens] == expected[str(clip)]["ids"]
        for clip, result in zip(clips.values(), engine.transcribe(list(clips.values())), strict=True)
    )
    assert same >= len(clips) - 1, f"fp16 TensorRT: {same}/{len(clips)} clips with NeMo's tokens"
