"""Chunked against one-pass decoding on the same model and audio: token agreement and word boundaries.

One recording of ``--seconds`` (default 330 s) is made from the clips given (pieces in random order with pauses
of 0.3-1.5 s), transcribed in one pass (``LongFormOptions(strategy="one_pass")``: NeMo's own results) and in
chunks for each chunk/context setting. Reported per setting: token agreement (matched tokens of the longest
common alignment over the larger token count), the share of matched words whose start and end offsets are within
one encoder frame of one pass's, and the time.

    python benchmarks/chunk_agreement.py --model .fixtures/converted-*/tdt_a --clips .fixtures/models/clips/*.wav \\
        --label tdt_a

Writes ``benchmarks/results/chunk-agreement-<label>.json`` and, with ``--readme``, a table between the
``chunk-agreement-<label>`` markers of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from long_audio import _pieces, machine  # noqa: E402
from readme_block import write_block  # noqa: E402

SETTINGS = ((60.0, 8.0, 4.0), (30.0, 8.0, 4.0), (120.0, 8.0, 4.0), (60.0, 16.0, 8.0), (20.0, 5.0, 2.0))
"""(chunk, left context, right context) in seconds; the first is the default."""


def recording(clips: list[Path], seconds: float, seed: int = 1) -> np.ndarray:
    pieces = _pieces(clips)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    total = 0
    while total < seconds * 16000:
        piece = pieces[int(rng.integers(len(pieces)))]
        pause = np.zeros(int(rng.uniform(0.3, 1.5) * 16000), dtype=np.float32)
        parts += [piece, pause]
        total += piece.shape[0] + pause.shape[0]
    return np.concatenate(parts).astype(np.float32)


def compare(one: Any, chunked: Any) -> dict[str, float]:
    tokens = difflib.SequenceMatcher(a=[t.id for t in one.tokens], b=[t.id for t in chunked.tokens], autojunk=False)
    matched = sum(block.size for block in tokens.get_matching_blocks())
    words = difflib.SequenceMatcher(a=[w.text for w in one.words], b=[w.text for w in chunked.words], autojunk=False)
    shifts = [max(abs(one.words[b.a + k].start_offset - chunked.words[b.b + k].start_offset),
                  abs(one.words[b.a + k].end_offset - chunked.words[b.b + k].end_offset))
              for b in words.get_matching_blocks() for k in range(b.size)]
    return {"tokens_one_pass": len(one.tokens), "tokens_chunked": len(chunked.tokens),
            "token_agreement": matched / max(len(one.tokens), len(chunked.tokens), 1),
            "words_matched": len(shifts), "words_one_pass": len(one.words),
            "boundaries_within_one_frame": float(np.mean([s <= 1 for s in shifts])) if shifts else 0.0}


def write_table(report: dict[str, Any], readme: Path, label: str) -> None:
    lines = [f"Measured {report['date']} on {report['machine']}; model {report['model']}, "
             f"{report['seconds']:.0f} s of speech ({report['tokens_one_pass']} tokens in one pass, "
             f"{report['one_pass_s']:.1f} s).", "",
             "| chunk / left / right | token agreement | matched words within 1 frame | words matched | time |",
             "|---|---:|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['chunk_s']:g} / {row['left_s']:g} / {row['right_s']:g} s | "
                     f"{100 * row['token_agreement']:.1f}% | {100 * row['boundaries_within_one_frame']:.1f}% | "
                     f"{row['words_matched']}/{row['words_one_pass']} | {row['wall_s']:.1f} s |")
    write_block(readme, f"chunk-agreement-{label}", lines, f"Chunked against one pass: {label}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--clips", nargs="+", type=Path, help="speech clips (default: the bundled sample)")
    parser.add_argument("--seconds", type=float, default=330.0)
    parser.add_argument("--label", default="demo")
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)

    from parakeet_runtime.engine import Engine, LongFormOptions, sample_audio_path

    audio = recording(args.clips or [sample_audio_path()], args.seconds)
    with Engine.load(args.model, long_form=LongFormOptions(strategy="one_pass")) as engine:
        started = time.perf_counter()
        one = engine.transcribe(audio)
        one_pass_s = time.perf_counter() - started
    rows = []
    for chunk, left, right in SETTINGS:
        options = LongFormOptions(strategy="chunked", chunk_seconds=chunk, left_context_seconds=left,
                                  right_context_seconds=right)
        with Engine.load(args.model, long_form=options) as engine:
            started = time.perf_counter()
            chunked = engine.transcribe(audio)
            wall = time.perf_counter() - started
        row = {"chunk_s": chunk, "left_s": left, "right_s": right, "wall_s": wall, **compare(one, chunked)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "model": args.model or "bundled demo model",
              "seconds": audio.shape[0] / 16000, "tokens_one_pass": len(one.tokens), "one_pass_s": one_pass_s,
              "clips": [str(c) for c in args.clips or []], "rows": rows}
    (HERE / "results" / f"chunk-agreement-{args.label}.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.readme:
        write_table(report, HERE / "README.md", args.label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
