"""The step graph (predictor and joint in one, ``step.onnx``) against the two graphs it merges."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from parakeet_runtime.engine import BatchingOptions, Engine, load_manifest
from parakeet_runtime.engine.requests.audio import AudioInput


@pytest.mark.parametrize("model_name", ["tdt_a", "tdt_b"])
def test_step_graph_equals_predictor_then_joint(model_name: str, converted: dict[str, Path]) -> None:
    directory = converted[model_name]
    manifest = load_manifest(directory)
    assert manifest.step is not None and manifest.step.file in manifest.files()
    p, j = manifest.predictor, manifest.joint

    def session(name: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(directory / name), providers=["CPUExecutionProvider"])

    step, predictor, joint = session(manifest.step.file), session(p.file), session(j.file)
    rng = np.random.default_rng(0)
    rows = 5
    labels = rng.integers(0, manifest.decoding.vocab_size + 1, rows)
    h = rng.standard_normal((p.layers, rows, p.hidden)).astype(np.float32)
    c = rng.standard_normal((p.layers, rows, p.hidden)).astype(np.float32)
    frames = rng.standard_normal((rows, manifest.encoder.joint_hidden)).astype(np.float32)

    output, h_out, c_out = predictor.run([p.output, p.output_h, p.output_c],
                                         {p.input_targets: labels, p.input_h: h, p.input_c: c})
    (logits,) = joint.run([j.output_logits], {j.input_encoder: frames, j.input_predictor: output})
    fused = step.run([p.output, p.output_h, p.output_c, manifest.step.output_logits],
                     {p.input_targets: labels, p.input_h: h, p.input_c: c, manifest.step.input_encoder: frames})
    for ours, theirs in zip(fused, (output, h_out, c_out, logits), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert logits.shape == (rows, j.num_outputs)

    # One label with several frames (the one-utterance search's step): the output goes with every frame.
    window = step.run([manifest.step.output_logits],
                      {p.input_targets: labels[:1], p.input_h: h[:, :1], p.input_c: c[:, :1],
                       manifest.step.input_encoder: frames})[0]
    (expected,) = joint.run([j.output_logits], {j.input_encoder: frames,
                                                 j.input_predictor: np.repeat(output[:1], rows, axis=0)})
    assert window.shape == (rows, j.num_outputs)
    np.testing.assert_allclose(window, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_name", ["tdt_a", "tdt_b"])
def test_directory_without_step_graph_decodes_the_same(model_name: str, converted: dict[str, Path],
                                                       clips: dict[str, Path], tmp_path: Path) -> None:
    """Directories converted before the step graph existed still load, and decode to the same tokens, one
    clip at a time and in batches."""
    directory = converted[model_name]
    old = tmp_path / "old"
    shutil.copytree(directory, old)
    raw = json.loads((old / "manifest.json").read_text())
    (old / raw.pop("step")["file"]).unlink()
    (old / "manifest.json").write_text(json.dumps(raw))
    assert load_manifest(old).step is None

    paths: list[AudioInput] = list(clips.values())
    batching = BatchingOptions(enabled=False)
    with Engine.load(directory, batching=batching) as fused, Engine.load(old, batching=batching) as split:
        for name, clip in clips.items():
            assert fused.transcribe(clip).tokens == split.transcribe(clip).tokens, name
        assert [r.tokens for r in fused.transcribe(paths)] == [r.tokens for r in split.transcribe(paths)]
        assert any(r.tokens for r in split.transcribe(paths))
