"""Word error rate of a converted model on the held-out synthetic sentences, seen and unseen voices.

    python -m recipes.demo_model.evaluate --build .demo-build [--model DIR] [--out results.json]

The held-out sentences never occur in the training corpus (see ``build.make_corpora``); they are spoken
once by the training voices and once by voices the model never heard. Transcripts come from this
package's ``Engine`` (identical to NeMo's on the same checkpoint; the test suite checks that).

Recordings: the same held-out sentences, in order, joined with pauses into inputs of about 20 s, 60 s and
120 s (one pass), and all of them into one recording of several minutes through the long-form path
(chunked); each is compared with the true text and with the same sentences transcribed one by one.
Inputs without speech (digital silence, noise-only pauses) must give empty transcripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import soundfile

from parakeet_runtime.engine import AudioInput, Engine, LongFormOptions

from .corpus import read_manifest

logger = logging.getLogger("demo_model")

SETS = ("seen_voices", "unseen_voices")
RECORDING_SECONDS = (20.0, 60.0, 120.0)
PAUSE_SECONDS = 0.8
"""Pause between two sentences of a recording (digital silence)."""
SAMPLE_RATE = 16000


def join(clips: list[np.ndarray], pause_seconds: float = PAUSE_SECONDS) -> np.ndarray:
    """The clips one after another with a pause of digital silence between them."""
    pause = np.zeros(int(pause_seconds * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    for clip in clips:
        parts += [pause, clip] if parts else [clip]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def groups(lengths: list[int], seconds: float, pause_seconds: float = PAUSE_SECONDS) -> list[list[int]]:
    """Consecutive indices grouped into recordings of at least ``seconds`` (the last group may be shorter
    and is then merged into the one before it)."""
    out: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for i, n in enumerate(lengths):
        current.append(i)
        total += n / SAMPLE_RATE + pause_seconds
        if total >= seconds:
            out.append(current)
            current, total = [], 0.0
    if current:
        if out:
            out[-1].extend(current)
        else:
            out.append(current)
    return out


def evaluate_recordings(engine: Engine, long_engine: Engine, manifest: Path) -> dict[str, Any]:
    """WER of recordings made of the set's sentences, against the truth and against the sentences one by one."""
    rows = read_manifest(manifest)
    clips = [soundfile.read(str(r["audio"]), dtype="float32")[0] for r in rows]
    references = [str(r["text"]) for r in rows]
    singles = [t.text for t in engine.transcribe(clips, sample_rate=SAMPLE_RATE)]
    single_wer = jiwer.wer(" ".join(references), " ".join(singles))
    result: dict[str, Any] = {"single_sentences": {"wer": single_wer}}

    def measure(name: str, chosen: Engine, grouped: list[list[int]]) -> None:
        audio: list[AudioInput] = [join([clips[i] for i in g]) for g in grouped]
        hyps = [t.text for t in chosen.transcribe(audio, sample_rate=SAMPLE_RATE)]
        refs = [" ".join(references[i] for i in g) for g in grouped]
        pieces = [" ".join(singles[i] for i in g) for g in grouped]
        wer_true = jiwer.wer(refs, hyps)
        result[name] = {
            "recordings": len(grouped),
            "seconds": [round(sum(len(clips[i]) for i in g) / SAMPLE_RATE + PAUSE_SECONDS * (len(g) - 1), 1)
                        for g in grouped],
            "wer": wer_true,
            "wer_vs_single_sentences": jiwer.wer(pieces, hyps),
            "ratio_to_single_sentence_wer": wer_true / single_wer if single_wer else None,
            "example": {"reference": refs[0], "hypothesis": hyps[0]},
        }
        logger.info("%s %s: WER %.2f%% (%.2fx the single-sentence WER %.2f%%)", manifest.stem, name,
                    100 * wer_true, wer_true / single_wer if single_wer else float("nan"), 100 * single_wer)

    lengths = [len(c) for c in clips]
    for seconds in RECORDING_SECONDS:
        measure(f"{seconds:.0f}s", engine, groups(lengths, seconds))
    measure("all_chunked", long_engine, [list(range(len(rows)))])
    return result


def evaluate_silence(engine: Engine) -> dict[str, str]:
    """Transcripts of inputs without speech (each should be empty)."""
    rng = np.random.default_rng(0)
    inputs = {
        "digital_silence_3s": np.zeros(3 * SAMPLE_RATE, np.float32),
        "digital_silence_30s": np.zeros(30 * SAMPLE_RATE, np.float32),
        "noise_-60dBFS_10s": (rng.standard_normal(10 * SAMPLE_RATE) * 1e-3).astype(np.float32),
        "noise_-40dBFS_10s": (rng.standard_normal(10 * SAMPLE_RATE) * 1e-2).astype(np.float32),
    }
    texts = engine.transcribe(list[AudioInput](inputs.values()), sample_rate=SAMPLE_RATE)
    return {name: t.text for name, t in zip(inputs, texts, strict=True)}


def evaluate_set(engine: Engine, manifest: Path) -> dict[str, Any]:
    rows = read_manifest(manifest)
    references = [str(r["text"]) for r in rows]
    hypotheses = [t.text for t in engine.transcribe([str(r["audio"]) for r in rows])]
    measures = jiwer.process_words(references, hypotheses)
    by_voice: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_voice.setdefault(str(r["voice"]), []).append(i)
    return {
        "utterances": len(rows),
        "words": sum(len(r.split()) for r in references),
        "wer": measures.wer,
        "substitutions": measures.substitutions,
        "deletions": measures.deletions,
        "insertions": measures.insertions,
        "sentence_accuracy": sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(rows),
        "wer_by_voice": {
            voice: jiwer.wer([references[i] for i in idx], [hypotheses[i] for i in idx])
            for voice, idx in sorted(by_voice.items())
        },
        "examples": [
            {"reference": r, "hypothesis": h}
            for r, h in zip(references, hypotheses, strict=True) if r != h
        ][:10],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path(".demo-build"), help="the build.py output folder")
    parser.add_argument("--model", type=Path, help="model directory (default: BUILD/converted)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model_dir = args.model or args.build / "converted"
    engine = Engine.load(model_dir)
    long_engine = Engine.load(model_dir, long_form=LongFormOptions(strategy="chunked"))
    results: dict[str, Any] = {"model": engine.manifest.model_name}
    for name in SETS:
        results[name] = evaluate_set(engine, args.build / "eval" / f"{name}.jsonl")
        logger.info("%s: WER %.2f%% on %d words (%d sentences, %.0f%% exactly right)", name,
                    100 * results[name]["wer"], results[name]["words"], results[name]["utterances"],
                    100 * results[name]["sentence_accuracy"])
    results["recordings"] = {
        name: evaluate_recordings(engine, long_engine, args.build / "eval" / f"{name}.jsonl") for name in SETS
    }
    results["silence"] = evaluate_silence(engine)
    logger.info("inputs without speech: %s", results["silence"])
    train_log = args.build / "train_log.json"
    if train_log.is_file():
        log = json.loads(train_log.read_text(encoding="utf-8"))
        results["training"] = {k: log[k] for k in ("corpus_hours", "utterances", "train_seconds", "parameters",
                                                   "machine", "stages") if k in log}
        for stage in results["training"].get("stages", []):
            stage.pop("log", None)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    engine.close()
    long_engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
