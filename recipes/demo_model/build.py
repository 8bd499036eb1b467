"""Build the demo model end to end: text, speech, tokenizer, training, ``.nemo``, conversion.

    python -m recipes.demo_model.build --out .demo-build

Writes into ``--out``: ``train/`` and ``eval/`` corpora (JSON-lines manifests), ``tokenizer/``,
``demo.nemo``, ``converted/`` (the ``convert-model`` output) and ``train_log.json``. Then
``python -m recipes.demo_model.evaluate`` measures WER and ``python -m recipes.demo_model.install``
copies the model into the package. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from parakeet_runtime.engine.model.cpu import cpu_name

from .corpus import SEEN_VOICES, UNSEEN_VOICES, Utterance, plan, read_manifest, synthesise, write_corpus
from .text import sentences, word_sequences
from .train import GEOMETRY, RECORDINGS_STAGE, TrainOptions, build_model, load_model, train

logger = logging.getLogger("demo_model")

TRAIN_SENTENCES = 12000
TRAIN_WORD_SEQUENCES = 8000
EVAL_SENTENCES = 200
SAMPLE_TEXT = "the captain walked to the harbour this morning and the sun was shining"
"""The bundled sample clip's words: a sentence the grammar can produce, kept out of training."""
SAMPLE = Utterance(text=SAMPLE_TEXT, voice="en-us", rate=160, pitch=50, gain_db=-2.0, snr_db=40.0,
                   lead_s=0.3, tail_s=0.3, seed=7)


def corpus_texts(seed: int) -> tuple[list[str], list[str]]:
    """Training texts (grammar sentences, then random word sequences) and held-out sentences."""
    train_texts = sentences(TRAIN_SENTENCES, seed, exclude=frozenset({SAMPLE_TEXT}))
    eval_texts = sentences(EVAL_SENTENCES, seed + 1, exclude=frozenset(train_texts) | {SAMPLE_TEXT})
    word_texts = word_sequences(TRAIN_WORD_SEQUENCES, seed + 5,
                                exclude=frozenset(train_texts) | frozenset(eval_texts) | {SAMPLE_TEXT})
    return train_texts + word_texts, eval_texts


def make_corpora(out: Path, seed: int) -> tuple[Path, Path, Path]:
    """Training corpus (seen voices) and held-out sentences spoken by seen and by unseen voices."""
    train_texts, eval_texts = corpus_texts(seed)
    train_manifest = write_corpus(plan(train_texts, SEEN_VOICES, seed + 2), out / "train", "train")
    seen = write_corpus(plan(eval_texts, SEEN_VOICES, seed + 3), out / "eval", "seen_voices")
    unseen = write_corpus(plan(eval_texts, UNSEEN_VOICES, seed + 4), out / "eval", "unseen_voices")
    return train_manifest, seen, unseen


def _jsonable(value: object) -> object:
    return value.__dict__ if hasattr(value, "__dict__") else list(value)  # type: ignore[call-overload]


def run_stage(name: str, model, items: list[dict[str, object]], options: TrainOptions,  # type: ignore[no-untyped-def]
              ) -> dict[str, object]:
    """Train one stage in place; its options, time and loss log."""
    t0 = time.time()
    log = train(model, items, options)
    seconds = time.time() - t0
    logger.info("stage %s: trained in %.0f s", name, seconds)
    return {"name": name, "options": options.__dict__, "train_seconds": seconds, "log": log}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".demo-build"))
    parser.add_argument("--minutes", type=float, default=TrainOptions.minutes,
                        help="time budget of the first stage (single sentences)")
    parser.add_argument("--recording-minutes", type=float, default=RECORDINGS_STAGE.minutes,
                        help="time budget of the second stage (recordings: several sentences with pauses)")
    parser.add_argument("--init", type=Path,
                        help="a first-stage checkpoint (.nemo) to start the second stage from, instead of "
                             "training the first stage (e.g. recipes/demo_model/stage1.nemo)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    torch.set_num_threads(2)
    from tests.fixtures.build import train_tokenizer

    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    train_manifest, _, _ = make_corpora(args.out, args.seed)
    items = read_manifest(train_manifest)
    hours = sum(float(str(it["seconds"])) for it in items) / 3600
    logger.info("corpus: %d utterances, %.2f h (%.0f s)", len(items), hours, time.time() - t0)

    import soundfile

    soundfile.write(args.out / "sample.wav", synthesise(SAMPLE), 16000, subtype="PCM_16")
    (args.out / "sample.txt").write_text(SAMPLE_TEXT + "\n", encoding="utf-8")

    stages: list[dict[str, object]] = []
    if args.init is None:
        tok_dir = train_tokenizer([str(it["text"]) for it in items], GEOMETRY.vocab_size, args.out / "tokenizer")
        model = build_model(str(tok_dir))
        first = TrainOptions(minutes=args.minutes, seed=args.seed)
        stages.append(run_stage("sentences", model, items, first))
        model.save_to(str(args.out / "stage1.nemo"))
    else:
        model = load_model(str(args.init))
        stages.append({"name": "sentences", "init": str(args.init)})
    second = replace(RECORDINGS_STAGE, minutes=args.recording_minutes, seed=args.seed + 1)
    if second.minutes > 0:
        stages.append(run_stage("recordings", model, items, second))
    nemo_path = args.out / "demo.nemo"
    model.save_to(str(nemo_path))
    (args.out / "train_log.json").write_text(json.dumps({
        "geometry": GEOMETRY.__dict__, "corpus_hours": hours, "utterances": len(items),
        "train_seconds": sum(float(str(st.get("train_seconds", 0.0))) for st in stages),
        "machine": cpu_name(),
        "parameters": sum(p.numel() for p in model.parameters()), "stages": stages,
    }, indent=1, default=_jsonable), encoding="utf-8")
    logger.info("saved %s", nemo_path)

    from parakeet_runtime.export.convert import convert

    # No position tables: they would add 7 MB to a model shipped under 20 MB, for a model this small.
    convert(str(nemo_path), args.out / "converted", overwrite=True, probe_audio=[args.out / "sample.wav"],
            position_table_frames=0)
    logger.info("done in %.0f s", time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
