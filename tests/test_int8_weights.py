"""A directory with signed int8 weights warns on a CPU whose int8 products saturate; others do not."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from parakeet_runtime.engine import BatchingOptions, Engine, default_model_dir, sample_audio_path
from parakeet_runtime.engine.model import onnx_model
from parakeet_runtime.engine.model.cpu import lacks_int8_dot_products


def _with_weights(tmp_path: Path, weights: str | None) -> Path:
    directory = tmp_path / f"model-{weights}"
    shutil.copytree(default_model_dir(), directory)
    raw = json.loads((directory / "manifest.json").read_text())
    if weights is not None:
        raw.setdefault("provenance", {})["quantization"] = {"precision": "int8", "weights": weights}
    (directory / "manifest.json").write_text(json.dumps(raw))
    return directory


@pytest.mark.parametrize(("weights", "saturating_cpu", "warns"), [
    ("int8", True, True),
    ("int8", False, False),
    ("int7", True, False),
    ("uint8", True, False),
    (None, True, False),
])
def test_signed_int8_weights_warn_where_products_saturate(weights: str | None, saturating_cpu: bool, warns: bool,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(onnx_model, "x86_without_int8_dot_products", lambda: saturating_cpu)
    directory = _with_weights(tmp_path, weights)
    with caplog.at_level(logging.WARNING, logger="parakeet_runtime.engine.model.onnx_model"), Engine.load(
        directory, batching=BatchingOptions(enabled=False)
    ) as engine:
        assert engine.transcribe(sample_audio_path()).text
    warned = [r for r in caplog.records if "saturate" in r.getMessage()]
    assert bool(warned) == warns


def test_cpu_flags() -> None:
    avx2 = "processor : 0\nflags\t\t: fpu sse2 avx avx2 fma\nprocessor : 1\nflags : fpu avx512_vnni\n"
    assert lacks_int8_dot_products(avx2)
    assert not lacks_int8_dot_products("flags : fpu avx2 avx512f avx512_vnni\n")
    assert not lacks_int8_dot_products("flags : avx2 avx_vnni\n")
    assert not lacks_int8_dot_products("flags : avx2 amx_int8 amx_tile\n")
    assert not lacks_int8_dot_products("Features : fp asimd asimddp\n")  # no x86 flags line: unknown
