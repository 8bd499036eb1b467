"""The bundled demo model: what it is, that it is the shipped checkpoint, and that it transcribes the sample."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from parakeet_runtime.engine import Engine, default_model_dir, sample_audio_path
from tests.conftest import HAVE_NEMO, REPO, nemo_transcripts
from tests.parity import assert_identical

DEMO_NEMO = REPO / "recipes" / "demo_model" / "demo.nemo"
SAMPLE_TEXT = sample_audio_path().with_name("sample.txt")


@pytest.fixture(scope="module")
def demo() -> Engine:
    return Engine.load()


def test_sample_clip_transcribes_to_its_exact_text(demo: Engine) -> None:
    expected = SAMPLE_TEXT.read_text(encoding="utf-8").strip()
    assert expected
    assert demo.transcribe(sample_audio_path()).text == expected


def test_sample_sentence_was_held_out_of_training() -> None:
    from recipes.demo_model.build import SAMPLE_TEXT as RECIPE_SAMPLE
    from recipes.demo_model.build import TRAIN_SENTENCES
    from recipes.demo_model.text import sentences

    assert SAMPLE_TEXT.read_text(encoding="utf-8").strip() == RECIPE_SAMPLE
    assert RECIPE_SAMPLE not in sentences(TRAIN_SENTENCES, 1234, exclude=frozenset({RECIPE_SAMPLE}))
    # ...and the exclusion is what keeps it out: the grammar can produce the sentence.
    words = set(RECIPE_SAMPLE.split())
    from recipes.demo_model.text import vocabulary

    assert words <= vocabulary()


def test_shipped_directory_is_small_and_converted_from_the_recipe_checkpoint(demo: Engine) -> None:
    size = sum(p.stat().st_size for p in default_model_dir().iterdir())
    assert size <= 20_000_000, f"{size / 1e6:.1f} MB"
    assert demo.manifest.model_name == "parakeet-runtime-demo"
    assert "synthetic" in demo.manifest.description
    assert demo.manifest.languages == ("en",)
    assert demo.manifest.provenance.source_sha256 == hashlib.sha256(DEMO_NEMO.read_bytes()).hexdigest()


@pytest.mark.nemo
@pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")
def test_shipped_directory_identical_to_nemo(demo: Engine, clips: dict[str, Path]) -> None:
    """The foundation parity check, on the shipped directory and its .nemo: every fixture clip and the sample."""
    paths = (*[str(p) for p in clips.values()], str(sample_audio_path()))
    reference: dict[str, dict[str, Any]] = nemo_transcripts(str(DEMO_NEMO), paths)
    for path in paths:
        assert_identical(demo.transcribe(path), reference[path])
