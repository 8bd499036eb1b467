"""Ship a built demo model: copy it into the package (``engine/default_model``, ``engine/data``) and the repo.

    python -m recipes.demo_model.install --build .demo-build

Copies ``BUILD/converted`` to ``engine/default_model`` (with a descriptive model name and provenance),
the sample clip and its text to ``engine/data/``, and ``demo.nemo`` to ``recipes/demo_model/demo.nemo``
(the checkpoint the test suite compares the shipped directory against through NeMo).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from parakeet_runtime.engine.model.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "engine" / "default_model"
DATA_DIR = REPO / "engine" / "data"
NEMO_COPY = Path(__file__).with_name("demo.nemo")
MAX_BYTES = 20_000_000
MODEL_NAME = "parakeet-runtime-demo"
DESCRIPTION = "small FastConformer-TDT trained on synthetic espeak-ng speech (a demo, not a recogniser)"
LANGUAGES = ("en",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path(".demo-build"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    source = args.build / "converted"
    converted = load_manifest(source)
    size = sum(p.stat().st_size for p in source.iterdir())
    if size > MAX_BYTES and converted.step is not None:
        # The fused step graph (predictor and joint in one graph) is an optional speed-up that repeats their
        # weights; a small model decodes fast without it, and the shipped directory must stay small.
        (source / converted.step.file).unlink()
        converted = replace(converted, step=None,
                            digests=tuple(d for d in converted.digests if d.name != converted.step.file))
        (source / "manifest.json").write_text(converted.to_json(), encoding="utf-8")
        size = sum(p.stat().st_size for p in source.iterdir())
        logging.info("dropped the step graph to stay under %.0f MB", MAX_BYTES / 1e6)
    if size > MAX_BYTES:
        logging.error("%s is %.1f MB; the shipped model must stay under %.0f MB", source, size / 1e6, MAX_BYTES / 1e6)
        return 1
    nemo = args.build / "demo.nemo"
    if converted.provenance.source_sha256 != hashlib.sha256(nemo.read_bytes()).hexdigest():
        logging.error("%s was not converted from %s", source, nemo)
        return 1
    manifest = replace(converted, model_name=MODEL_NAME, description=DESCRIPTION, languages=LANGUAGES,
                       provenance=replace(converted.provenance, source="recipes/demo_model/demo.nemo"))

    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    shutil.copytree(source, MODEL_DIR)
    (MODEL_DIR / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    DATA_DIR.mkdir(exist_ok=True)
    shutil.copyfile(args.build / "sample.wav", DATA_DIR / "sample.wav")
    shutil.copyfile(args.build / "sample.txt", DATA_DIR / "sample.txt")
    shutil.copyfile(nemo, NEMO_COPY)
    logging.info("installed %s (%.1f MB) and %s", MODEL_DIR, size / 1e6, NEMO_COPY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
