"""Decoding an encoded batch: each row searched alone against the batched search, side by side.

The engine's worker encodes concurrent requests as one padded batch, then decodes the batch: with the batched
search (``tdt_greedy_decode_batch``: one step-graph run per step for every row still searching) where a row's
values in a batch are the ones it gets alone, else row by row. This script encodes batches of the benchmark's
``batch10`` clips (5–14 s of speech each) once, then times both searches over the same encoder output, the two
taking turns over the rounds, and checks that they give every row the same tokens, frames and durations.

    python benchmarks/batched_decoding.py --model ~/.cache/parakeet-bench/v3/int8-per-row-fixed --readme
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

SEARCHES = ("rows alone", "batched")


def measure(model: str, sizes: list[int], rounds: int, threads: int) -> dict[str, Any]:
    """Per batch size: the encoder's time once, each search's times over the rounds, and whether they agree."""
    from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions

    engine = Engine.load(model, session=SessionOptions(threads=threads), batching=BatchingOptions(enabled=False))
    inference = engine.inference
    with tempfile.TemporaryDirectory() as folder:
        items = [one_pass(engine.prepare(path)) for path in make_clips(Path(folder))["batch10"]]
    searches = {name: dataclasses.replace(inference, batched_decoding=name == "batched") for name in SEARCHES}
    results = []
    for size in sizes:
        batch = items[:size]
        start = time.perf_counter()
        frames, lengths = inference.encode_batch(batch)
        encoder_s = time.perf_counter() - start
        times: dict[str, list[float]] = {name: [] for name in SEARCHES}
        found: dict[str, list[list[tuple[int, int, int]]]] = {}
        for round_index in range(rounds):
            for name in SEARCHES if round_index % 2 == 0 else SEARCHES[::-1]:
                start = time.perf_counter()
                transcripts = searches[name].decode_batch(frames, lengths, batch)
                times[name].append(time.perf_counter() - start)
                found[name] = [[(t.id, t.frame, t.duration) for t in r.tokens] for r in transcripts]
        results.append({
            "batch": len(batch), "audio_s": sum(item.duration for item in batch), "encoder_s": encoder_s,
            "tokens": sum(map(len, found["batched"])), "identical": found["batched"] == found["rows alone"],
            **{f"{name}_s": statistics.median(times[name]) for name in SEARCHES},
            **{f"{name}_times_s": times[name] for name in SEARCHES},
        })
    model_info = {"decoder_weights": engine.model.decoder_weights,
                  "engine_batches_decoding": inference.batched_decoding}
    engine.close()
    return {"results": results, **model_info}


def write_table(report: dict[str, Any], readme: Path) -> None:
    meta = report["meta"]
    engine_choice = "the batched search" if meta["engine_batches_decoding"] else "rows alone"
    lines = [f"{measured_on(meta)}; model `{meta['model']}` ({meta['decoder_weights']} decoding weights; the engine "
             f"chose {engine_choice} at load); engine threads {meta['threads']}; each batch encoded once, then both "
             f"searches over its output {meta['rounds']} times, taking turns (medians).", "",
             "| batch | audio (s) | tokens | encoder (s) | rows alone (s) | batched (s) | × | same tokens |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["results"]:
        alone, batched = r["rows alone_s"], r["batched_s"]
        lines.append(f"| {r['batch']} | {r['audio_s']:.0f} | {r['tokens']} | {r['encoder_s']:.2f} | {alone:.3f} | "
                     f"{batched:.3f} | {alone / batched:.2f}× | {'yes' if r['identical'] else '**no**'} |")
    write_block(readme, f"batched-decoding-{meta['name']}", lines, f"Batched decoding: {meta['name']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a converted model directory")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 10], help="batch sizes (at most 10)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2, help="the engine's threads (SessionOptions.threads)")
    parser.add_argument("--name", default=None, help="results/batched-decoding-NAME.json (default: the model's folder)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--readme", nargs="?", const=Path(__file__).parent / "README.md", type=Path, default=None)
    args = parser.parse_args(argv)
    if not all(1 <= size <= 10 for size in args.sizes):
        parser.error("--sizes: each between 1 and 10 (the batch10 clips)")
    model = Path(args.model).expanduser()
    measured = measure(str(model), args.sizes, args.rounds, args.threads)
    name = args.name or model.name
    meta = {"name": name, "model": f"{model.parent.name}/{model.name}", "date": date.today().isoformat(),
            "machine": machine(), "threads": args.threads, "rounds": args.rounds,
            **{k: measured[k] for k in ("decoder_weights", "engine_batches_decoding")}}
    report = {"meta": meta, "results": measured["results"]}
    write_json(args.results / f"batched-decoding-{name}.json", report)
    for r in report["results"]:
        print(f"batch {r['batch']:>2}: encoder {r['encoder_s']:.2f} s, rows alone {r['rows alone_s'] * 1e3:.0f} ms, "
              f"batched {r['batched_s'] * 1e3:.0f} ms, {r['tokens']} tokens, identical {r['identical']}")
    if args.readme:
        write_table(report, args.readme)
    return 0 if all(r["identical"] for r in report["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
