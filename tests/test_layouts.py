"""Other runtimes' directory layouts: ``Engine.load`` on onnx-asr's and sherpa-onnx's NeMo TDT layouts,
against NeMo; loading them with no ``onnx`` (nor torch, NeMo) importable; hub names from a local hub cache.

The layouts are written here from the fixture checkpoints the way onnx-asr's hub models were made
(NeMo's own ``model.export``, ``vocab.txt``, ``config.json``) and the way sherpa-onnx's NeMo TDT export
script makes its directories (``encoder.export``, ``decoder.export``, ``joint.export``, ``tokens.txt``, the
metadata props on the encoder): ``tests/layout_exports.py``. The fixtures of
geometry A use Parakeet's preprocessing (25/10 ms Hann window, 512-point FFT, slaney mels, pre-emphasis,
per-feature normalisation) with 80 mel bins, which the layout states in ``features_size``; geometry B
(64 mels, 32/16 ms) is not Parakeet's and is not a layout the engine can describe.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parakeet_runtime.engine import Engine
from parakeet_runtime.engine.errors import LayoutOptionError, ManifestError, ModelDirectoryError
from parakeet_runtime.engine.model.onnx_asr import (
    hann_window,
    is_onnx_asr_directory,
    load_onnx_asr,
    slaney_mel_filterbank,
    vocab_tokenizer,
)
from parakeet_runtime.engine.options import SessionOptions
from parakeet_runtime.engine.requests.audio import AudioInput
from tests.conftest import HAVE_NEMO
from tests.fixtures.build import CLIP_NAMES
from tests.parity import assert_identical

pytestmark = [pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")]

PARAKEET_FEATURE_MODELS = ("tdt_a", "tdt_a_dur0", "tdt_a_maxsym", "tdt_a_skip")
"""Fixture checkpoints whose preprocessing is Parakeet's (all of geometry A)."""


def _fresh_nemo(path: Path) -> Any:
    """A model of its own (export changes module state; conftest's cached models serve the reference)."""
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(str(path), map_location="cpu")
    model.eval()
    return model


@pytest.fixture(scope="module")
def onnx_asr_dirs(nemo_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.layout_exports import export_onnx_asr

    root = tmp_path_factory.mktemp("onnx-asr")
    return {name: export_onnx_asr(_fresh_nemo(nemo_paths[name]), root / name) for name in PARAKEET_FEATURE_MODELS}


@pytest.fixture(scope="module")
def layout_engines(onnx_asr_dirs: dict[str, Path]) -> dict[str, Engine]:
    return {name: Engine.load(path) for name, path in onnx_asr_dirs.items()}


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("model_name", PARAKEET_FEATURE_MODELS)
def test_onnx_asr_layout_identical_to_nemo(
    model_name: str, layout_engines: dict[str, Engine], reference: Any, clips: dict[str, Path]
) -> None:
    engine = layout_engines[model_name]
    expected = reference(model_name)
    for clip_name in CLIP_NAMES:
        clip = clips[clip_name]
        assert_identical(engine.transcribe(clip), expected[str(clip)])


def test_onnx_asr_layout_reads_what_the_checkpoint_says(
    layout_engines: dict[str, Engine], nemo_paths: dict[str, Path]
) -> None:
    from tests.conftest import load_nemo

    for name, engine in layout_engines.items():
        model = load_nemo(str(nemo_paths[name]))
        manifest = engine.manifest
        assert manifest.decoding.blank_id == model.decoding.blank_id
        assert manifest.decoding.durations == tuple(int(d) for d in model.decoding.durations)
        assert manifest.decoding.max_symbols == model.decoding.decoding.max_symbols
        assert manifest.encoder.subsampling_factor == model.cfg.encoder.subsampling_factor
        assert manifest.encoder.max_frames == model.cfg.encoder.pos_emb_max_len
        assert manifest.features.n_mels == model.cfg.preprocessor.features
        assert manifest.encoder.joint_hidden == model.joint.joint_hidden
        featurizer = model.preprocessor.featurizer
        np.testing.assert_array_equal(engine.features.filterbank, featurizer.fb.numpy()[0])
        np.testing.assert_allclose(engine.features.window, featurizer.window.numpy(), rtol=0, atol=1e-7)
        ids = range(len(engine.tokenizer.pieces))
        assert engine.tokenizer.texts == tuple(model.tokenizer.ids_to_text([i]) for i in ids)


def test_batched_list_equals_one_at_a_time(layout_engines: dict[str, Engine], clips: dict[str, Path]) -> None:
    paths: list[AudioInput] = [clips[name] for name in CLIP_NAMES]
    for engine in layout_engines.values():
        together = engine.transcribe(paths)
        assert together == [engine.transcribe(path) for path in paths]
        assert sum(len(t.tokens) for t in together) > 0


def test_without_config_json_sizes_come_from_the_graphs(
    onnx_asr_dirs: dict[str, Path], layout_engines: dict[str, Engine], clips: dict[str, Path], tmp_path: Path
) -> None:
    """No config.json: mel count from the encoder's input, subsampling measured, durations [0..4], max 10."""
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "no-config")
    (directory / "config.json").unlink()
    engine = Engine.load(directory)
    expected = layout_engines["tdt_a"]
    assert engine.manifest.features == expected.manifest.features
    assert engine.manifest.encoder == expected.manifest.encoder
    assert engine.manifest.decoding == expected.manifest.decoding
    clip = clips[CLIP_NAMES[2]]
    assert engine.transcribe(clip) == expected.transcribe(clip)


def test_filterbank_and_window_equal_nemos_for_parakeet_128_mels() -> None:
    from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

    nemo = FilterbankFeatures(sample_rate=16000, n_window_size=400, n_window_stride=160, window="hann",
                              normalize="per_feature", n_fft=512, preemph=0.97, nfilt=128, lowfreq=0,
                              highfreq=None, log=True, log_zero_guard_type="add",
                              log_zero_guard_value=2**-24, dither=0.0, pad_to=0, mag_power=2.0)
    np.testing.assert_array_equal(slaney_mel_filterbank(16000, 512, 128, 0.0, 8000.0), nemo.fb.numpy()[0])
    np.testing.assert_allclose(hann_window(400), nemo.window.numpy(), rtol=0, atol=1e-7)


def test_vocab_tokenizer_decodes_as_the_sentencepiece_model(nemo_paths: dict[str, Path]) -> None:
    from tests.conftest import load_nemo

    model = load_nemo(str(nemo_paths["tdt_a"]))
    processor = model.tokenizer.tokenizer
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    tokenizer = vocab_tokenizer(pieces)
    assert tokenizer.pieces == tuple(pieces)
    assert tokenizer.texts == tuple(processor.decode_pieces([p]) for p in pieces)
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(0, len(pieces), size=int(rng.integers(1, 30))).tolist()
        chosen = [pieces[i] for i in ids]
        assert tokenizer.decode_pieces(chosen) == processor.decode_pieces(chosen) == model.tokenizer.ids_to_text(ids)


def test_directory_detection(onnx_asr_dirs: dict[str, Path], converted: dict[str, Path]) -> None:
    assert is_onnx_asr_directory(onnx_asr_dirs["tdt_a"])
    assert not is_onnx_asr_directory(converted["tdt_a"])


def test_wrong_durations_are_refused(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "durations")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "durations": [0, 1, 2, 4]}))
    with pytest.raises(ManifestError, match="joint has 102 outputs"):
        Engine.load(directory)


@pytest.mark.parametrize(("change", "message"), [
    ({"durations": [0, 1, 2, 3, 2**63]}, r"decoding\.durations must be"),  # OverflowError at the first request
    ({"max_tokens_per_step": 2**40}, r"decoding\.max_symbols must be"),
], ids=["huge duration", "huge max_tokens_per_step"])
def test_config_values_are_held_to_the_manifests_ranges(change: dict[str, Any], message: str,
                                                        onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "config")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ManifestError, match=message):
        Engine.load(directory)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"durations": [1' + "0" * 5000 + "]}"],
                         ids=["deep nesting", "too many digits"])
def test_an_unreadable_config_is_a_manifest_error(text: str, onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    """RecursionError and Python's digit limit (a bare ValueError) came out of the load."""
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "config")
    (directory / "config.json").write_text(text)
    with pytest.raises(ManifestError, match=r"config\.json: cannot be read as a JSON config"):
        Engine.load(directory)


def test_a_vocabulary_id_of_other_digits_is_a_manifest_error(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    """``'²'.isdigit()`` is true, and ``int('²')`` a bare ValueError; a long bad line was quoted whole."""
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "vocab")
    lines = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (directory / "vocab.txt").write_text("\n".join(["<unk> ²", *lines[1:], "x" * 10_000]) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"vocab\.txt: line 1 should be '<piece> 0'") as error:
        Engine.load(directory)
    assert len(str(error.value)) < 300
    (directory / "vocab.txt").write_text("\n".join([*lines, "x" * 20_000_000]), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"vocab\.txt: .* bytes; a vocabulary is at most"):
        Engine.load(directory)


@pytest.mark.parametrize("value", ["input_states_1", "encoder_outputs", "outputs"])
def test_a_decoder_joint_value_without_a_declared_shape_is_a_manifest_error(
        value: str, onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Legal ONNX; an IndexError came out of reading the graph's sizes."""
    import onnx

    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "shapeless")
    path = directory / "decoder_joint-model.onnx"
    model = onnx.load(str(path))
    for info in [*model.graph.input, *model.graph.output]:
        if info.name == value:
            info.type.tensor_type.ClearField("shape")
    onnx.save(model, str(path))
    with pytest.raises(ManifestError, match="graph sizes are not static"):
        Engine.load(directory)


@pytest.mark.parametrize(("graph", "value"), [("joiner.onnx", 0), ("joiner.onnx", "output"), ("decoder.onnx", 2)])
def test_a_sherpa_onnx_value_without_a_declared_shape_is_a_manifest_error(
        graph: str, value: int | str, sherpa_dirs: dict[str, Path], tmp_path: Path) -> None:
    """As onnx-asr's decoder_joint: sizes read from a joiner or decoder value without a shape are a ManifestError,
    not an IndexError (``value``: an input's index, or the first output)."""
    import onnx

    directory = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "shapeless")
    path = directory / graph
    model = onnx.load(str(path))
    info = model.graph.output[0] if value == "output" else model.graph.input[int(value)]
    info.type.tensor_type.ClearField("shape")
    onnx.save(model, str(path))
    with pytest.raises(ManifestError, match="graph sizes are not static"):
        Engine.load(directory)


def test_a_joint_without_duration_outputs_is_called_rnnt() -> None:
    """A plain RNN-T export (labels and blank only) was told to "give the model's TDT durations"."""
    from parakeet_runtime.engine.model.onnx_asr import _durations

    with pytest.raises(ManifestError, match="no durations: an RNN-T model"):
        _durations({}, 97, 96, "decoder_joint-model.onnx")
    assert _durations({}, 102, 96, "decoder_joint-model.onnx") == (0, 1, 2, 3, 4)


def test_mel_count_disagreeing_with_the_encoder_is_refused(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "mels")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "features_size": 128}))
    with pytest.raises(ManifestError, match=r"features_size is 128.*takes 80 mel bins"):
        Engine.load(directory)


def test_subsampling_factor_disagreeing_with_the_encoder_is_refused(onnx_asr_dirs: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    """config.json's subsampling_factor was trusted: 4 on an encoder that subsamples by 8 halved every time."""
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "subsampling")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "subsampling_factor": 4}))
    with pytest.raises(ManifestError, match=r"subsampling_factor is 4, but encoder-model\.onnx subsamples by 8"):
        Engine.load(directory)


def _strided_encoder(path: Path, n_mels: int, width: int, factor: int) -> None:
    """A stand-in encoder in NeMo's export signature: a strided convolution to ``width`` channels."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((width, n_mels, factor), np.float32), "weight")
    step = numpy_helper.from_array(np.array(factor, np.int64), "factor")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["audio_signal", "weight"], ["outputs"], strides=[factor]),
         helper.make_node("Div", ["length", "factor"], ["encoded_lengths"])],
        "encoder",
        [helper.make_tensor_value_info("audio_signal", TensorProto.FLOAT, ["batch", n_mels, "frames"]),
         helper.make_tensor_value_info("length", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("encoded_lengths", TensorProto.INT64, None)],
        [weight, step])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_an_encoder_and_a_joint_of_different_models_are_refused(onnx_asr_dirs: dict[str, Path],
                                                                 sherpa_dirs: dict[str, Path], tmp_path: Path) -> None:
    """An encoder whose frames are narrower than the joint's input loaded, then every transcription failed with
    onnxruntime's own error; now the load is refused, in both layouts."""
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "mixed")
    _strided_encoder(directory / "encoder-model.onnx", 80, 40, 8)
    with pytest.raises(ManifestError, match=r"encoder-model\.onnx outputs frames of 40 values, but "
                                            r"decoder_joint-model\.onnx takes \d+: the two graphs come from"):
        Engine.load(directory)
    sherpa = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "mixed-sherpa")
    _strided_encoder(sherpa / "encoder.onnx", 80, 40, 8)
    with pytest.raises(ManifestError, match=r"encoder\.onnx outputs frames of 40 values, but joiner\.onnx takes"):
        Engine.load(sherpa)


def test_durations_without_a_positive_one_are_refused(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    """``durations: [0, 0, 0, 0, 0]`` loaded, and with a large max_tokens_per_step the search never ended."""
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "zero-durations")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "durations": [0, 0, 0, 0, 0],
                                                       "max_tokens_per_step": 10**9}))
    with pytest.raises(ManifestError, match="one of them positive"):
        Engine.load(directory)


def test_a_byte_order_mark_in_the_vocabulary_is_read_past(onnx_asr_dirs: dict[str, Path],
                                                          layout_engines: dict[str, Engine], clips: dict[str, Path],
                                                          tmp_path: Path) -> None:
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "bom")
    (directory / "vocab.txt").write_bytes(b"\xef\xbb\xbf" + (directory / "vocab.txt").read_bytes())
    clip = clips[CLIP_NAMES[0]]
    assert Engine.load(directory).transcribe(clip) == layout_engines["tdt_a"].transcribe(clip)


def test_a_directory_that_cannot_be_entered_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Looking for another layout's files in a directory without search permission raised PermissionError from
    ``Path.exists`` (tests run as root, for whom permissions do not apply: the error is simulated)."""
    from parakeet_runtime.engine.model import layouts

    def denied(directory: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(directory / "manifest.json"))

    monkeypatch.setattr(layouts, "is_sherpa_onnx_directory", denied)
    with pytest.raises(ModelDirectoryError, match=r"cannot read the model directory .*: Permission denied"):
        Engine.load(tmp_path)


def test_commands_check_every_layout_before_starting_workers(onnx_asr_dirs: dict[str, Path],
                                                             sherpa_dirs: dict[str, Path], tmp_path: Path) -> None:
    """``transcribe --ray`` and ``serve --ray`` refused other layouts ("no manifest.json") before starting Ray;
    they now check a directory as ``serve`` does."""
    from parakeet_runtime.engine import default_model_dir
    from parakeet_runtime.engine.model.layouts import check_model_dir

    for directory in (onnx_asr_dirs["tdt_a"], sherpa_dirs["tdt_a"], default_model_dir()):
        assert check_model_dir(directory) == directory
    with pytest.raises(ModelDirectoryError, match=r"no manifest\.json"):
        check_model_dir(tmp_path)


def test_vocab_without_blank_is_refused(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "vocab")
    lines = (directory / "vocab.txt").read_text().splitlines()
    (directory / "vocab.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ManifestError, match="<blk>"):
        Engine.load(directory)


def test_missing_encoder_is_refused(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "encoder")
    (directory / "encoder-model.onnx").unlink()
    with pytest.raises(ModelDirectoryError, match=r"encoder-model\.onnx"):
        Engine.load(directory)


def test_int8_variant_loads_when_it_is_the_only_one(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    """``*.int8.onnx`` (onnx-asr's quantised files, made here with ONNX Runtime's dynamic quantisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = onnx_asr_dirs["tdt_a"]
    directory = tmp_path / "int8"
    directory.mkdir()
    for name in ("vocab.txt", "config.json"):
        shutil.copyfile(source / name, directory / name)
    for stem in ("encoder-model", "decoder_joint-model"):
        quantize_dynamic(source / f"{stem}.onnx", directory / f"{stem}.int8.onnx", weight_type=QuantType.QUInt8)
    layout = load_onnx_asr(directory, providers=None, session=SessionOptions())
    assert layout.manifest.encoder.file == "encoder-model.int8.onnx"
    assert layout.manifest.encoder.precision == "int8"
    assert layout.manifest.joint.file == "decoder_joint-model.int8.onnx"
    with pytest.raises(ModelDirectoryError, match=r"encoder-model\.int8\.onnx"):
        load_onnx_asr(source, providers=None, session=SessionOptions(), precision="int8")


# --- sherpa-onnx ----------------------------------------------------------------------------------------


SHERPA_MODELS = ("tdt_a", "tdt_a_skip")
"""The checkpoints of Parakeet's features whose ``max_symbols`` is NeMo's default 10: sherpa-onnx's layout does
not record it, and the loader assumes 10 (``tdt_a_dur0``/``tdt_a_maxsym`` set 3 and 2)."""


@pytest.fixture(scope="module")
def sherpa_dirs(nemo_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.layout_exports import export_sherpa_onnx

    root = tmp_path_factory.mktemp("sherpa-onnx")
    return {
        name: export_sherpa_onnx(_fresh_nemo(nemo_paths[name]), root / name, int8=name == "tdt_a")
        for name in SHERPA_MODELS
    }


@pytest.fixture(scope="module")
def sherpa_engines(sherpa_dirs: dict[str, Path]) -> dict[str, Engine]:
    return {name: Engine.load(path) for name, path in sherpa_dirs.items()}


@pytest.mark.parametrize("model_name", SHERPA_MODELS)
def test_sherpa_onnx_layout_identical_to_nemo(
    model_name: str, sherpa_engines: dict[str, Engine], reference: Any, clips: dict[str, Path]
) -> None:
    engine = sherpa_engines[model_name]
    expected = reference(model_name)
    for clip_name in CLIP_NAMES:
        clip = clips[clip_name]
        assert_identical(engine.transcribe(clip), expected[str(clip)])


def test_sherpa_onnx_layout_reads_what_the_checkpoint_says(
    sherpa_engines: dict[str, Engine], nemo_paths: dict[str, Path]
) -> None:
    from tests.conftest import load_nemo

    for name, engine in sherpa_engines.items():
        model = load_nemo(str(nemo_paths[name]))
        manifest = engine.manifest
        assert manifest.encoder.file == "encoder.onnx"  # fp32 where both variants are there
        assert manifest.decoding.blank_id == model.decoding.blank_id
        assert manifest.decoding.durations == tuple(int(d) for d in model.decoding.durations)
        assert manifest.decoding.max_symbols == model.decoding.decoding.max_symbols
        assert manifest.encoder.subsampling_factor == model.cfg.encoder.subsampling_factor
        assert manifest.encoder.max_frames == model.cfg.encoder.pos_emb_max_len
        assert manifest.features.n_mels == model.cfg.preprocessor.features
        assert manifest.encoder.joint_hidden == model.joint.joint_hidden
        assert (manifest.predictor.layers, manifest.predictor.hidden) == (
            model.decoder.pred_rnn_layers, model.decoder.pred_hidden)
        ids = range(len(engine.tokenizer.pieces))
        assert engine.tokenizer.texts == tuple(model.tokenizer.ids_to_text([i]) for i in ids)


def test_sherpa_onnx_projections_run_once_per_frame_and_per_label(sherpa_engines: dict[str, Engine]) -> None:
    """The joiner is cut at its sum: the encoder projection is a graph of its own, run after the encoder,
    and the joint graph takes projected rows (its inputs are ``joint_hidden`` wide, not ``d_model``)."""
    engine = sherpa_engines["tdt_a"]
    model = engine.model
    assert model.encoder_projection is not None
    hidden = engine.manifest.encoder.joint_hidden
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((3, hidden)).astype(np.float32)
    predictor = rng.standard_normal((3, hidden)).astype(np.float32)
    logits = model.joint_rows(frames, predictor)
    assert isinstance(logits, np.ndarray) and logits.shape == (3, engine.manifest.joint.num_outputs)
    inputs = {i.name: i.shape for i in model.joint_session.get_inputs()}
    assert set(inputs) == {"encoder_frame", "predictor_output"}


def _sherpa_copy(source: Path, target: Path, fp32: bool = True) -> Path:
    target.mkdir()
    for path in source.iterdir():
        if fp32 != (".int8." in path.name) or path.name == "tokens.txt":
            shutil.copyfile(path, target / path.name)
    return target


def test_sherpa_onnx_int8_variant(sherpa_dirs: dict[str, Path], sherpa_engines: dict[str, Engine],
                                  clips: dict[str, Path], tmp_path: Path) -> None:
    """Both variants there: ``precision`` picks; only int8 there: loaded without asking; fp32 asked for where
    there is none: refused."""
    source = sherpa_dirs["tdt_a"]
    int8 = Engine.load(source, precision="int8")
    assert (int8.manifest.encoder.file, int8.manifest.predictor.file, int8.manifest.joint.file) == (
        "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx")
    assert int8.manifest.encoder.precision == "int8"
    assert Engine.load(source, precision="fp32").manifest.encoder.file == "encoder.onnx"
    only_int8 = Engine.load(_sherpa_copy(source, tmp_path / "int8", fp32=False))
    assert only_int8.manifest.encoder.file == "encoder.int8.onnx"
    clip = clips[CLIP_NAMES[2]]
    assert only_int8.transcribe(clip) == int8.transcribe(clip)
    assert len(int8.transcribe(clip).tokens) > 0
    with pytest.raises(ModelDirectoryError, match=r"encoder\.onnx"):
        Engine.load(tmp_path / "int8", precision="fp32")


def test_an_incomplete_fp32_set_beside_int8_is_said_as_a_warning(sherpa_dirs: dict[str, Path], tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """fp32 encoder and decoder but no fp32 joiner: the int8 set loads (its transcripts differ from fp32's), and
    that was said only at INFO."""
    directory = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "mixed", fp32=False)
    for name in ("encoder.onnx", "decoder.onnx"):
        shutil.copyfile(sherpa_dirs["tdt_a"] / name, directory / name)
    with caplog.at_level(logging.WARNING, logger="parakeet_runtime.engine.model.sherpa_onnx"):
        assert Engine.load(directory).manifest.joint.file == "joiner.int8.onnx"
    assert any("no joiner.onnx" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("feat_dim", "128", r"feat_dim is 128, but the encoder takes 80 mel bins"),
        ("vocab_size", "95", r"vocab_size is 95, but tokens\.txt has 96 pieces"),
        ("normalize_type", "", r"normalize_type is ''.*per_feature"),
        ("pred_hidden", "64", r"pred_hidden is 64, but decoder\.onnx's state has 96"),
        ("pred_rnn_layers", "1", r"pred_rnn_layers is 1, but decoder\.onnx's state has 2"),
        ("subsampling_factor", "4", r"subsampling_factor is 4, but the encoder subsamples by 8"),
        ("model_type", "EncDecCTCModelBPE", r"model_type is 'EncDecCTCModelBPE'"),
    ],
)
def test_sherpa_onnx_metadata_contradicting_the_graphs_is_refused(
    key: str, value: str, message: str, sherpa_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from tests.layout_exports import set_metadata

    directory = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / key)
    import onnxruntime

    metadata = dict(onnxruntime.InferenceSession(str(directory / "encoder.onnx")).get_modelmeta()
                    .custom_metadata_map)
    set_metadata(directory / "encoder.onnx", {**metadata, key: value})
    with pytest.raises(ManifestError, match=message):
        Engine.load(directory)


def test_sherpa_onnx_without_metadata_sizes_come_from_the_graphs(
    sherpa_dirs: dict[str, Path], sherpa_engines: dict[str, Engine], clips: dict[str, Path], tmp_path: Path
) -> None:
    from tests.layout_exports import set_metadata

    directory = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "bare")
    set_metadata(directory / "encoder.onnx", {})
    engine = Engine.load(directory)
    expected = sherpa_engines["tdt_a"]
    assert engine.manifest.encoder == expected.manifest.encoder
    assert engine.manifest.decoding == expected.manifest.decoding
    clip = clips[CLIP_NAMES[3]]
    assert engine.transcribe(clip) == expected.transcribe(clip)


def test_sherpa_onnx_missing_joiner_is_refused(sherpa_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "joiner")
    (directory / "decoder.onnx").unlink()
    with pytest.raises(ModelDirectoryError, match=r"decoder\.onnx"):
        Engine.load(directory)


def test_layout_detection(onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path]) -> None:
    from parakeet_runtime.engine.model.layouts import layout_of

    assert layout_of(onnx_asr_dirs["tdt_a"]) == "onnx-asr"
    assert layout_of(sherpa_dirs["tdt_a"]) == "sherpa-onnx"
    assert layout_of(sherpa_dirs["tdt_a"].parent) is None


def test_onnx_proto_round_trip_keeps_every_byte(onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path]) -> None:
    """The protobuf-only schema keeps what it does not declare (protobuf's unknown fields): parsed and
    serialised again, a model is the same ONNX message (the field order may differ)."""
    import onnx

    from parakeet_runtime.engine.model import onnx_proto

    for path in (onnx_asr_dirs["tdt_a"] / "decoder_joint-model.onnx", sherpa_dirs["tdt_a"] / "joiner.onnx",
                 sherpa_dirs["tdt_a"] / "decoder.int8.onnx", sherpa_dirs["tdt_a"] / "encoder.onnx"):
        data = path.read_bytes()
        again = onnx_proto.serialize(onnx_proto.parse_model(data, path.name))
        assert onnx.ModelProto.FromString(again) == onnx.ModelProto.FromString(data)
        assert len(again) == len(data)
    with pytest.raises(ManifestError, match="not an ONNX model"):
        onnx_proto.parse_model(b"\xff\xff\xff", "junk.onnx")


def _weights_outside_the_graph(path: Path, location: str) -> int:
    """Move every initializer of the graph at ``path`` into one external data file, named ``location`` in
    the graph; the bytes of that file."""
    import onnx

    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    if location != "weights.bin":
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save_model(model, str(path))
    return (path.parent / "weights.bin").stat().st_size


@pytest.mark.parametrize("layout", ["onnx-asr", "sherpa-onnx"])
def test_external_weights_of_cut_graphs_are_read_from_the_model_directory(
    layout: str, onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path], layout_engines: dict[str, Engine],
    sherpa_engines: dict[str, Engine], clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The graphs cut from decoder_joint (onnx-asr) or joiner (sherpa-onnx) are loaded from bytes, whose external
    data ONNX Runtime looks for in the process's working directory: a same-named file there was read as the
    weights (a wrong transcript, no error), and without one the directory did not load."""
    if layout == "onnx-asr":
        directory, graph, expected = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "dir"), "decoder_joint-model.onnx", \
            layout_engines["tdt_a"]
    else:
        directory, graph, expected = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "dir"), "joiner.onnx", \
            sherpa_engines["tdt_a"]
    size = _weights_outside_the_graph(directory / graph, "weights.bin")
    decoy = tmp_path / "elsewhere"
    decoy.mkdir()
    (decoy / "weights.bin").write_bytes(bytes(size))
    monkeypatch.chdir(decoy)
    clip = clips[CLIP_NAMES[1]]
    with Engine.load(directory) as engine:
        transcript = engine.transcribe(clip)
    assert transcript == expected.transcribe(clip)
    assert transcript.tokens


def test_sherpa_onnx_graphs_with_unnamed_nodes_load(sherpa_dirs: dict[str, Path], sherpa_engines: dict[str, Engine],
                                                    clips: dict[str, Path], tmp_path: Path) -> None:
    """Node names are optional in ONNX; joined with a prefix, the unnamed nodes of the two graphs became
    duplicates ("two nodes with same node name") and the directory did not load."""
    import onnx

    directory = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "unnamed")
    for graph in ("decoder.onnx", "joiner.onnx"):
        model = onnx.load(str(directory / graph))
        for node in model.graph.node:
            node.name = ""
        onnx.save(model, str(directory / graph))
    clip = clips[CLIP_NAMES[1]]
    with Engine.load(directory) as engine:
        transcript = engine.transcribe(clip)
    assert transcript == sherpa_engines["tdt_a"].transcribe(clip)
    assert transcript.tokens


@pytest.mark.parametrize(("location", "message"), [
    ("../weights.bin", r"external data must be a path inside the model directory, found '\.\./weights\.bin'"),
    ("/etc/hostname", r"external data must be a path inside the model directory, found '/etc/hostname'"),
    ("weights\x00.bin", r"external data must be a path inside the model directory, found 'weights\\x00\.bin'"),
    ("missing.bin", r"external data 'missing\.bin' is not a file inside"),
], ids=["parent", "absolute", "nul", "missing"])
def test_external_weights_outside_the_directory_are_refused(
    location: str, message: str, onnx_asr_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Refused as the manifest's own file names are (the same check); a NUL in the name was a bare ValueError."""
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "dir")
    _weights_outside_the_graph(directory / "decoder_joint-model.onnx", location)
    shutil.copyfile(directory / "weights.bin", tmp_path / "weights.bin")
    with pytest.raises(ManifestError, match=r"decoder_joint-model\.onnx: initializer .*'s " + message):
        Engine.load(directory)


# --- concurrency, on a directory of each layout ----------------------------------------------------------


def test_sherpa_onnx_batched_list_equals_one_at_a_time(
    sherpa_engines: dict[str, Engine], clips: dict[str, Path]
) -> None:
    paths: list[AudioInput] = [clips[name] for name in CLIP_NAMES]
    for engine in sherpa_engines.values():
        together = engine.transcribe(paths)
        assert together == [engine.transcribe(path) for path in paths]
        assert sum(len(t.tokens) for t in together) > 0


def test_another_backend_on_another_layout_is_refused(onnx_asr_dirs: dict[str, Path]) -> None:
    """backend="openvino" on an onnx-asr directory was ignored: its encoder ran on ONNX Runtime, and with bf16 the
    decoding still switched to int8, so tokens changed with nothing said."""
    from parakeet_runtime.engine import SessionOptions

    for precision in ("fp32", "bf16"):
        with pytest.raises(ValueError, match=r"project's model directories only.*convert-model --from onnx-asr"):
            Engine.load(onnx_asr_dirs["tdt_a"], session=SessionOptions(backend="openvino", precision=precision))
    with pytest.raises(ValueError, match="choose with precision="):  # a forced int8 scheme was ignored too
        Engine.load(onnx_asr_dirs["tdt_a"], session=SessionOptions(int8_weights="uint8"))


def test_options_for_this_projects_directories_are_refused_before_loading(
    onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify=True on another layout checked nothing and said nothing (they record no digests), and argmax_step=True
    was refused only after the graphs had loaded: both are a typed error now, before any graph loads."""
    from parakeet_runtime.engine.model import layouts

    def load(directory: Path, **_: Any) -> None:
        raise AssertionError(f"the graphs of {directory} were loaded before the option was refused")

    monkeypatch.setattr(layouts, "load_onnx_asr", load)
    monkeypatch.setattr(layouts, "load_sherpa_onnx", load)
    for name, directory in (("onnx-asr", onnx_asr_dirs["tdt_a"]), ("sherpa-onnx", sherpa_dirs["tdt_a"])):
        with pytest.raises(LayoutOptionError, match=rf"verify=True.*\({name} layout\) records none.*convert-model"):
            Engine.load(directory, verify=True)
        with pytest.raises(LayoutOptionError, match=rf"argmax_step=True needs.*\({name} layout\)"):
            Engine.load(directory, argmax_step=True)
    assert issubclass(LayoutOptionError, ValueError)


def test_sherpa_onnx_decodes_several_rows_in_one_step(sherpa_engines: dict[str, Engine]) -> None:
    """NeMo's decoder export declares the LSTM state c with the export's batch of one: every batched step failed
    in ONNX Runtime and the batch was retried input by input (right results, no batching, a warning each time)."""
    import numpy as np

    for engine in sherpa_engines.values():
        model = engine.model
        rows = 3
        outputs, state = model.start_rows(rows)
        frames = np.zeros((rows, model.manifest.encoder.joint_hidden), dtype=np.float32)
        labels = np.zeros(rows, dtype=np.int64)
        _, (h, c), logits = model.predict_joint_rows(labels, state, np.arange(rows), frames)
        assert isinstance(logits, np.ndarray) and h.shape[1] == c.shape[1] == rows and logits.shape[0] == rows
        assert outputs.shape[0] == rows


def test_threads_get_the_same_results_on_each_layout(
    layout_engines: dict[str, Engine], sherpa_engines: dict[str, Engine], clips: dict[str, Path]
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    paths = [clips[name] for name in CLIP_NAMES] * 3
    for engine in (layout_engines["tdt_a"], sherpa_engines["tdt_a_skip"]):
        alone = {path: engine.transcribe(path) for path in set(paths)}
        barrier = threading.Barrier(len(paths))

        def work(path: Path, engine: Engine = engine, barrier: threading.Barrier = barrier) -> Any:
            barrier.wait()
            return engine.transcribe(path)

        with ThreadPoolExecutor(max_workers=len(paths)) as pool:
            results = list(pool.map(work, paths))
        assert results == [alone[path] for path in paths]


# --- runtime only: no onnx, torch or NeMo -------------------------------------------------------------

_RUNTIME_ONLY = r"""
import json, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "torch", "nemo"):
            raise ImportError("blocked in this test: " + name)
        return None
sys.meta_path.insert(0, Blocker())
from parakeet_runtime.engine import Engine
from tests.parity import assert_identical
job = json.loads(sys.argv[1])
for directory, expected in job:
    for reference in expected.values():  # JSON made the reference's tuples lists
        for key in ("chars", "words", "segments"):
            reference[key] = [tuple(item) for item in reference[key]]
    engine = Engine.load(directory)
    clips = list(expected)
    results = engine.transcribe(clips)
    for clip, result in zip(clips, results):
        assert_identical(result, expected[clip])
        assert_identical(engine.transcribe(clip), expected[clip])
    engine.close()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "torch", "nemo"))
print(json.dumps(loaded))
"""


def test_layouts_load_and_run_without_onnx_torch_or_nemo(
    onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path], reference: Any, clips: dict[str, Path]
) -> None:
    """A runtime-only install (onnxruntime, numpy, protobuf): ``onnx`` unimportable in a fresh interpreter,
    both layouts load and give NeMo's transcripts, and no ``onnx`` module was imported."""
    import subprocess
    import sys

    job = []
    for dirs, name in ((onnx_asr_dirs, "tdt_a"), (sherpa_dirs, "tdt_a"), (sherpa_dirs, "tdt_a_skip")):
        expected = reference(name)
        job.append((str(dirs[name]), {str(clips[c]): expected[str(clips[c])] for c in CLIP_NAMES}))
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", _RUNTIME_ONLY, json.dumps(job)], capture_output=True, text=True,
                          cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# --- hub names ------------------------------------------------------------------------------------------

_HUB = r"""
import json, socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network access in an offline test")
socket.socket.connect = refuse
socket.create_connection = refuse
from parakeet_runtime.engine import Engine
from parakeet_runtime.engine.errors import ModelDownloadError
name, cache, clip = sys.argv[1:4]
engine = Engine.load(name, hub_cache_dir=cache, precision=sys.argv[4] or None)
result = engine.transcribe(clip)
try:
    Engine.load("nobody/not-cached", hub_cache_dir=cache)
    error = ""
except ModelDownloadError as exc:
    error = str(exc)
print(json.dumps({"dir": str(engine.model_dir), "file": engine.manifest.encoder.file,
                  "ids": [t.id for t in result.tokens], "text": result.text, "error": error}))
"""


def _hub_cache(root: Path, repo: str, source: Path, revision: str) -> Path:
    """A hub cache laid out as huggingface_hub lays it out: blobs are not needed for reading a snapshot."""
    owner, name = repo.split("/")
    storage = root / f"models--{owner}--{name}"
    shutil.copytree(source, storage / "snapshots" / revision)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(revision)
    return root


@pytest.mark.parametrize(("layout", "repo", "precision"), [
    ("onnx-asr", "istupakov/parakeet-tdt-0.6b-v3-onnx", ""),
    ("sherpa-onnx", "csukuangfj/sherpa-onnx-nemo-parakeet-tdt-0.6b-v2-int8", "int8"),
])
def test_hub_name_from_the_cache_offline(
    layout: str, repo: str, precision: str, onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path],
    layout_engines: dict[str, Engine], sherpa_engines: dict[str, Engine], clips: dict[str, Path], tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("huggingface_hub")
    source = onnx_asr_dirs["tdt_a"] if layout == "onnx-asr" else sherpa_dirs["tdt_a"]
    cache = _hub_cache(tmp_path / "hub", repo, source, "0123456789abcdef0123456789abcdef01234567")
    clip = clips[CLIP_NAMES[2]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([sys.executable, "-c", _HUB, repo, str(cache), str(clip), precision], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["dir"]).parent.parent.name == "models--" + repo.replace("/", "--")
    if layout == "onnx-asr":
        expected = layout_engines["tdt_a"].transcribe(clip)
        assert out["file"] == "encoder-model.onnx"
    else:
        expected = Engine.load(source, precision="int8").transcribe(clip)
        assert out["file"] == "encoder.int8.onnx"
    assert (out["ids"], out["text"]) == ([t.id for t in expected.tokens], expected.text)
    assert "nobody/not-cached: not in the hub cache, and the hub cannot be reached" in out["error"]


def test_cli_says_in_one_line_that_a_hub_name_cannot_be_fetched(tmp_path: Path, clips: dict[str, Path]) -> None:
    import os
    import subprocess
    import sys

    pytest.importorskip("huggingface_hub")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "transcribe", "--model",
         "istupakov/parakeet-tdt-0.6b-v3-onnx", str(clips[CLIP_NAMES[0]])],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "parakeet-runtime: error: istupakov/parakeet-tdt-0.6b-v3-onnx: not in the hub cache, and the hub cannot be "
        "reached (no network, or HF_HUB_OFFLINE is set)"
    ]


# --- convert-model --from / --layout --------------------------------------------------------------------

_CONVERT_WITHOUT_NEMO = r"""
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "nemo"):
            raise ImportError("blocked in this test: " + name)
        return None
sys.meta_path.insert(0, Blocker())
from parakeet_runtime.export.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "nemo")]
sys.exit(code)
"""


def _convert_model(*args: str | Path) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _CONVERT_WITHOUT_NEMO, *map(str, args)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent, timeout=600)


@pytest.fixture(scope="module")
def converted_from_layouts(
    onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("from-layouts")
    out = {}
    for layout, source in (("onnx-asr", onnx_asr_dirs["tdt_a_dur0"]), ("sherpa-onnx", sherpa_dirs["tdt_a_skip"])):
        proc = _convert_model("--from", layout, source, root / layout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "probe clips transcribed as by the source directory" in proc.stdout
        out[layout] = root / layout
    return out


@pytest.mark.parametrize(("layout", "model_name"), [("onnx-asr", "tdt_a_dur0"), ("sherpa-onnx", "tdt_a_skip")])
def test_convert_from_layout_without_nemo_is_identical_to_nemo(
    layout: str, model_name: str, converted_from_layouts: dict[str, Path], reference: Any, clips: dict[str, Path]
) -> None:
    """``convert-model --from`` with torch and NeMo unimportable: this project's layout (manifest, step graph,
    the encoder's output already projected), NeMo's transcripts."""
    from parakeet_runtime.engine.model.manifest import load_manifest

    directory = converted_from_layouts[layout]
    manifest = load_manifest(directory, verify=True)
    assert manifest.step is not None and manifest.encoder.output_frames == "encoder_projected"
    assert manifest.provenance.source.endswith(model_name)
    engine = Engine.load(directory)
    assert engine.model.encoder_projection is None
    expected = reference(model_name)
    for clip_name in CLIP_NAMES:
        assert_identical(engine.transcribe(clips[clip_name]), expected[str(clips[clip_name])])


def test_convert_from_the_wrong_layout_is_refused_in_one_line(sherpa_dirs: dict[str, Path], tmp_path: Path) -> None:
    proc = _convert_model("--from", "onnx-asr", sherpa_dirs["tdt_a"], tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"convert-model: error: {sherpa_dirs['tdt_a']} is in sherpa-onnx's layout"
    ]
    assert not (tmp_path / "out").exists()


def test_layout_onnx_asr_is_read_by_onnx_asr_with_this_engines_tokens(
    converted_from_layouts: dict[str, Path], clips: dict[str, Path], tmp_path: Path
) -> None:
    """``convert-model --layout onnx-asr`` on a model directory: onnx-asr (PyPI) loads it, and its tokens and
    their frames are this engine's."""
    import onnx_asr

    source = converted_from_layouts["sherpa-onnx"]
    proc = _convert_model("--layout", "onnx-asr", source, tmp_path / "onnx-asr")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "onnx-asr").stat().st_mode & 0o777 == 0o755  # not the staging folder's owner-only mode
    theirs = onnx_asr.load_model("nemo-conformer-tdt", tmp_path / "onnx-asr").with_timestamps()
    engine = Engine.load(source)
    seconds_per_frame = engine.manifest.encoder.subsampling_factor * engine.manifest.features.window_stride
    compared = 0
    for clip_name in CLIP_NAMES:
        ours = engine.transcribe(clips[clip_name])
        result = theirs.recognize(str(clips[clip_name]))
        assert result.tokens == [t.piece.replace("\u2581", " ") for t in ours.tokens]
        assert result.timestamps is not None
        assert [round(s / seconds_per_frame) for s in result.timestamps] == [t.frame for t in ours.tokens]
        compared += len(ours.tokens)
    assert compared > 0

    # This engine reads the directory back (its joint takes projected frames, unlike NeMo's export; the graph's
    # metadata says where to cut it): the same tokens, frames and durations as the directory it was written from.
    written = Engine.load(tmp_path / "onnx-asr")
    for field in ("d_model", "joint_hidden", "max_frames", "subsampling_factor"):
        assert getattr(written.manifest.encoder, field) == getattr(engine.manifest.encoder, field), field
    for clip_name in CLIP_NAMES:
        again, ours = written.transcribe(clips[clip_name]), engine.transcribe(clips[clip_name])
        assert [(t.id, t.frame, t.duration) for t in again.tokens] == [(t.id, t.frame, t.duration) for t in ours.tokens]
        assert again.text == ours.text

    import onnx

    decoder_joint = tmp_path / "onnx-asr" / "decoder_joint-model.onnx"
    graph = onnx.load(str(decoder_joint))
    del graph.metadata_props[:]  # as written before the metadata: refused in one clear line
    onnx.save(graph, str(decoder_joint))
    with pytest.raises(ManifestError, match="does not say where its joint begins"):
        Engine.load(tmp_path / "onnx-asr")


def test_sherpa_onnx_durations_come_from_the_joiners_size_or_are_refused() -> None:
    from parakeet_runtime.engine.model.sherpa_onnx import _durations

    assert _durations(96 + 1 + 5, 96, "joiner.onnx") == (0, 1, 2, 3, 4)
    with pytest.raises(ManifestError, match="no TDT durations"):
        _durations(96 + 1, 96, "joiner.onnx")
    with pytest.raises(ManifestError, match=r"3 TDT duration outputs; the layout does not record"):
        _durations(96 + 1 + 3, 96, "joiner.onnx")


def test_hub_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from parakeet_runtime.engine.model.hub import is_hub_name

    assert is_hub_name("istupakov/parakeet-tdt-0.6b-v3-onnx")
    assert not is_hub_name("./istupakov/parakeet")
    assert not is_hub_name("/abs/path")
    assert not is_hub_name("a/b/c")
    assert not is_hub_name("owner/..")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not is_hub_name("owner/name")  # a local directory of that name wins


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "onnx-asr", "--layout", "onnx-asr"], "--from and --layout go one way each"),
    (["--from", "onnx-asr", "--quantize", "int8"], "--from keeps the source's graphs"),
    (["--precision", "int8"], "--precision needs --from"),
])
def test_convert_model_layout_flags_are_checked(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from parakeet_runtime.export.cli import parse_args

    with pytest.raises(SystemExit) as exited:
        parse_args([*args, str(tmp_path), str(tmp_path / "out")])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_precision_is_refused(onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path]) -> None:
    for directory in (onnx_asr_dirs["tdt_a"], sherpa_dirs["tdt_a"]):  # an argument error, before anything loads
        with pytest.raises(ValueError, match="precision must be 'fp32', 'int8' or None"):
            Engine.load(directory, precision="fp16")


# --- int8 decoding weights on other runtimes' layouts -------------------------------------------------------

@pytest.mark.parametrize("layout", ["onnx-asr", "sherpa-onnx"])
def test_int8_decoding_weights_on_other_layouts(layout: str, onnx_asr_dirs: dict[str, Path],
                                                sherpa_dirs: dict[str, Path], clips: dict[str, Path],
                                                caplog: pytest.LogCaptureFixture) -> None:
    """The decoding graphs cut from another runtime's layout take the int8 rewrite too (their LSTMs and the
    joint's products), and decode close to their fp32 selves (the fixture drifts on its long clip)."""
    import logging

    directory = (onnx_asr_dirs if layout == "onnx-asr" else sherpa_dirs)["tdt_a_skip"]
    audio = [clips[name] for name in CLIP_NAMES]
    with Engine.load(directory) as fp32:
        assert fp32.model.decoder_weights == "fp32"
        reference = [[t.id for t in fp32.transcribe(clip).tokens] for clip in audio]
    with caplog.at_level(logging.INFO, logger="parakeet_runtime.engine.model.onnx_model"):
        int8 = Engine.load(directory, session=SessionOptions(decoder_weights="int8"))
    with int8:
        assert int8.model.decoder_weights == "int8"
        tokens = [[t.id for t in int8.transcribe(clip).tokens] for clip in audio]
    rewrites = [r.getMessage() for r in caplog.records if "int8 decoding weights" in r.getMessage()]
    assert any("0 LSTM steps" not in m for m in rewrites), rewrites  # the prediction network's LSTMs
    assert any("1 joint output layers" in m for m in rewrites), rewrites
    identical = sum(a == b for a, b in zip(reference, tokens, strict=True))
    print(f"{layout} tdt_a_skip int8 decoding: {identical}/{len(audio)} clips identical")
    assert identical >= len(audio) // 2


def test_what_a_directory_lacks_is_named(onnx_asr_dirs: dict[str, Path], sherpa_dirs: dict[str, Path],
                                         tmp_path: Path) -> None:
    """A directory with part of another layout said only "no manifest.json"; a file said "model directory not
    found"."""
    onnx_asr = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "no-vocab")
    (onnx_asr / "vocab.txt").unlink()
    with pytest.raises(ModelDirectoryError, match=r"no manifest\.json; it holds encoder-model\.onnx, "
                                                  r"decoder_joint-model\.onnx of onnx-asr's layout, which also "
                                                  r"needs vocab\.txt"):
        Engine.load(onnx_asr)
    sherpa = _sherpa_copy(sherpa_dirs["tdt_a"], tmp_path / "no-tokens")
    (sherpa / "tokens.txt").unlink()
    with pytest.raises(ModelDirectoryError, match=r"sherpa-onnx's layout, which also needs tokens\.txt"):
        Engine.load(sherpa)
    with pytest.raises(ModelDirectoryError, match=r"encoder\.onnx is a file: give the model directory"):
        Engine.load(sherpa / "encoder.onnx")
    checkpoint = tmp_path / "model.nemo"
    checkpoint.write_bytes(b"")
    with pytest.raises(ModelDirectoryError, match=r"is a NeMo checkpoint: convert it"):
        Engine.load(checkpoint)
    with pytest.raises(ModelDirectoryError, match=r"no manifest\.json$"):
        Engine.load(tmp_path / "no-vocab" / ".." / "no-tokens" / "..")


# --- findings of a convert-model probe (2026-12-02) ----------------------------------------------------------


def test_layout_onnx_asr_refuses_features_that_are_not_parakeets(converted: dict[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """onnx-asr's layout records no feature settings: tdt_b (64 mels, 16 ms hop) was written, and both runtimes
    then read it with Parakeet's (the engine transcribed nonsense; onnx-asr found no ``nemo64`` preprocessor)."""
    from parakeet_runtime.export.cli import main

    out = tmp_path / "tdt_b-onnx-asr"
    assert main(["--layout", "onnx-asr", str(converted["tdt_b"]), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "64 mel bins; onnx-asr's layout has Parakeet's preprocessing" in err, err
    assert not out.exists()


def test_layout_from_a_model_directory_refuses_options_it_would_ignore(converted: dict[str, Path], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from parakeet_runtime.export.cli import parse_args

    with pytest.raises(SystemExit) as exited:
        parse_args(["--layout", "onnx-asr", str(converted["tdt_a"]), str(tmp_path / "o"), "--quantize", "int8",
                    "--languages", "en"])
    assert exited.value.code == 2
    assert "rewrites its graphs as they are: --quantize, --languages apply to a conversion" in capsys.readouterr().err


def test_an_int8_directory_is_written_as_onnx_asrs_int8_variant(nemo_paths: dict[str, Path], clips: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """The int8 encoder was saved under the fp32 name (encoder-model.onnx): the engine and onnx-asr took it for
    fp32 (fp32 decoding weights), and precision='int8' found nothing to load."""
    import onnx_asr

    from parakeet_runtime.engine import SessionOptions
    from parakeet_runtime.export.cli import main
    from parakeet_runtime.export.convert import convert

    int8 = tmp_path / "int8"
    convert(str(nemo_paths["tdt_a"]), int8, quantize="int8")
    out = tmp_path / "onnx-asr"
    assert main(["--layout", "onnx-asr", str(int8), str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.onnx")) == ["decoder_joint-model.int8.onnx", "encoder-model.int8.onnx"]
    written = Engine.load(out, precision="int8")
    assert written.model.encoder_file == "encoder-model.int8.onnx"
    assert written.manifest.encoder.precision == "int8" and written.model.decoder_weights == Engine.load(
        int8).model.decoder_weights
    source = Engine.load(int8, session=SessionOptions(int8_weights="uint8"))  # the graph written
    for name in CLIP_NAMES[:3]:
        assert written.transcribe(clips[name]).tokens == source.transcribe(clips[name]).tokens
    assert onnx_asr.load_model("nemo-conformer-tdt", out, quantization="int8").recognize(str(clips["c2_sentence"]))


def test_a_layout_written_here_converts_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--from onnx-asr`` of this project's own ``--layout onnx-asr`` output failed: its encoder already had a
    tensor named ``encoder_projected``. Now the round trip gives the same tokens, frames and durations."""
    from parakeet_runtime.engine import default_model_dir, sample_audio_path
    from parakeet_runtime.export.cli import main

    assert main(["--layout", "onnx-asr", str(default_model_dir()), str(tmp_path / "onnx-asr")]) == 0
    assert main(["--from", "onnx-asr", str(tmp_path / "onnx-asr"), str(tmp_path / "back")]) == 0, (
        capsys.readouterr().err)
    back, original = Engine.load(tmp_path / "back"), Engine.load()
    ours, theirs = back.transcribe(sample_audio_path()), original.transcribe(sample_audio_path())
    assert [(t.id, t.frame, t.duration) for t in ours.tokens] == [(t.id, t.frame, t.duration) for t in theirs.tokens]
