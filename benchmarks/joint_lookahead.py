"""The one-utterance search's joint lookaheads: frames after a label and in a run of blanks, replayed side by side.

The greedy TDT search computes the joint of several frames per ONNX Runtime run: ``label_lookahead`` frames in
the step after each emitted label, ``lookahead`` frames per run while it walks a run of blanks. More frames per run
mean fewer runs and more rows per run that nobody reads. This script records the runs one search makes over a
clip for each ``LABELS/BLANKS`` pair (right after an encoder run, as in a request), then replays each pair's runs
back to back, the pairs taking turns over the rounds, so that the comparison is of the graphs' work alone and not
of a shared machine's drift between searches. The tokens must be the same for every pair.

    python benchmarks/joint_lookahead.py --model ~/.cache/parakeet-bench/v3/int8 --readme
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import machine
from readme_block import measured_on, write_block, write_json
from rtfx import make_clips, one_pass

DEFAULT_PAIRS = ["6/6", "5/8", "4/8", "3/8", "8/8"]


def parse_pair(text: str) -> tuple[int, int]:
    """``"3/8"`` -> ``(3, 8)``: frames after a label, frames per run in a run of blanks (a usage error otherwise)."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"a pair is LABELS/BLANKS, two positive integers, got {text!r}")
    return int(parts[0]), int(parts[1])


class _Recording:
    """An ONNX Runtime session that records every run (output names and feeds) and runs it."""

    def __init__(self, session: Any, kind: str, log: list[tuple[str, Any, dict[str, Any]]]) -> None:
        self.session, self.kind, self.log = session, kind, log

    def run(self, names: Any, feeds: dict[str, Any], *rest: Any) -> Any:
        self.log.append((self.kind, names, dict(feeds)))
        return self.session.run(names, feeds, *rest)


def measure(model: str, pairs: list[str], seconds: str, rounds: int, threads: int) -> dict[str, Any]:
    """Record each pair's runs in one search over the clip, then replay them ``rounds`` times, pairs in turn."""
    from parakeet_runtime.decoding import tdt_greedy_decode
    from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions
    from parakeet_runtime.engine.requests.inference import JOINT_LOOKAHEAD, LABEL_LOOKAHEAD

    engine = Engine.load(model, session=SessionOptions(threads=threads), batching=BatchingOptions(enabled=False))
    base, inference = engine.model, engine.inference
    sessions = {"step": base.predictor_session, "joint": base.joint_session}
    with tempfile.TemporaryDirectory() as folder:
        prepared = one_pass(engine.prepare(make_clips(Path(folder))[seconds][0]))
    logs: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {}
    tokens: dict[str, list[tuple[int, int, int]]] = {}
    for pair in pairs:
        labels, blanks = parse_pair(pair)
        log: list[tuple[str, Any, dict[str, Any]]] = []
        recording = dataclasses.replace(base, predictor_session=_Recording(sessions["step"], "step", log),
                                        joint_session=_Recording(sessions["joint"], "joint", log))
        log.clear()  # the runs its checks at construction made
        frames, lengths = inference.encode_batch([prepared])
        result = tdt_greedy_decode(frames[0], int(lengths[0]), recording, inference.tdt_config, lookahead=blanks,
                                   label_lookahead=labels)
        logs[pair] = log
        tokens[pair] = [(t.id, t.frame, t.duration) for t in result.tokens]
    times: dict[str, list[float]] = {pair: [] for pair in pairs}
    for round_index in range(rounds):
        for pair in pairs if round_index % 2 == 0 else pairs[::-1]:
            start = time.perf_counter()
            for kind, names, feeds in logs[pair]:
                sessions[kind].run(names, feeds)
            times[pair].append(time.perf_counter() - start)
    results = [{"pair": pair, "step_runs": sum(1 for r in logs[pair] if r[0] == "step"),
                "joint_runs": sum(1 for r in logs[pair] if r[0] == "joint"), "times_s": times[pair],
                "median_s": statistics.median(times[pair]), "min_s": min(times[pair])} for pair in pairs]
    reference = tokens[pairs[0]]
    return {"results": results, "tokens": len(reference), "decoder_weights": base.decoder_weights,
            "tokens_identical": all(t == reference for t in tokens.values()),
            "engine_pair": f"{LABEL_LOOKAHEAD}/{JOINT_LOOKAHEAD}"}


def write_table(report: dict[str, Any], readme: Path) -> None:
    meta = report["meta"]
    lines = [f"{measured_on(meta)}; model `{meta['model']}` "
             f"({meta['decoder_weights']} decoding weights), {meta['clip_s']:.0f} s clip, {meta['tokens']} tokens; "
             f"engine threads {meta['threads']}; each pair's runs of one search replayed {meta['rounds']} times, the "
             "pairs taking turns.", "",
             "| frames after a label / in a run of blanks | step runs | joint runs | median (ms) | fastest (ms) "
             "| × the engine's pair |", "|---|---:|---:|---:|---:|---:|"]
    by_pair = {r["pair"]: r["median_s"] for r in report["results"]}
    reference = by_pair.get(meta["engine_pair"])
    for r in report["results"]:
        ratio = f"{reference / r['median_s']:.2f}×" if reference else "–"
        lines.append(f"| `{r['pair']}` | {r['step_runs']} | {r['joint_runs']} | {r['median_s'] * 1e3:.1f} | "
                     f"{r['min_s'] * 1e3:.1f} | {ratio} |")
    lines += ["", f"`{meta['engine_pair']}`: the engine's pair when this ran. Tokens identical for every pair: "
              f"{'yes' if meta['tokens_identical'] else '**no**'}."]
    write_block(readme, f"joint-lookahead-{meta['name']}", lines, f"Joint lookahead: {meta['name']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a converted model directory")
    parser.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS,
                        help="LABELS/BLANKS lookahead pairs (see above); the first is the tokens' reference")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="the engine's threads (SessionOptions.threads)")
    parser.add_argument("--seconds", default="60s", choices=["5s", "60s", "300s"], help="the clip")
    parser.add_argument("--name", default=None, help="results/joint-lookahead-NAME.json (default: the model's folder)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--readme", nargs="?", const=Path(__file__).parent / "README.md", type=Path, default=None)
    args = parser.parse_args(argv)
    for pair in args.pairs:
        try:
            parse_pair(pair)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    model = Path(args.model).expanduser()
    measured = measure(str(model), args.pairs, args.seconds, args.rounds, args.threads)
    name = args.name or model.name
    meta = {"name": name, "model": f"{model.parent.name}/{model.name}", "date": date.today().isoformat(),
            "machine": machine(), "threads": args.threads, "rounds": args.rounds, "clip_s": float(args.seconds[:-1]),
            **{k: measured[k] for k in ("tokens", "decoder_weights", "tokens_identical", "engine_pair")}}
    report = {"meta": meta, "results": measured["results"]}
    write_json(args.results / f"joint-lookahead-{name}.json", report)
    for r in report["results"]:
        print(f"{r['pair']:>6}: {r['step_runs']} step + {r['joint_runs']} joint runs, median "
              f"{r['median_s'] * 1e3:7.1f} ms, fastest {r['min_s'] * 1e3:7.1f} ms")
    if args.readme:
        write_table(report, args.readme)
    return 0 if meta["tokens_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
