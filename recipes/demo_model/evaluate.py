"""Word error rate of a converted model on the held-out synthetic sentences, seen and unseen voices.

    python -m recipes.demo_model.evaluate --build .demo-build [--model DIR] [--out results.json]

The held-out sentences never occur in the training corpus (see ``build.make_corpora``); they are spoken
once by the training voices and once by voices the model never heard. Transcripts come from this
package's ``Engine`` (identical to NeMo's on the same checkpoint; the test suite checks that).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import jiwer

from parakeet_runtime.engine import Engine

from .corpus import read_manifest

logger = logging.getLogger("demo_model")

SETS = ("seen_voices", "unseen_voices")


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
    engine = Engine.load(args.model or args.build / "converted")
    results: dict[str, Any] = {"model": engine.manifest.model_name}
    for name in SETS:
        results[name] = evaluate_set(engine, args.build / "eval" / f"{name}.jsonl")
        logger.info("%s: WER %.2f%% on %d words (%d sentences, %.0f%% exactly right)", name,
                    100 * results[name]["wer"], results[name]["words"], results[name]["utterances"],
                    100 * results[name]["sentence_accuracy"])
    train_log = args.build / "train_log.json"
    if train_log.is_file():
        log = json.loads(train_log.read_text(encoding="utf-8"))
        results["training"] = {k: log[k] for k in ("corpus_hours", "utterances", "train_seconds", "parameters",
                                                   "machine", "options")}
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
