"""The export-only encoder forwards compute what NeMo's do, on valid frames, with and without padding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HAVE_NEMO

pytestmark = [pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")]


@pytest.mark.parametrize("time", [1, 2, 3, 17, 64])
def test_rel_shift_matches_nemo(time: int) -> None:
    import torch
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionMultiHeadAttention

    from parakeet_runtime.export.graph_forwards import rel_shift

    attention = RelPositionMultiHeadAttention(n_head=2, n_feat=8, dropout_rate=0.0, pos_bias_u=None, pos_bias_v=None)
    scores = torch.randn(2, 3, time, 2 * time)  # one extra position column, never selected
    expected = attention.rel_shift(scores[:, :, :, :-1])[:, :, :, :time]
    assert torch.equal(rel_shift(scores, time), expected)


def _model(geometry_name: str, norm: str | None, tokenizer_dir: Path) -> Any:
    """An untrained two-layer fixture-geometry model in eval mode (NeMo's modules as they are)."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    from tests.fixtures import nemo_config

    geometry = getattr(nemo_config, geometry_name)
    torch.manual_seed(0)
    cfg = nemo_config.model_config(replace(geometry, n_layers=2), str(tokenizer_dir))
    if norm is not None:
        cfg["encoder"]["conv_norm_type"] = norm
    model = EncDecRNNTBPEModel(cfg=OmegaConf.create(cfg))
    model.eval()
    return model


@pytest.mark.parametrize(
    ("geometry_name", "norm"),
    [("GEOMETRY_A", None), ("GEOMETRY_B", None), ("GEOMETRY_A", "layer_norm"), ("GEOMETRY_B", "instance_norm")],
)
def test_export_forwards_match_nemo(
    geometry_name: str, norm: str | None, nemo_paths: dict[str, Path]
) -> None:
    import torch

    from parakeet_runtime.export.graph_forwards import export_forwards
    from parakeet_runtime.export.onnx_export import prepare_for_export

    tokenizer = nemo_paths["tdt_b"].parent / "tokenizer_tdt_b"
    model = _model(geometry_name, norm, tokenizer)
    n_mels = int(model.preprocessor.featurizer.nfilt)
    features = torch.randn(3, n_mels, 403)
    lengths = torch.tensor([403, 250, 37])
    with prepare_for_export(model) as modules, torch.inference_mode():
        encoder = modules.encoder
        expected, expected_lengths = encoder(audio_signal=features, length=lengths)
        with export_forwards(encoder) as patched:
            assert patched > 0
            got, got_lengths = encoder(audio_signal=features, length=lengths)
        restored, _ = encoder(audio_signal=features, length=lengths)
    assert torch.equal(restored, expected), "export_forwards must restore NeMo's forwards"
    assert torch.equal(got_lengths, expected_lengths)
    for row, valid in enumerate(expected_lengths.tolist()):
        torch.testing.assert_close(got[row, :, :valid], expected[row, :, :valid], rtol=1e-5, atol=1e-5)
    assert not any("forward" in vars(m) for m in encoder.modules())


@pytest.mark.parametrize("geometry_name", ["GEOMETRY_A", "GEOMETRY_B"])
def test_table_predictor_matches_nemo_predict(geometry_name: str, nemo_paths: dict[str, Path]) -> None:
    """The exported predictor step (first layer's input gates from a table) equals NeMo's ``predict``."""
    import torch

    from parakeet_runtime.export.onnx_export import (
        PredictorGraph,
        TablePredictorGraph,
        predictor_graph,
        prepare_for_export,
    )

    model = _model(geometry_name, None, nemo_paths["tdt_b"].parent / "tokenizer_tdt_b")
    with prepare_for_export(model) as modules:
        decoder, joint = modules.decoder, modules.joint
        table = predictor_graph(decoder, joint)
        assert isinstance(table, TablePredictorGraph)
        reference = PredictorGraph(decoder, joint)
        layers, hidden = int(decoder.pred_rnn_layers), int(decoder.pred_hidden)
        labels = torch.arange(decoder.vocab_size + 1)  # every label, the blank (start of sequence) included
        h, c = torch.randn(layers, labels.shape[0], hidden), torch.randn(layers, labels.shape[0], hidden)
        with torch.inference_mode():
            got, expected = table(labels, h, c), reference(labels, h, c)
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
