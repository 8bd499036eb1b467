"""Other runtimes' directory layouts: ``Engine.load`` on onnx-asr's NeMo TDT layout, against NeMo.

The layouts are written here from the fixture checkpoints the way onnx-asr's hub models were made
(NeMo's own ``model.export``, ``vocab.txt``, ``config.json``: ``tests/layout_exports.py``). The fixtures of
geometry A use Parakeet's preprocessing (25/10 ms Hann window, 512-point FFT, slaney mels, pre-emphasis,
per-feature normalisation) with 80 mel bins, which the layout states in ``features_size``; geometry B
(64 mels, 32/16 ms) is not Parakeet's and is not a layout the engine can describe.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parakeet_runtime.engine import Engine
from parakeet_runtime.engine.errors import ManifestError, ModelDirectoryError
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


def test_mel_count_disagreeing_with_the_encoder_is_refused(onnx_asr_dirs: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(onnx_asr_dirs["tdt_a"], tmp_path / "mels")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "features_size": 128}))
    with pytest.raises(ManifestError, match=r"features_size is 128.*takes 80 mel bins"):
        Engine.load(directory)


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
