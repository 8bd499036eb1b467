"""Invariants and determinism on every fixture model and clip (the converted directories)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.build import MODEL_NAMES
from tests.invariants import check_invariants


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_invariants_on_every_clip(model_name: str, engines: dict[str, Any], clips: dict[str, Path]) -> None:
    engine = engines[model_name]
    for path in clips.values():
        result = engine.transcribe(path)
        check_invariants(result)
        last_frame = max((t.frame for t in result.tokens), default=0)
        spec = engine.manifest
        assert last_frame * spec.encoder.subsampling_factor * spec.features.window_stride <= result.duration + 1e-9


@pytest.mark.parametrize("model_name", ["tdt_a", "tdt_b_skip"])
def test_list_matches_one_at_a_time(model_name: str, engines: dict[str, Any], clips: dict[str, Path]) -> None:
    engine = engines[model_name]
    paths = list(clips.values())
    assert engine.transcribe(paths) == [engine.transcribe(p) for p in paths]
