"""CPU-dependent choices: the int8 weight graph picked at load from the CPU's flags, and OpenVINO as a second
encoder backend (fp32 and bf16).

Nothing here asserts a result that depends on the CPU's integer or bf16 kernels being exact: the choice
logic runs on fake ``/proc/cpuinfo`` texts of both kinds of CPU, and the measured agreements are printed
(``-s``) and checked against floors that hold on AVX2-only, AVX-512 VNNI and AMX machines alike.
"""

from __future__ import annotations

import logging
import platform
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parakeet_runtime.engine import (
    AudioInput,
    BackendUnavailableError,
    BatchingOptions,
    Engine,
    ManifestError,
    SessionOptions,
    load_manifest,
)
from parakeet_runtime.engine.model import onnx_model, openvino_backend
from parakeet_runtime.engine.model.cpu import (
    cpu_name,
    has_bf16,
    int8_weights_for_this_cpu,
    isa_summary,
    preferred_int8_weights,
    this_cpu_has_bf16,
    x86_without_int8_dot_products,
)
from parakeet_runtime.engine.model.onnx_model import encoder_graph
from parakeet_runtime.engine.options import Int8Weights
from parakeet_runtime.engine.serving.cli import parse_args
from parakeet_runtime.export.quantize import Agreement, _edit_distance, quantize_directory, token_agreement
from tests.int8_checks import BF16_FRAME_ERROR_BOUND, FRAME_ERROR_BOUND, INTEGER_PRODUCTS, encoder_frame_errors

EPYC_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx fma avx2 bmi2 sha_ni\n"
EPYC_ZEN4 = ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 "
             "avx512_vnni avx512_vbmi2\n")
XEON_AMX = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu avx2 avx512f "
            "avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n")
ALDER_LAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\n"
NO_FLAGS = "processor\t: 0\nmodel name\t: something\n"
BATCHING_OFF = BatchingOptions(enabled=False)


@pytest.mark.parametrize(("cpuinfo", "machine", "expected"), [
    (EPYC_AVX2, "x86_64", "uint8"),   # u8 x s8 pair sums saturate: the uint8 graph is the exact one
    (EPYC_ZEN4, "x86_64", "int8"),    # AVX-512 VNNI
    (XEON_AMX, "x86_64", "int8"),     # AMX
    (ALDER_LAKE, "x86_64", "int8"),   # AVX-VNNI
    (NO_FLAGS, "x86_64", "uint8"),    # unknown flags on x86: the scheme that is exact everywhere
    (None, "AMD64", "uint8"),         # no /proc/cpuinfo (Windows)
    (None, "aarch64", "int8"),        # ARM: no saturating pair sums
    ("Features\t: fp asimd asimddp\n", "arm64", "int8"),
])
def test_int8_weights_follow_the_cpu(cpuinfo: str | None, machine: str, expected: str) -> None:
    assert preferred_int8_weights(cpuinfo, machine) == expected


@pytest.mark.parametrize(("cpuinfo", "machine", "expected"), [
    (EPYC_AVX2, "x86_64", False), (EPYC_ZEN4, "x86_64", True), (XEON_AMX, "x86_64", True),
    (ALDER_LAKE, "x86_64", False), (None, "x86_64", False), (XEON_AMX, "aarch64", False),
])
def test_bf16_support_follows_the_cpu(cpuinfo: str | None, machine: str, expected: bool) -> None:
    assert has_bf16(cpuinfo, machine) is expected


def test_cpu_description() -> None:
    assert cpu_name(XEON_AMX) == "Intel(R) Xeon(R) Platinum 8481C"
    assert isa_summary(XEON_AMX) == "avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8"
    assert isa_summary(EPYC_AVX2) == "avx2"
    assert isa_summary(NO_FLAGS) == "unknown"
    assert cpu_name() and isa_summary()  # this machine's


@pytest.fixture(scope="module")
def auto_dirs(converted: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The trained fixtures quantised with ``--int8-weights auto`` (both weight graphs)."""
    out = {}
    for name in ("tdt_a", "tdt_b"):
        target = tmp_path_factory.mktemp(f"{name}-int8-auto")
        quantize_directory(converted[name], target, load_manifest(converted[name]), "auto")
        out[name] = target
    return out


def test_auto_directory_holds_both_weight_graphs(auto_dirs: dict[str, Path], converted: dict[str, Path]) -> None:
    import onnx
    from onnx import TensorProto

    manifest = load_manifest(auto_dirs["tdt_a"])
    assert manifest.encoder.precision == "int8" and manifest.encoder.signed_int8_file == "encoder.int8w.onnx"
    quantization = manifest.provenance.quantization
    assert quantization is not None and quantization.weights == "uint8" and "VNNI" in quantization.method
    assert "encoder.int8w.onnx" in manifest.files()
    for file, kind in ((manifest.encoder.file, TensorProto.UINT8), ("encoder.int8w.onnx", TensorProto.INT8)):
        graph = onnx.load(str(auto_dirs["tdt_a"] / file)).graph
        weights = {init.name: init.data_type for init in graph.initializer}
        integer = [node for node in graph.node if node.op_type in INTEGER_PRODUCTS]
        assert integer and {weights[node.input[1]] for node in integer} == {kind}, file
    # Each int8 encoder is smaller than the fp32 one (on the tiny fixture the fp32 position tables, copied
    # into both, are most of it; at Parakeet size each is about a third of fp32's).
    fp32_size = (converted["tdt_a"] / "encoder.onnx").stat().st_size
    assert all((auto_dirs["tdt_a"] / f).stat().st_size < fp32_size for f in ("encoder.onnx", "encoder.int8w.onnx"))


@pytest.mark.parametrize("cpu_prefers", ["uint8", "int8"])
def test_encoder_graph_choice(cpu_prefers: str, auto_dirs: dict[str, Path], converted: dict[str, Path],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_model, "int8_weights_for_this_cpu", lambda: cpu_prefers)
    both = load_manifest(auto_dirs["tdt_a"])
    primary = {"uint8": "encoder.onnx", "int8": "encoder.int8w.onnx"}
    assert encoder_graph(both, "auto") == (primary[cpu_prefers], cpu_prefers)
    assert encoder_graph(both, "uint8") == ("encoder.onnx", "uint8")
    assert encoder_graph(both, "int8") == ("encoder.int8w.onnx", "int8")
    with pytest.raises(ManifestError, match=r"int8_weights='int7'.*uint8, int8 weights only"):
        encoder_graph(both, "int7")
    # A directory with one scheme (--int8-weights uint8 / int8 / int7) loads it whatever the CPU.
    uint8_only = replace(both, encoder=replace(both.encoder, signed_int8_file=None))
    assert encoder_graph(uint8_only, "auto") == ("encoder.onnx", "uint8")
    with pytest.raises(ManifestError, match="has uint8 weights only"):
        encoder_graph(uint8_only, "int8")
    fp32 = load_manifest(converted["tdt_a"])
    assert encoder_graph(fp32, "auto") == ("encoder.onnx", None)  # fp32: no choice to make
    with pytest.raises(ManifestError, match="no int8 weight schemes"):  # a forced scheme was ignored
        encoder_graph(fp32, "int8")


def test_this_machine_loads_its_preferred_scheme(auto_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture,
                                                 clips: dict[str, Path]) -> None:
    expected = preferred_int8_weights(Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file()
                                      else None, platform.machine())
    assert int8_weights_for_this_cpu() == expected
    with caplog.at_level(logging.INFO, logger="parakeet_runtime.engine.model.onnx_model"), Engine.load(
        auto_dirs["tdt_a"], batching=BATCHING_OFF
    ) as engine:
        assert engine.transcribe(clips["c2_sentence"]).text
        loaded = engine.model.encoder_file  # the manifest names only the primary graph
    file = "encoder.int8w.onnx" if expected == "int8" else "encoder.onnx"
    assert loaded == file
    with Engine.load(auto_dirs["tdt_a"], batching=BATCHING_OFF, session=SessionOptions(int8_weights="uint8")) as forced:
        assert forced.model.encoder_file == "encoder.onnx"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"int8 encoder {file}: {expected} weights") for m in messages), messages
    # No saturation warning: auto never picks a graph that saturates here.
    assert not [m for m in messages if "saturate" in m]


@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_int8_scheme_agreement_with_fp32(name: str, auto_dirs: dict[str, Path], converted: dict[str, Path],
                                         clips: dict[str, Path]) -> None:
    """Each weight graph against the fp32 directory on the trained fixtures. The encoder frames stay within
    ``FRAME_ERROR_BOUND`` of fp32's for every graph this CPU runs exactly (uint8 everywhere; signed int8 where
    the CPU has int8 dot products, so that ``auto`` picks it). Tokens are measured and printed (see
    benchmarks/README.md), not held to a floor: how far the tiny fixture models drift under the same frame error
    changes with every fixture build (tests/int8_checks.py)."""
    schemes: tuple[Int8Weights, ...] = ("uint8", "int8")
    exact = ["uint8"] + (["int8"] if int8_weights_for_this_cpu() == "int8" else [])
    for scheme in schemes:
        errors = encoder_frame_errors(converted[name], auto_dirs[name], list(clips.values()),
                                      session=SessionOptions(int8_weights=scheme))
        agreement = token_agreement(converted[name], auto_dirs[name], list(clips.values()), int8_weights=scheme)
        print(f"{name} {scheme} on {cpu_name()} ({isa_summary()}): frame errors "
              f"{', '.join(f'{e:.4f}' for e in errors)}; {agreement}, token agreement {agreement.token_agreement:.4f}")
        assert agreement.clips == len(clips) and agreement.reference_tokens > 0
        if scheme in exact:
            assert max(errors) <= FRAME_ERROR_BOUND, (scheme, errors)
            assert agreement.identical_clips >= 1, (scheme, agreement)


# --- OpenVINO -----------------------------------------------------------------------------------------------

def _openvino() -> None:
    pytest.importorskip("openvino",
                        reason="the openvino extra is not installed (pip install 'parakeet-runtime[openvino]')")


def _tokens(model_dir: Path, session: SessionOptions, audio: list[Path]) -> list[list[int]]:
    with Engine.load(model_dir, batching=BATCHING_OFF, session=session) as engine:
        return [[t.id for t in engine.transcribe(clip).tokens] for clip in audio]


def _agreement(reference: list[list[int]], other: list[list[int]]) -> Agreement:
    return Agreement(clips=len(reference), identical_clips=sum(a == b for a, b in zip(reference, other, strict=True)),
                     reference_tokens=sum(map(len, reference)),
                     token_edits=sum(_edit_distance(a, b) for a, b in zip(reference, other, strict=True)))


def test_openvino_on_the_cpu_device_is_taken(converted: dict[str, Path], clips: dict[str, Path]) -> None:
    """device="cpu" with the OpenVINO backend was refused with advice to use a GPU device."""
    _openvino()
    with Engine.load(converted["tdt_a"], device="cpu", session=SessionOptions(backend="openvino")) as engine:
        assert engine.transcribe(clips["c2_sentence"]).text


@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_openvino_fp32_gives_the_fp32_tokens(name: str, converted: dict[str, Path], clips: dict[str, Path]) -> None:
    _openvino()
    audio = list(clips.values())
    reference = _tokens(converted[name], SessionOptions(), audio)
    assert _tokens(converted[name], SessionOptions(backend="openvino"), audio) == reference
    # Batched (padded, dynamic shapes): the same tokens.
    with Engine.load(converted[name], session=SessionOptions(backend="openvino")) as engine:
        batched = engine.transcribe(list[AudioInput](audio))
        assert [[t.id for t in r.tokens] for r in batched] == reference


@pytest.mark.parametrize("frames", [800, 1700, 4000])
def test_openvino_encoder_frames_match_onnxruntime(frames: int, converted: dict[str, Path]) -> None:
    """A padded batch past the length (≈ 200 encoder frames) where OpenVINO's fused position product went
    wrong before the workaround (openvino_backend._keep_position_products)."""
    _openvino()
    with Engine.load(converted["tdt_a"], batching=BATCHING_OFF) as ort_engine, Engine.load(
        converted["tdt_a"], batching=BATCHING_OFF, session=SessionOptions(backend="openvino")
    ) as ov_engine:
        mels = ort_engine.manifest.features.n_mels
        features = np.random.default_rng(frames).standard_normal((2, mels, frames)).astype(np.float32)
        lengths = np.array([frames, frames * 2 // 3], dtype=np.int64)
        expected, expected_lengths = ort_engine.model.encode(features, lengths)
        got, got_lengths = ov_engine.model.encode(features, lengths)
    np.testing.assert_array_equal(got_lengths, expected_lengths)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_openvino_is_thread_safe(converted: dict[str, Path], clips: dict[str, Path]) -> None:
    _openvino()
    audio = [clips[name] for name in ("c2_sentence", "c3_multi", "c5_noisy", "c1_short")] * 2
    with Engine.load(converted["tdt_a"], batching=BATCHING_OFF, session=SessionOptions(backend="openvino")) as engine:
        alone = [engine.transcribe(clip).text for clip in audio]
        together: list[str | None] = [None] * len(audio)
        barrier = threading.Barrier(len(audio))

        def work(i: int) -> None:
            barrier.wait()
            together[i] = engine.transcribe(audio[i]).text

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(audio))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert together == alone


@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_openvino_bf16_agreement(name: str, converted: dict[str, Path], clips: dict[str, Path]) -> None:
    """bf16 encoder frames within ``BF16_FRAME_ERROR_BOUND`` of fp32's; tokens measured and printed (4 of 6
    clips identical on both fixtures on an AMD EPYC Zen 4 and an Intel Xeon with AMX; how many drift changes
    with the fixture build, tests/int8_checks.py), only a total collapse fails."""
    _openvino()
    if not this_cpu_has_bf16():
        pytest.skip(f"this CPU ({cpu_name()}; {isa_summary()}) has neither AVX-512 BF16 nor AMX")
    _check_openvino_precision(converted[name], SessionOptions(backend="openvino", precision="bf16"),
                              list(clips.values()), BF16_FRAME_ERROR_BOUND)


def _check_openvino_precision(model_dir: Path, session: SessionOptions, audio: list[Path], bound: float) -> None:
    """Encoder frames within ``bound`` of fp32's and at least one clip's tokens identical; the figures printed."""
    errors = encoder_frame_errors(model_dir, model_dir, audio, session=session)
    reference = _tokens(model_dir, SessionOptions(), audio)
    agreement = _agreement(reference, _tokens(model_dir, session, audio))
    print(f"{model_dir.name} openvino {session.precision} on {cpu_name()} ({isa_summary()}): frame errors "
          f"{', '.join(f'{e:.4f}' for e in errors)}; {agreement}, token agreement {agreement.token_agreement:.4f}")
    assert max(errors) <= bound, errors
    assert agreement.identical_clips >= 1, agreement


@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_openvino_int8_agreement(name: str, converted: dict[str, Path], clips: dict[str, Path]) -> None:
    """OpenVINO int8 (weights made int8 at load, activations quantised per group at run time): encoder frames
    within ``FRAME_ERROR_BOUND`` of fp32's, like ONNX Runtime's int8 graphs; tokens measured and printed, only a
    total collapse fails (tests/int8_checks.py). Its results depend on the activations' ranges, so each input is
    encoded alone, and ``auto`` decoding weights follow it as they follow an int8 directory."""
    _openvino()
    if x86_without_int8_dot_products():
        pytest.skip(f"this CPU ({cpu_name()}; {isa_summary()}) has neither VNNI nor AMX (test_openvino_errors checks "
                    "the refusal)")
    int8 = SessionOptions(backend="openvino", precision="int8")
    _check_openvino_precision(converted[name], int8, list(clips.values()), FRAME_ERROR_BOUND)
    with Engine.load(converted[name], session=int8) as engine:
        assert not engine.inference.batch_invariant
        assert engine.model.decoder_weights == "int8"


def test_openvino_int8_weights_per_channel() -> None:
    weights = np.random.default_rng(0).standard_normal((40, 24)).astype(np.float32)
    weights[:, 3] = 0.0
    weights[5, :] = 0.0
    for axis, shape in ((0, (40, 1)), (1, (1, 24))):
        quantized, scales = openvino_backend.int8_per_channel(weights, axis)
        assert quantized.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == shape
        assert int(np.abs(quantized).max()) == 127
        restored = quantized.astype(np.float32) * scales
        assert np.all(np.abs(restored - weights) <= scales / 2 * (1 + 1e-6))
        largest = np.abs(weights).max(axis=1 - axis)
        assert np.allclose(np.abs(restored).max(axis=1 - axis), largest)  # each channel's largest weight is exact
    assert not np.any(openvino_backend.int8_per_channel(weights, 1)[0][:, 3])  # a zero channel stays zero


def test_openvino_int8_compresses_every_weight_product(converted: dict[str, Path]) -> None:
    """Every ``MatMul`` by a constant fp32 matrix reads int8 weights in the form the CPU plugin runs as int8
    products (int8 constant, convert, multiply by the scales); the others (activation by activation) are left."""
    _openvino()
    import openvino

    model = openvino.Core().read_model(str(converted["tdt_a"] / "encoder.onnx"))

    def weight_source(op: Any) -> Any:
        return op.input(1).get_source_output().get_node()

    matmuls = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    weighted = [op for op in matmuls if weight_source(op).get_type_name() == "Constant"
                and weight_source(op).get_output_element_type(0) == openvino.Type.f32
                and len(weight_source(op).get_output_shape(0)) == 2]
    assert weighted and len(weighted) < len(matmuls)
    assert openvino_backend.compress_weights(model, openvino) == len(weighted)
    for op in weighted:
        multiply = weight_source(op)
        assert multiply.get_type_name() == "Multiply"
        convert = multiply.input(0).get_source_output().get_node()
        assert convert.get_type_name() == "Convert"
        constant = convert.input(0).get_source_output().get_node()
        assert constant.get_output_element_type(0) == openvino.Type.i8
    assert openvino_backend.compress_weights(model, openvino) == 0  # nothing fp32 left to compress


@pytest.mark.parametrize(("sizes", "precision", "unfused"), [
    ([128] * 24, "fp32", False),     # Parakeet's heads in fp32: fused (measured, benchmarks/README.md)
    ([128] * 24, "bf16", True),      # bf16: NaN in a padded batch without the workaround, at any size
    ([24, 24], "fp32", True),        # the fixtures' heads: wrong beyond ~200 frames when fused
    ([36] * 6, "fp32", True),        # the demo model's
    ([128, None], "fp32", True),     # a size not known statically
    ([], "fp32", True),              # no fused attention found
])
def test_openvino_position_workaround_choice(sizes: list[int | None], precision: str, unfused: bool) -> None:
    assert openvino_backend.needs_unfused_positions(sizes, precision) is unfused  # type: ignore[arg-type]


def test_openvino_reads_the_head_sizes(converted: dict[str, Path]) -> None:
    _openvino()
    import openvino

    model = openvino.Core().read_model(str(converted["tdt_a"] / "encoder.onnx"))
    sizes = openvino_backend.head_sizes(model)
    manifest = load_manifest(converted["tdt_a"])
    heads = manifest.encoder.attention_heads
    assert heads is not None and sizes == [manifest.encoder.d_model // heads] * len(sizes) and sizes


def test_openvino_errors(converted: dict[str, Path], auto_dirs: dict[str, Path],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    _openvino()
    with pytest.raises(BackendUnavailableError, match="runs fp32 encoders; this directory's is int8"):
        Engine.load(auto_dirs["tdt_a"], session=SessionOptions(backend="openvino"))
    monkeypatch.setattr(openvino_backend, "this_cpu_has_bf16", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"bf16.*needs a CPU with AVX-512 BF16 or AMX"):
        Engine.load(converted["tdt_a"], session=SessionOptions(backend="openvino", precision="bf16"))
    monkeypatch.setattr(openvino_backend, "x86_without_int8_dot_products", lambda: True)
    with pytest.raises(BackendUnavailableError, match=r"int8.*needs a CPU with int8 dot products \(VNNI or AMX\)"):
        Engine.load(converted["tdt_a"], session=SessionOptions(backend="openvino", precision="int8"))
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'parakeet-runtime\[openvino\]'"):
        Engine.load(converted["tdt_a"], session=SessionOptions(backend="openvino"))


def test_openvino_graph_that_does_not_run_here_fails_at_load(converted: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU plugin compiles some graphs it cannot run on the CPU at hand (int8 products with OpenVINO's
    oneDNN limited to AVX2: "could not create a primitive descriptor" at the first run): the load's run on
    silence makes that a typed error at load, not a failure of every request."""
    _openvino()
    runs: list[dict[str, Any]] = []

    def refuse(self: Any, output_names: Any, feeds: dict[str, Any], run_options: object = None) -> Any:
        runs.append(feeds)
        raise RuntimeError("Exception from src/plugins/intel_cpu/src/node.cpp:823:\n[CPU] FullyConnectedCompressed "
                           "node could not create a primitive descriptor")

    monkeypatch.setattr(openvino_backend.OpenVinoEncoder, "run", refuse)
    monkeypatch.setattr(openvino_backend, "x86_without_int8_dot_products", lambda: False)  # any CPU gets that far
    with pytest.raises(BackendUnavailableError, match=r"encoder.onnx: OpenVINO compiled this graph in int8 but "
                                                      r"cannot run it on this CPU .*could not create a primitive"):
        Engine.load(converted["tdt_a"], session=SessionOptions(backend="openvino", precision="int8"))
    mels = load_manifest(converted["tdt_a"]).features.n_mels
    assert [tuple(np.shape(v)) for v in runs[0].values()] == [(1, mels, openvino_backend.WARM_UP_FRAMES), (1,)]


def test_session_option_values() -> None:
    with pytest.raises(ValueError, match="need backend='openvino'"):
        SessionOptions(precision="bf16")
    with pytest.raises(ValueError, match="backend must be"):
        SessionOptions(backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision must be"):
        SessionOptions(backend="openvino", precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="int8_weights must be"):
        SessionOptions(int8_weights="int4")  # type: ignore[arg-type]
    assert SessionOptions(backend="openvino", precision="bf16").precision == "bf16"
    assert SessionOptions(backend="openvino", precision="int8").precision == "int8"
    with pytest.raises(ValueError, match="need backend='openvino'"):
        SessionOptions(precision="int8")


@pytest.mark.parametrize("command", [["transcribe"], ["serve"]])
def test_cli_backend_and_precision(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args([*command, "--backend", "openvino", "--precision", "bf16"])
    assert (args.backend, args.precision) == ("openvino", "bf16")
    args = parse_args(command)
    assert (args.backend, args.precision) == ("onnxruntime", "fp32")
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*command, "--precision", "bf16"])
    assert exit_info.value.code == 2 and "--precision bf16 needs --backend openvino" in capsys.readouterr().err
    args = parse_args([*command, "--backend", "openvino", "--precision", "int8"])
    assert (args.backend, args.precision) == ("openvino", "int8")
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*command, "--precision", "int8"])
    assert exit_info.value.code == 2 and "--precision int8 needs --backend openvino" in capsys.readouterr().err
