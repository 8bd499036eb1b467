"""The bundled demo model: what it is, that it is the shipped checkpoint, and that it transcribes the sample."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import AudioInput, Engine, default_model_dir, sample_audio_path
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


def test_inputs_without_speech_give_empty_transcripts(demo: Engine) -> None:
    """Digital silence and noise-only pauses are not words (the recipe trains on inputs without speech)."""
    rng = np.random.default_rng(3)
    inputs: list[AudioInput] = [
        np.zeros(3 * 16000, np.float32),
        np.zeros(30 * 16000, np.float32),
        (rng.standard_normal(10 * 16000) * 1e-3).astype(np.float32),  # -60 dBFS
    ]
    assert [t.text for t in demo.transcribe(inputs, sample_rate=16000)] == ["", "", ""]


def test_a_recording_of_several_sentences_with_pauses(demo: Engine) -> None:
    """The sample sentence three times with pauses (digital silence, then its own noise floor): the
    model keeps transcribing after a pause instead of stopping at the first sentence's end."""
    sample, rate = soundfile.read(sample_audio_path(), dtype="float32")
    noise = np.random.default_rng(4).standard_normal(int(2.0 * rate)).astype(np.float32) * np.std(sample[:400])
    recording = np.concatenate([sample, np.zeros(int(0.8 * rate), np.float32), sample, noise, sample])
    expected = " ".join([SAMPLE_TEXT.read_text(encoding="utf-8").strip()] * 3).split()
    words = demo.transcribe(recording, sample_rate=rate).text.split()
    # Every sentence is there (the old model dropped what followed a pause); a word may be misheard.
    assert len(words) == len(expected), words
    assert sum(a != b for a, b in zip(words, expected, strict=True)) <= 2, words


@pytest.mark.nemo
@pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")
def test_five_minutes_in_one_pass_identical_to_nemo(tmp_path: Path) -> None:
    """Full attention over five minutes of speech (the sample and pauses, 50 times): NeMo's tokens, durations,
    frames, words and segments, and every sentence in them."""
    from parakeet_runtime.engine import LongFormOptions

    sample, rate = soundfile.read(sample_audio_path(), dtype="int16")
    pauses = [np.zeros(int(rate * (1.0 + 0.1 * (i % 7))), np.int16) for i in range(50)]
    path = tmp_path / "five_minutes.wav"
    soundfile.write(path, np.concatenate([part for pause in pauses for part in (sample, pause)]), rate)
    with Engine.load(long_form=LongFormOptions(strategy="one_pass")) as engine:
        result = engine.transcribe(path)
    assert result.duration > 300 and result.strategy == "one_pass"
    assert_identical(result, nemo_transcripts(str(DEMO_NEMO), (str(path),))[str(path)])
    assert len(result.words) > 0.9 * 50 * len(SAMPLE_TEXT.read_text(encoding="utf-8").split())
