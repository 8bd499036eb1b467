"""Chunked against one-pass decoding on the same model and audio: token agreement and word boundaries.

One recording of ``--seconds`` (default 330 s) is made from the clips given (pieces in random order with pauses
of 0.3-1.5 s), transcribed in one pass (``LongFormOptions(strategy="one_pass")``: NeMo's own results) and in
chunks for each chunk/context setting. Reported per setting: token agreement (matched tokens of the longest
common alignment over the larger token count), the share of matched words whose start and end offsets are within
one encoder frame of one pass's, and the time. With ``--texts`` (a JSON-lines manifest with ``audio`` and ``text``
per clip, as the demo model's recipe writes), also each transcription's WER against the words spoken: whether
chunks or one pass is nearer the truth where the two differ.

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

from long_audio import GAINS, _pieces, machine, wer  # noqa: E402
from readme_block import write_block, write_json  # noqa: E402

SETTINGS = ((60.0, 8.0, 4.0), (30.0, 8.0, 4.0), (120.0, 8.0, 4.0), (60.0, 16.0, 8.0), (20.0, 5.0, 2.0))
"""(chunk, left context, right context) in seconds; the first is the default."""


def recording(clips: list[Path], seconds: float, seed: int = 1) -> tuple[np.ndarray, list[int]]:
    """About ``seconds`` of the clips (each at every gain of ``long_audio.GAINS``) in random order with pauses,
    and the index into ``clips`` of each piece used, in order."""
    pieces = _pieces(clips)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    order: list[int] = []
    total = 0
    while total < seconds * 16000:
        index = int(rng.integers(len(pieces)))
        piece = pieces[index]
        pause = np.zeros(int(rng.uniform(0.3, 1.5) * 16000), dtype=np.float32)
        parts += [piece, pause]
        order.append(index // len(GAINS))
        total += piece.shape[0] + pause.shape[0]
    return np.concatenate(parts).astype(np.float32), order


def spoken_words(manifest: Path, clips: list[Path], order: list[int]) -> list[str]:
    """The words of the recording: each used clip's ``text`` in ``manifest`` (matched by file name)."""
    texts = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            texts[Path(str(item["audio"])).name] = str(item["text"])
    missing = sorted({clips[i].name for i in order} - texts.keys())
    if missing:
        raise SystemExit(f"{manifest}: no text for {', '.join(missing[:5])}")
    return [word for i in order for word in texts[clips[i].name].split()]


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
    truth = report.get("one_pass_wer_vs_truth")
    one_pass = "" if truth is None else f"; one pass's WER against the words spoken {100 * truth:.1f}%"
    lines = [f"Measured {report['date']} on {report['machine']}; model {report['model']}, "
             f"{report['seconds']:.0f} s of speech ({report['tokens_one_pass']} tokens in one pass, "
             f"{report['one_pass_s']:.1f} s{one_pass}).", "",
             "| chunk / left / right | token agreement | matched words within 1 frame | words matched | time |"
             + (" WER vs spoken |" if truth is not None else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if truth is not None else "")]
    for row in report["rows"]:
        spoken = f" {100 * row['wer_vs_truth']:.1f}% |" if "wer_vs_truth" in row else ""
        lines.append(f"| {row['chunk_s']:g} / {row['left_s']:g} / {row['right_s']:g} s | "
                     f"{100 * row['token_agreement']:.1f}% | {100 * row['boundaries_within_one_frame']:.1f}% | "
                     f"{row['words_matched']}/{row['words_one_pass']} | {row['wall_s']:.1f} s |{spoken}")
    write_block(readme, f"chunk-agreement-{label}", lines, f"Chunked against one pass: {label}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--clips", nargs="+", type=Path, help="speech clips (default: the bundled sample)")
    parser.add_argument("--seconds", type=float, default=330.0)
    parser.add_argument("--label", default="demo")
    parser.add_argument("--texts", type=Path, metavar="JSONL",
                        help="the clips' words (lines with 'audio' and 'text'): adds each transcription's WER")
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)

    from parakeet_runtime.engine import Engine, LongFormOptions, sample_audio_path

    clips = args.clips or [sample_audio_path()]
    audio, order = recording(clips, args.seconds)
    truth = spoken_words(args.texts, clips, order) if args.texts else None
    with Engine.load(args.model, long_form=LongFormOptions(strategy="one_pass")) as engine:
        started = time.perf_counter()
        one = engine.transcribe(audio)
        one_pass_s = time.perf_counter() - started
    one_pass_wer = wer(truth, one.text.split()) if truth else None
    rows = []
    for chunk, left, right in SETTINGS:
        options = LongFormOptions(strategy="chunked", chunk_seconds=chunk, left_context_seconds=left,
                                  right_context_seconds=right)
        with Engine.load(args.model, long_form=options) as engine:
            started = time.perf_counter()
            chunked = engine.transcribe(audio)
            wall = time.perf_counter() - started
        row = {"chunk_s": chunk, "left_s": left, "right_s": right, "wall_s": wall, **compare(one, chunked)}
        if truth:
            row["wer_vs_truth"] = wer(truth, chunked.text.split())
        print(json.dumps(row), flush=True)
        rows.append(row)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "model": args.model or "bundled demo model",
              "seconds": audio.shape[0] / 16000, "tokens_one_pass": len(one.tokens), "one_pass_s": one_pass_s,
              "clips": [str(c) for c in args.clips or []], "one_pass_wer_vs_truth": one_pass_wer, "rows": rows}
    write_json(HERE / "results" / f"chunk-agreement-{args.label}.json", report)
    if args.readme:
        write_table(report, HERE / "README.md", args.label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
