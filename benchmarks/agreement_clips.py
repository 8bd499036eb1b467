"""The demo model's held-out recordings, for token agreement (benchmarks/precision_agreement.py, cpu_check.sh).

The demo recipe's held-out sentences (``recipes/demo_model``: ``corpus_texts(1234)``), each spoken once by a seen
and once by an unseen voice with espeak-ng (``plan`` with the recipe's seeds), as the recipe's evaluation writes
them: ``<out>/seen_voices_*.wav`` and ``<out>/unseen_voices_*.wav``; their paths are printed, one per line.
``--count N`` keeps the first N / 2 sentences (the same first recordings as the full set). Cached: a set already
written from the same plan is reused.

    python benchmarks/agreement_clips.py --out ~/.cache/parakeet-bench/demo-eval
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recipes.demo_model.build import corpus_texts  # noqa: E402
from recipes.demo_model.corpus import SEEN_VOICES, UNSEEN_VOICES, plan, read_manifest, write_corpus  # noqa: E402

SEED = 1234
"""The demo recipe's default seed (``recipes/demo_model/build.py``)."""


def write_clips(out: Path, count: int | None, seed: int = SEED, workers: int = 2) -> list[Path]:
    """Write (or reuse) the recordings under ``out``; returns their paths, seen voices first."""
    _, texts = corpus_texts(seed)
    if count is not None:
        texts = texts[: max(1, count // 2)]
    paths = []
    for prefix, voices, offset in (("seen_voices", SEEN_VOICES, 3), ("unseen_voices", UNSEEN_VOICES, 4)):
        manifest = write_corpus(plan(texts, voices, seed + offset), out, prefix, workers=workers)
        paths += [Path(str(row["audio"])) for row in read_manifest(manifest)]  # the recordings of this plan only
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=None, help="recordings in all (default: every sentence twice)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    paths = write_clips(args.out, args.count, workers=args.workers)
    logging.info("%d recordings under %s", len(paths), args.out)
    print("\n".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
