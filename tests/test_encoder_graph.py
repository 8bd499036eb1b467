"""The exported encoder graph, run by ONNX Runtime, against NeMo's encoder in PyTorch: fused attention
(full context) or the plain export (limited context), position tables, inputs shorter and longer than the
tables, padded batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import HAVE_NEMO
from tests.test_graph_forwards import _model

pytestmark = [pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")]


def _export(model: Any, tmp_path: Path, frames: int) -> tuple[Any, Counter[str]]:
    import onnx
    import onnxruntime as ort

    from parakeet_runtime.export.onnx_export import export_graphs

    out = tmp_path / "out"
    out.mkdir()
    facts = export_graphs(model, tmp_path / "scratch", out, position_table_frames=frames)
    graph = onnx.load(str(out / "encoder.onnx"))
    ops = Counter(node.op_type for node in graph.graph.node)
    assert facts.encoder_export.position_table_layers == ops["If"]
    assert facts.encoder_export.position_table_frames == (frames if ops["If"] else 0)
    assert facts.encoder_export.fused_attention_layers == ops["MultiHeadAttention"]
    session = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    return session, ops


def _check_against_nemo(model: Any, session: Any, lengths: list[int]) -> None:
    import torch

    n_mels = int(model.preprocessor.featurizer.nfilt)
    features = torch.randn(len(lengths), n_mels, max(lengths))
    feature_lengths = torch.tensor(lengths)
    with torch.inference_mode():
        encoded, encoded_lengths = model.encoder(audio_signal=features, length=feature_lengths)
        expected = model.joint.project_encoder(encoded.transpose(1, 2)).numpy()
    got, got_lengths = session.run(None, {"features": features.numpy(), "feature_lengths": feature_lengths.numpy()})
    np.testing.assert_array_equal(got_lengths, encoded_lengths.numpy())
    for row, valid in enumerate(encoded_lengths.tolist()):
        np.testing.assert_allclose(got[row, :valid], expected[row, :valid], atol=2e-5, rtol=0)


@pytest.mark.parametrize("geometry_name", ["GEOMETRY_A", "GEOMETRY_B"])
def test_fused_attention_and_position_tables_match_nemo(
    geometry_name: str, tmp_path: Path, nemo_paths: dict[str, Path]
) -> None:
    model = _model(geometry_name, None, nemo_paths["tdt_b"].parent / "tokenizer_tdt_b")
    frames = 12  # encoder frames the tables cover: the lengths below fall on both sides of it
    session, ops = _export(model, tmp_path, frames)
    layers = len(model.encoder.layers)
    assert ops["MultiHeadAttention"] == layers
    assert ops["If"] == layers
    factor = int(model.encoder.subsampling_factor)
    for lengths in ([frames * factor], [frames * factor + 1], [frames * factor + 3, 17], [400, 250, 37], [1]):
        _check_against_nemo(model, session, lengths)


def test_limited_context_keeps_the_plain_attention(tmp_path: Path, nemo_paths: dict[str, Path]) -> None:
    """With a limited attention context the mask is not a key padding mask: no fused attention."""
    model = _model("GEOMETRY_A", None, nemo_paths["tdt_b"].parent / "tokenizer_tdt_b")
    model.encoder.set_default_att_context_size([6, 2])
    session, ops = _export(model, tmp_path, 16)
    assert ops["MultiHeadAttention"] == 0
    assert ops["If"] == len(model.encoder.layers)
    _check_against_nemo(model, session, [403, 250, 37])


def test_no_position_tables(tmp_path: Path, nemo_paths: dict[str, Path]) -> None:
    model = _model("GEOMETRY_B", None, nemo_paths["tdt_b"].parent / "tokenizer_tdt_b")
    session, ops = _export(model, tmp_path, 0)
    assert ops["If"] == 0
    _check_against_nemo(model, session, [300, 120])


def test_local_attention_gets_no_position_tables(tmp_path: Path, nemo_paths: dict[str, Path]) -> None:
    """Local attention (NeMo's long-form setting) has its own position encoding, whose rows the tables
    would get wrong: none are made, and the attention is not fused. (Its outputs against NeMo's:
    tests/test_local_attention.py.)"""
    model = _model("GEOMETRY_A", None, nemo_paths["tdt_b"].parent / "tokenizer_tdt_b")
    model.change_attention_model("rel_pos_local_attn", [8, 8])
    model.eval()
    _, ops = _export(model, tmp_path, 16)
    assert ops["If"] == 0
    assert ops["MultiHeadAttention"] == 0
