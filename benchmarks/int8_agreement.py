"""Token agreement of int8 encoders with fp32, on converted model directories and a set of clips.

    python benchmarks/int8_agreement.py --models .fixtures/converted-*/tdt_a .fixtures/converted-*/tdt_b \\
        --clips .fixtures/models/clips/*.wav --weights uint8 int7

Quantises each fp32 directory the way ``convert-model --quantize int8 --int8-weights W`` does for each
weight scheme W, decodes every clip with both, and writes a table (per model and scheme: identical clips,
token agreement = 1 - edit distance / fp32 tokens) into ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from readme_block import write_block, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from parakeet_runtime.engine import load_manifest
    from parakeet_runtime.export.quantize import DEFAULT_WEIGHTS, WEIGHT_SCHEMES, quantize_directory, token_agreement

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    parser.add_argument("--weights", nargs="+", choices=tuple(WEIGHT_SCHEMES), default=[DEFAULT_WEIGHTS])
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_agreement.json")
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        for weights in args.weights:
            with tempfile.TemporaryDirectory() as folder:
                int8 = Path(folder) / "int8"
                quantize_directory(model, int8, load_manifest(model), weights)
                per_clip = []
                for clip in args.clips:
                    a = token_agreement(model, int8, [clip])
                    per_clip.append({"clip": clip.name, "tokens": a.reference_tokens, "edits": a.token_edits})
                total = token_agreement(model, int8, args.clips)
            rows.append({"model": model.name, "weights": weights, "clips": total.clips,
                         "identical_clips": total.identical_clips, "tokens": total.reference_tokens,
                         "token_agreement": total.token_agreement, "per_clip": per_clip})
    write_json(args.out, rows)
    lines = [f"Clips: {', '.join(c.name for c in args.clips)}; {time.strftime('%Y-%m-%d')}.",
             "", "| model | weights | identical clips | fp32 tokens | token agreement | edits per clip |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        edits = ", ".join(f"{c['clip'].removesuffix('.wav')} {c['edits']}/{c['tokens']}" for c in r["per_clip"])
        lines.append(f"| {r['model']} | {r['weights']} | {r['identical_clips']}/{r['clips']} | {r['tokens']} | "
                     f"{r['token_agreement']:.3f} | {edits} |")
    write_block(args.readme, "int8", lines, "int8 token agreement with fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
