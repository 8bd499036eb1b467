"""Local attention (NeMo's ``rel_pos_local_attn``, the long-form setting): its export forward against NeMo's
banded attention, the exported encoder for inputs of any length, and converted directories whose transcripts
are identical to NeMo's on the same switched model, at two contexts (one asymmetric) and two geometries,
converted through the API from a saved switched checkpoint and through ``convert-model --attention local``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import HAVE_NEMO, nemo_transcripts
from tests.int8_checks import INTEGER_PRODUCTS
from tests.parity import assert_identical

pytestmark = [pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")]

CLIP_NAMES = ("c0_0.5s", "c2_sentence", "c3_multi", "c4_long")
"""Fixture clips compared on every variant (0.5 s to 61 s: one window up to hundreds of them)."""


# --- the export forward against NeMo's module --------------------------------------------------------------


@pytest.mark.parametrize("context", [[8, 2], [2, 8], [16, 16], [3, 2], [0, 4], [4, 0], [7, 3]])
def test_export_forward_matches_nemo_banded_attention(context: list[int]) -> None:
    """Every valid query row equals NeMo's ``RelPositionMultiHeadAttentionLongformer`` (its asymmetric
    position columns included), for lengths below, at and across window boundaries, with padded rows."""
    import torch
    from nemo.collections.asr.parts.submodules.multi_head_attention import (
        LocalAttRelPositionalEncoding,
        RelPositionMultiHeadAttentionLongformer,
    )

    from parakeet_runtime.export.graph_forwards import _local_attention_forward

    torch.manual_seed(1)
    attention = RelPositionMultiHeadAttentionLongformer(
        n_head=4, n_feat=32, dropout_rate=0.0, pos_bias_u=None, pos_bias_v=None, att_context_size=context
    ).eval()
    with torch.no_grad():  # NeMo initialises the biases to zero: give the position terms some weight
        attention.pos_bias_u.normal_()
        attention.pos_bias_v.normal_()
    encoding = LocalAttRelPositionalEncoding(att_context_size=context, d_model=32, dropout_rate=0.0, max_len=64)
    encoding.extend_pe(64, "cpu", torch.float32)
    for time in (1, 2, 3, 7, 16, 17, 33, 50):
        x = torch.randn(3, time, 32)
        lengths = torch.tensor([time, max(1, time - 3), max(1, time // 2)])
        pad_mask = torch.arange(time)[None] >= lengths[:, None]
        _, pos_emb = encoding(x)
        with torch.inference_mode():
            expected = attention(x, x, x, pad_mask, pos_emb)
            got = _local_attention_forward(attention, x, x, x, pad_mask, pos_emb)
        for row, valid in enumerate(lengths.tolist()):
            torch.testing.assert_close(got[row, :valid], expected[row, :valid], rtol=0, atol=1e-5)


def test_band_to_window_places_each_offset() -> None:
    import torch

    from parakeet_runtime.export.graph_forwards import band_to_window

    chunk, positions = 3, 4
    band = torch.arange(1, chunk * positions + 1, dtype=torch.float32).reshape(chunk, positions)
    window = band_to_window(band, chunk)
    assert window.shape == (chunk, chunk + positions - 1)
    for r in range(chunk):
        for j in range(chunk + positions - 1):
            assert window[r, j] == (band[r, j - r] if 0 <= j - r < positions else 0.0)


# --- the exported encoder graph -------------------------------------------------------------------------------


@pytest.mark.parametrize(("geometry_name", "context"), [("GEOMETRY_A", [8, 2]), ("GEOMETRY_B", [16, 16]),
                                                        ("GEOMETRY_A", [2, 5])])
def test_encoder_graph_takes_any_length(geometry_name: str, context: list[int], tmp_path: Path,
                                        nemo_paths: dict[str, Path]) -> None:
    """Exported once (at NeMo's export input's length), the graph matches NeMo's encoder on single frames,
    lengths off the window grid, padded batches and an input eight times the export's."""
    from tests.test_encoder_graph import _check_against_nemo, _export
    from tests.test_graph_forwards import _model

    model = _model(geometry_name, None, nemo_paths["tdt_b"].parent / "tokenizer_tdt_b")
    model.change_attention_model("rel_pos_local_attn", context)
    model.eval()
    session, ops = _export(model, tmp_path, 16)
    assert ops["If"] == 0 and ops["MultiHeadAttention"] == 0  # no position tables, no fused full attention
    for lengths in ([1], [9], [403, 250, 37], [2000, 1999, 8]):
        _check_against_nemo(model, session, lengths)


# --- converted directories against NeMo transcribe -------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A fixture checkpoint switched to local attention, its conversion and NeMo's switched checkpoint."""

    name: str
    context: tuple[int, int]
    nemo: Path
    """The switched model saved as a .nemo (the NeMo reference)."""
    directory: Path
    """The converted model directory."""


def _switched(source: Path, context: tuple[int, int], target: Path) -> Path:
    """``source`` switched to local attention as NVIDIA's long-form recipe does, saved as ``target``."""
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(str(source), map_location="cpu")
    model.change_attention_model("rel_pos_local_attn", list(context))
    model.change_subsampling_conv_chunking_factor(1)
    model.eval()
    model.save_to(str(target))
    return target


@pytest.fixture(scope="module")
def variants(nemo_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Variant]:
    """``tdt_a`` at [8, 2] converted by ``convert-model --attention local --context 8,2`` from the original
    checkpoint; ``tdt_b`` at [16, 16] converted through the API from the saved switched checkpoint."""
    from parakeet_runtime.export.cli import main
    from parakeet_runtime.export.convert import convert

    root = tmp_path_factory.mktemp("local-attention")
    a_nemo = _switched(nemo_paths["tdt_a"], (8, 2), root / "tdt_a_local_8_2.nemo")
    a_dir = root / "tdt_a_local_8_2"
    assert main([str(nemo_paths["tdt_a"]), str(a_dir), "--attention", "local", "--context", "8,2"]) == 0
    b_nemo = _switched(nemo_paths["tdt_b"], (16, 16), root / "tdt_b_local_16_16.nemo")
    b_dir = root / "tdt_b_local_16_16"
    convert(str(b_nemo), b_dir)
    return {
        "tdt_a": Variant("tdt_a", (8, 2), a_nemo, a_dir),
        "tdt_b": Variant("tdt_b", (16, 16), b_nemo, b_dir),
    }


@pytest.fixture(scope="module")
def long_clip(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About five minutes: the fixture clips one after another, repeated."""
    import soundfile

    pieces = [soundfile.read(str(clips[name]), dtype="float32") for name in sorted(clips)]
    rate = pieces[0][1]
    assert all(r == rate for _, r in pieces)
    once = np.concatenate([samples for samples, _ in pieces])
    samples = np.concatenate([once] * int(np.ceil(300 * rate / once.shape[0])))[: 300 * rate]
    path = tmp_path_factory.mktemp("long-clip") / "five_minutes.wav"
    soundfile.write(str(path), samples, rate)
    return path


@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_manifest_records_local_attention_and_no_limit(name: str, variants: dict[str, Variant]) -> None:
    from parakeet_runtime.engine.model.manifest import EncoderAttention, load_manifest

    variant = variants[name]
    manifest = load_manifest(variant.directory, verify=True)
    assert manifest.encoder.attention == EncoderAttention(kind="local", context=variant.context)
    assert manifest.encoder.max_frames is None
    raw = json.loads((variant.directory / "manifest.json").read_text())
    assert raw["encoder"]["attention"] == {"kind": "local", "context": list(variant.context)}
    assert raw["encoder"]["max_frames"] is None
    export = manifest.provenance.encoder_export
    assert export is not None and export.position_table_layers == 0 and export.fused_attention_layers == 0
    assert manifest.provenance.parity and all(probe.identical for probe in manifest.provenance.parity)


@pytest.mark.parametrize("name", ["tdt_a", "tdt_b"])
def test_transcripts_identical_to_nemo(name: str, variants: dict[str, Variant], clips: dict[str, Path]) -> None:
    from parakeet_runtime.engine import Engine

    variant = variants[name]
    paths = tuple(str(clips[clip]) for clip in CLIP_NAMES)
    expected = nemo_transcripts(str(variant.nemo), paths)
    # The clips say something (how much depends on the fixture build: 48 tokens in one clean build).
    assert sum(len(result["ids"]) for result in expected.values()) >= 10
    with Engine.load(variant.directory) as engine:
        for path in paths:
            assert_identical(engine.transcribe(path), expected[path])


def test_five_minutes_identical_to_nemo(variants: dict[str, Variant], long_clip: Path) -> None:
    """Five minutes in one encoder pass (7500 encoder frames of tdt_b: 469 windows of 16 frames)."""
    from parakeet_runtime.engine import Engine

    variant = variants["tdt_b"]
    expected = nemo_transcripts(str(variant.nemo), (str(long_clip),))[str(long_clip)]
    with Engine.load(variant.directory) as engine:
        result = engine.transcribe(long_clip)
    assert result.duration == pytest.approx(300.0)
    # How many tokens this little-trained model emits over five minutes depends on the fixture build (a clean
    # build gave 12, another 200+); the encoder frames of all five minutes are compared in the next test.
    assert len(expected["ids"]) >= 5
    assert_identical(result, expected)


def test_five_minutes_encoder_frames_match_nemo(variants: dict[str, Variant], long_clip: Path) -> None:
    """The projected encoder frames of five minutes (3750 frames of tdt_a, 469 chunks of 8) against NeMo's
    encoder on the switched model (NeMo's greedy search over them, with timestamps, takes minutes on a busy
    CPU; the transcripts of tdt_a are compared on the 61 s clip above)."""
    import soundfile

    from parakeet_runtime.engine import Engine
    from parakeet_runtime.export.probe import _torch_outputs
    from tests.conftest import load_nemo

    samples, _ = soundfile.read(str(long_clip), dtype="float32")
    _, valid, expected = _torch_outputs(load_nemo(str(variants["tdt_a"].nemo)), samples)
    with Engine.load(variants["tdt_a"].directory) as engine:
        features, our_valid = engine.features(samples)
        projected, lengths = engine.model.encode(features[None], np.array([our_valid], dtype=np.int64))
    frames = int(lengths[0])
    assert our_valid == valid and frames == 3750 and expected.shape[0] >= frames
    np.testing.assert_allclose(projected[0, :frames], expected[:frames], rtol=0, atol=1e-4)


def test_local_attention_changes_the_transcript(variants: dict[str, Variant], clips: dict[str, Path],
                                                 nemo_paths: dict[str, Path]) -> None:
    """The variant is really another model than the full-attention checkpoint (or the parity above would
    not show that the local attention is reproduced)."""
    path = str(clips["c3_multi"])
    local = nemo_transcripts(str(variants["tdt_a"].nemo), (path,))[path]
    full = nemo_transcripts(str(nemo_paths["tdt_a"]), (path,))[path]
    assert local["ids"] != full["ids"]


def test_int8_keeps_the_position_term_in_float(variants: dict[str, Variant], clips: dict[str, Path],
                                               tmp_path: Path) -> None:
    """``--quantize int8`` on a local-attention directory: the weight MatMuls become integer ones; the three
    products of each attention layer (scores, position term with its constant rows first, weighted values) stay
    float; the int8 encoder's frames stay close to fp32's."""
    import onnx

    from parakeet_runtime.engine.model.manifest import load_manifest
    from parakeet_runtime.export.quantize import quantize_directory

    variant = variants["tdt_b"]
    quantize_directory(variant.directory, tmp_path / "int8", load_manifest(variant.directory))
    graph = onnx.load(str(tmp_path / "int8" / "encoder.onnx")).graph
    initializers = {init.name for init in graph.initializer}
    float_products = [node for node in graph.node if node.op_type == "MatMul"]
    assert len(float_products) == 3 * 2  # two attention layers
    assert not any(node.input[1] in initializers for node in float_products)
    assert sum(node.op_type in INTEGER_PRODUCTS for node in graph.node) > 0
    # The tiny fixture models' tokens are fragile under int8 with either attention (benchmarks/README.md), so
    # the encoder frames are compared: within a few percent of fp32's.
    import soundfile

    from parakeet_runtime.engine import Engine

    samples, _ = soundfile.read(str(clips["c3_multi"]), dtype="float32")
    frames = []
    for directory in (variant.directory, tmp_path / "int8"):
        with Engine.load(directory) as engine:
            features, valid = engine.features(samples)
            projected, _ = engine.model.encode(features[None], np.array([valid], dtype=np.int64))
            frames.append(projected[0])
    error = float(np.linalg.norm(frames[1] - frames[0]) / np.linalg.norm(frames[0]))
    assert 0.0 < error < 0.05, error


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("context", "message"), [
    ("8", "is not LEFT,RIGHT"),
    ("8,2,1", "is not LEFT,RIGHT"),
    ("a,b", "is not LEFT,RIGHT"),
    ("1,1", "the larger at least 2"),
    ("0,0", "the larger at least 2"),
])
def test_bad_context_is_a_usage_error(context: str, message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from parakeet_runtime.export.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as raised:
        main(["model.nemo", str(out), "--attention", "local", f"--context={context}"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "convert-model: error: --context: " in err and message in err
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--attention", "local"], "--attention local needs --context"),
    (["--context", "8,2"], "--context needs --attention local"),
    (["--attention", "full", "--context", "8,2"], "invalid choice"),
])
def test_attention_options_go_together(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from parakeet_runtime.export.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["model.nemo", "out", *args])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("context", [(1, 1), (-1, 8), (0, 0)])
def test_convert_refuses_a_bad_context_before_loading(context: tuple[int, int], tmp_path: Path) -> None:
    from parakeet_runtime.export.convert import convert
    from parakeet_runtime.export.errors import ConversionError

    with pytest.raises(ConversionError, match=r"local attention context .* is not supported"):
        convert(str(tmp_path / "missing.nemo"), tmp_path / "out", local_attention=context)
    assert not (tmp_path / "out").exists()


# --- the manifest field ----------------------------------------------------------------------------------------


def _manifest_with(attention: object) -> dict[str, Any]:
    from parakeet_runtime.engine import default_model_dir

    raw: dict[str, Any] = json.loads((default_model_dir() / "manifest.json").read_text())
    raw["encoder"]["attention"] = attention
    return raw


def test_manifest_attention_defaults_to_full_and_round_trips() -> None:
    from parakeet_runtime.engine.model.manifest import EncoderAttention, parse_manifest

    raw = _manifest_with({"kind": "full"})
    del raw["encoder"]["attention"]
    assert parse_manifest(raw).encoder.attention == EncoderAttention("full", None)
    for attention in ({"kind": "full"}, {"kind": "local", "context": [128, 0]},
                      {"kind": "limited", "context": [70, 13], "style": "chunked_limited"},
                      {"kind": "limited", "context": [-1, 0], "style": "regular"}):
        manifest = parse_manifest(_manifest_with(attention))
        assert json.loads(manifest.to_json())["encoder"]["attention"] == attention
        assert parse_manifest(json.loads(manifest.to_json())) == manifest


@pytest.mark.parametrize("attention", [
    "local", {"kind": "sparse"}, {"kind": "local"}, {"kind": "local", "context": [8]},
    {"kind": "local", "context": [8, -1]}, {"kind": "local", "context": [0, 0]}, {"kind": "local", "context": [8, 2.0]},
    {"kind": "local", "context": [8, True]}, {"kind": "full", "context": [8, 2]},
    {"kind": "local", "context": [8, 2], "global_tokens": 1},
    {"kind": "limited", "context": [9, 2]}, {"kind": "limited", "context": [-1, -1], "style": "regular"},
    {"kind": "limited", "context": [9, -2], "style": "regular"}, {"kind": "limited", "context": [9, 2], "style": "x"},
    {"kind": "local", "context": [8, 2], "style": "regular"}, {"kind": "full", "style": "regular"},
])
def test_manifest_attention_is_validated(attention: object) -> None:
    from parakeet_runtime.engine import ManifestError
    from parakeet_runtime.engine.model.manifest import parse_manifest

    with pytest.raises(ManifestError, match=r"encoder\.attention"):
        parse_manifest(_manifest_with(attention))
