"""A second geometry in other runtimes' layouts: NeMo's own exports in onnx-asr's and sherpa-onnx's layouts,
loaded by ``Engine.load`` with no conversion step, identical to NeMo ``transcribe(timestamps=True)``.

``tests/test_layouts.py`` covers geometry A (the fixture checkpoints of Parakeet's preprocessing). Geometry B
of the fixtures does not use Parakeet's preprocessing, which the layouts do not carry, so it cannot be
written in them. The model here has Parakeet's preprocessing exactly as ``engine/model/onnx_asr.py`` assumes
it (16 kHz, 128 mels, 512-point FFT, 25/10 ms Hann window, per-feature normalisation) and an encoder, predictor
and joint shaped unlike geometry A's in every size the layouts let differ (``GEOMETRY_C``). It is built here
(in a temporary directory) and not trained: NeMo's output is the reference whatever the weights are. A random
FastConformer maps every frame to nearly the same output, so the weights are shaped first
(:func:`_spread_frames_and_labels`) for the reference to exercise decoding: many labels, every duration, words
and several segments on the fixture clips (0.5 s to 61 s, none a whole number of frames long).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parakeet_runtime.engine import Engine
from parakeet_runtime.engine.requests.audio import AudioInput
from tests.conftest import HAVE_NEMO
from tests.fixtures.build import CLIP_NAMES
from tests.fixtures.nemo_config import GEOMETRY_A, Geometry
from tests.parity import assert_identical

pytestmark = [pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")]

GEOMETRY_C = Geometry(
    name="tdt_c",
    vocab_size=72,
    durations=(0, 1, 2, 3, 4),  # sherpa-onnx's layout infers [0..4] from the joiner's size
    d_model=80,
    n_layers=3,
    n_heads=2,
    subsampling_factor=4,
    subsampling_conv_channels=32,
    conv_kernel_size=5,
    n_mels=128,
    window_size=0.025,
    window_stride=0.01,
    n_fft=512,
    pred_hidden=48,
    pred_rnn_layers=1,
    joint_hidden=72,
)
"""Parakeet's features (128 mels, 25/10 ms, 512 FFT); dw_striding ×4 with 32 channels, 3 layers of width 80
with 2 heads and kernel 5, one predictor layer of 48, a joint of 72, 72 pieces, ``max_symbols`` 10 (the
default both layouts assume)."""

LAYOUTS = ("onnx-asr", "sherpa-onnx")

SEED = 0
PROJECTION_SCALE = 3.0
"""Factor on the joint's encoder projection and output layer: sharper logits that follow the frames."""
PREDICTOR_SCALE = 10.0
"""Factor on the joint's predictor projection, so that the previous label weighs on the next one."""
PUNCTUATION_BIAS = 2.5
"""Added to the logits of ``.``, ``?`` and ``!``: segment ends (NeMo splits segments there)."""
DURATION_0_BIAS = 2.0
"""Added to duration 0's logit: some labels without a step, which a random joint almost never picks."""


def _spread_frames_and_labels(model: Any) -> None:
    """Shape a random model's weights so that its transcripts exercise decoding.

    The encoder's linear and convolution biases are zeroed (with per-feature normalised input, they are what
    makes every output frame alike), the joint's projections and output layer scaled, and the punctuation and
    duration-0 logits raised. The arithmetic is unchanged: same modules, same shapes, other values.
    """
    import torch

    vocabulary = list(model.joint.vocabulary)
    final = model.joint.joint_net[-1]
    with torch.no_grad():
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv1d | torch.nn.Conv2d) and module.bias is not None:
                module.bias.zero_()
        model.joint.enc.bias.zero_()
        model.joint.enc.weight.mul_(PROJECTION_SCALE)
        model.joint.pred.weight.mul_(PREDICTOR_SCALE)
        final.weight.mul_(PROJECTION_SCALE)
        for piece in (".", "?", "!"):
            final.bias[vocabulary.index(piece)] += PUNCTUATION_BIAS
        final.bias[len(vocabulary) + 1] += DURATION_0_BIAS  # the labels, the blank, then the durations


@pytest.fixture(scope="module")
def geometry_c_nemo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The geometry C checkpoint (``.nemo``): a SentencePiece tokenizer trained on the fixture corpus, the model
    built from ``model_config`` with seeded random weights, shaped by :func:`_spread_frames_and_labels`."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    from tests.fixtures.build import train_tokenizer
    from tests.fixtures.corpus import TEST_SENTENCES, TRAIN_SENTENCES
    from tests.fixtures.nemo_config import model_config

    root = tmp_path_factory.mktemp("geometry-c")
    tokenizer = train_tokenizer([*TRAIN_SENTENCES, *TEST_SENTENCES], GEOMETRY_C.vocab_size, root / "tokenizer")
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = EncDecRNNTBPEModel(cfg=OmegaConf.create(model_config(GEOMETRY_C, str(tokenizer))))
    model.eval()
    _spread_frames_and_labels(model)
    path = root / f"{GEOMETRY_C.name}.nemo"
    model.save_to(str(path))
    return path


@pytest.fixture(scope="module")
def geometry_c_reference(geometry_c_nemo: Path, clips: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """NeMo ``transcribe(timestamps=True)`` of each fixture clip, one per batch (conftest's reference)."""
    from tests.conftest import nemo_transcripts

    return nemo_transcripts(str(geometry_c_nemo), tuple(str(p) for p in clips.values()))


@pytest.fixture(scope="module")
def geometry_c_dirs(geometry_c_nemo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkpoint written in each layout, each from a model of its own (export changes module state)."""
    from nemo.collections.asr.models import ASRModel

    from tests.layout_exports import export_onnx_asr, export_sherpa_onnx

    def fresh() -> Any:
        model = ASRModel.restore_from(str(geometry_c_nemo), map_location="cpu")
        model.eval()
        return model

    root = tmp_path_factory.mktemp("geometry-c-layouts")
    return {
        "onnx-asr": export_onnx_asr(fresh(), root / "onnx-asr"),
        "sherpa-onnx": export_sherpa_onnx(fresh(), root / "sherpa-onnx"),
    }


@pytest.fixture(scope="module")
def geometry_c_engines(geometry_c_dirs: dict[str, Path]) -> dict[str, Engine]:
    return {layout: Engine.load(directory) for layout, directory in geometry_c_dirs.items()}


def test_geometry_c_differs_from_geometry_a_but_not_in_preprocessing() -> None:
    """What makes this a second geometry: every encoder, predictor and joint size differs from geometry A's;
    the features are Parakeet's, as the layouts assume."""
    for field in ("d_model", "n_layers", "n_heads", "subsampling_factor", "subsampling_conv_channels",
                  "conv_kernel_size", "n_mels", "pred_hidden", "pred_rnn_layers", "joint_hidden", "vocab_size"):
        assert getattr(GEOMETRY_C, field) != getattr(GEOMETRY_A, field), field
    from parakeet_runtime.engine.model import onnx_asr

    assert GEOMETRY_C.sample_rate == onnx_asr.SAMPLE_RATE
    assert GEOMETRY_C.n_fft == onnx_asr.N_FFT
    assert round(GEOMETRY_C.window_size * GEOMETRY_C.sample_rate) == onnx_asr.WIN_LENGTH
    assert round(GEOMETRY_C.window_stride * GEOMETRY_C.sample_rate) == onnx_asr.HOP_LENGTH
    assert GEOMETRY_C.durations == onnx_asr.DEFAULT_DURATIONS


def test_geometry_c_reference_exercises_decoding(
    geometry_c_reference: dict[str, dict[str, Any]], clips: dict[str, Path]
) -> None:
    """NeMo's transcripts of the shaped random model are not degenerate: tokens on every clip but the
    shortest, many distinct labels, every duration, and more than one segment on some clip."""
    results = [geometry_c_reference[str(clips[name])] for name in CLIP_NAMES]
    assert all(r["ids"] for r in results[1:])
    assert len({i for r in results for i in r["ids"]}) >= 10
    assert {d for r in results for d in r["durations"]} == set(GEOMETRY_C.durations)
    assert max(len(r["segments"]) for r in results) > 1
    assert sum(len(r["words"]) for r in results) > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_geometry_c_layout_identical_to_nemo(
    layout: str,
    geometry_c_dirs: dict[str, Path],
    geometry_c_engines: dict[str, Engine],
    geometry_c_reference: dict[str, dict[str, Any]],
    clips: dict[str, Path],
) -> None:
    """``Engine.load`` on NeMo's own export, no conversion: tokens, durations, frames, text, words and
    segments equal NeMo's on each clip, one at a time and as one batch."""
    from parakeet_runtime.engine.model.layouts import layout_of

    directory = geometry_c_dirs[layout]
    assert layout_of(directory) == layout
    engine = geometry_c_engines[layout]
    assert not (directory / "manifest.json").exists()
    paths: list[AudioInput] = [clips[name] for name in CLIP_NAMES]
    for clip in paths:
        assert_identical(engine.transcribe(clip), geometry_c_reference[str(clip)])
    for clip, result in zip(paths, engine.transcribe(paths), strict=True):
        assert_identical(result, geometry_c_reference[str(clip)])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_geometry_c_layout_reads_what_the_checkpoint_says(
    layout: str, geometry_c_engines: dict[str, Engine], geometry_c_nemo: Path
) -> None:
    from tests.conftest import load_nemo

    model = load_nemo(str(geometry_c_nemo))
    manifest = geometry_c_engines[layout].manifest
    assert manifest.features.n_mels == model.cfg.preprocessor.features == GEOMETRY_C.n_mels
    assert manifest.encoder.subsampling_factor == model.cfg.encoder.subsampling_factor
    assert manifest.encoder.subsampling_factor == GEOMETRY_C.subsampling_factor
    assert manifest.encoder.max_frames == model.cfg.encoder.pos_emb_max_len
    assert manifest.encoder.joint_hidden == model.joint.joint_hidden == GEOMETRY_C.joint_hidden
    assert (manifest.predictor.layers, manifest.predictor.hidden) == (
        model.decoder.pred_rnn_layers, model.decoder.pred_hidden)
    assert manifest.decoding.blank_id == model.decoding.blank_id
    assert manifest.decoding.durations == tuple(int(d) for d in model.decoding.durations)
    assert manifest.decoding.max_symbols == model.decoding.decoding.max_symbols
    engine = geometry_c_engines[layout]
    featurizer = model.preprocessor.featurizer
    np.testing.assert_array_equal(engine.features.filterbank, featurizer.fb.numpy()[0])
    np.testing.assert_allclose(engine.features.window, featurizer.window.numpy(), rtol=0, atol=1e-7)
    ids = range(len(engine.tokenizer.pieces))
    assert engine.tokenizer.texts == tuple(model.tokenizer.ids_to_text([i]) for i in ids)
