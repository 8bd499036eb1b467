"""The demo-model recipe's pieces that do not need training: text, speech, evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from parakeet_runtime.engine import Engine
from recipes.demo_model.corpus import SEEN_VOICES, UNSEEN_VOICES, plan, read_manifest, synthesise, write_corpus
from recipes.demo_model.text import sentences, vocabulary, word_sequences

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_sentences_are_distinct_deterministic_and_respect_exclusions() -> None:
    train = sentences(500, 1)
    assert len(set(train)) == 500
    assert train == sentences(500, 1)
    held_out = sentences(100, 2, exclude=frozenset(train))
    assert not set(held_out) & set(train)
    assert {w for s in train + held_out for w in s.split()} <= vocabulary()
    assert all(s == s.lower() and "  " not in s for s in train)


def test_word_sequences_are_short_distinct_and_respect_exclusions() -> None:
    held_out = sentences(100, 2)
    words = word_sequences(2000, 5, exclude=frozenset(held_out) | {"please"})
    assert len(set(words)) == 2000 and words == word_sequences(2000, 5, exclude=frozenset(held_out) | {"please"})
    assert not set(words) & (set(held_out) | {"please"})
    assert all(1 <= len(w.split()) <= 5 for w in words)
    assert {w for s in words for w in s.split()} <= vocabulary()
    assert any(len(w.split()) == 1 for w in words) and any(len(w.split()) == 5 for w in words)


def test_curriculum_batches_only_short_utterances_and_respect_the_batch_size() -> None:
    import random

    from recipes.demo_model.train import _batches

    lengths = [16000 * s for s in (1, 2, 2, 3, 4, 5, 8, 10, 1, 2)]
    short = _batches(lengths, 16000 * 6, random.Random(0), max_length=16000 * 3)
    assert sorted(i for group in short for i in group) == [i for i, n in enumerate(lengths) if n <= 16000 * 3]
    everything = _batches(lengths, 16000 * 12, random.Random(0))
    assert sorted(i for group in everything for i in group) == list(range(len(lengths)))
    for groups, limit in ((short, 16000 * 6), (everything, 16000 * 12)):
        assert all(len(g) == 1 or max(lengths[i] for i in g) * len(g) <= limit for g in groups)


def test_grammar_words_are_single_tokens(tmp_path: Path) -> None:
    """The recipe's tokenizer gives (nearly) every word one piece rather than spelling words out: with the
    encoder's 80 ms frames a spelled word can have more tokens than frames (with 256 pieces, the first
    two runs spelled out 130 of the 359 words)."""
    import sentencepiece as spm

    from recipes.demo_model.build import corpus_texts
    from recipes.demo_model.train import GEOMETRY
    from tests.fixtures.build import train_tokenizer

    train, held_out = corpus_texts(1234)
    folder = train_tokenizer(train, GEOMETRY.vocab_size, tmp_path)
    tokenizer = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    assert tokenizer.get_piece_size() == GEOMETRY.vocab_size
    pieces = {w: len(tokenizer.encode(w)) for w in vocabulary()}
    # 384 pieces hold the letters and all but a few of the 359 words (SentencePiece allows at most 386 here).
    assert sum(n > 1 for n in pieces.values()) <= 3
    assert sum(len(tokenizer.encode(s)) for s in held_out) <= 1.05 * sum(len(s.split()) for s in held_out)


def test_seen_and_unseen_voices_do_not_overlap() -> None:
    assert not set(SEEN_VOICES) & set(UNSEEN_VOICES)
    utterances = plan(sentences(50, 3), UNSEEN_VOICES, 4)
    assert {u.voice for u in utterances} <= set(UNSEEN_VOICES)
    assert all(130 <= u.rate <= 200 and 30 <= u.pitch <= 70 and 20 <= u.snr_db <= 45 for u in utterances)


@needs_espeak
def test_synthesised_speech_is_16k_mono_with_padding_and_noise() -> None:
    utterance = plan(["the cat sat on the mat"], ("en-us",), 5)[0]
    audio = synthesise(utterance)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.8 < len(audio) / 16000 < 4.0
    lead = audio[: int(utterance.lead_s * 16000) - 10]
    rms = float(np.sqrt(np.mean(audio**2)))
    assert 0 < float(np.sqrt(np.mean(lead**2))) < 0.3 * rms  # light noise, not speech, before the words
    assert float(np.abs(audio).max()) <= 1.0


@needs_espeak
def test_evaluation_reports_wer_per_voice(tmp_path: Path) -> None:
    from recipes.demo_model.evaluate import evaluate_set

    texts = ["the captain walked to the harbour this morning and the sun was shining", "my friend found the keys"]
    manifest = write_corpus(plan(texts, ("en-us", "en-gb+m3"), 6), tmp_path, "seen_voices", workers=2)
    rows = read_manifest(manifest)
    assert [r["text"] for r in rows] == texts
    result = evaluate_set(Engine.load(), manifest)
    assert result["utterances"] == 2 and result["words"] == sum(len(t.split()) for t in texts)
    assert 0.0 <= result["wer"] <= 1.0
    assert set(result["wer_by_voice"]) == {str(r["voice"]) for r in rows}
    json.dumps(result)  # the results file is plain JSON
