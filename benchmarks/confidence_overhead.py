"""Decoding time with confidence off and on (the TDT search and transcripts only; the encoder runs once).

    python benchmarks/confidence_overhead.py [MODEL_DIR] [--audio FILE ...] [--runs 7]

For each input, encodes it once, then times ``Inference.decode_batch`` (one utterance: the single search;
all inputs together: the batched search) with confidence off and with a few confidence settings; prints
the median of ``--runs`` runs (after one warm-up) per setting as JSON, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from typing import Any

from parakeet_runtime.decoding import ConfidenceOptions
from parakeet_runtime.engine import BatchingOptions, Engine, sample_audio_path
from parakeet_runtime.engine.requests.inference import Inference

SETTINGS: dict[str, ConfidenceOptions | None] = {
    "off": None,
    "max_prob": ConfidenceOptions(method="max_prob"),
    "entropy (NeMo default)": ConfidenceOptions(),
    "entropy + blanks + duration": ConfidenceOptions(exclude_blank=False, include_duration=True),
}


def _cpu_model() -> str:
    """``/proc/cpuinfo``'s model name (what ``lscpu`` calls Model name), else the platform's name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_ms(inference: Inference, prepared: list[Any], runs: int) -> float:
    frames, lengths = inference.encode_batch(prepared)
    inference.decode_batch(frames, lengths, prepared)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        inference.decode_batch(frames, lengths, prepared)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", help="model directory (default: the bundled demo model)")
    parser.add_argument("--audio", nargs="+", help="audio files (default: the bundled sample)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")

    audio = args.audio or [str(sample_audio_path())]
    results: dict[str, dict[str, float]] = {}
    with Engine.load(args.model_dir, batching=BatchingOptions(enabled=False)) as engine:
        prepared = [engine.prepare(a) for a in audio]
        for name, options in SETTINGS.items():
            inference = dataclasses.replace(
                engine.inference, transcripts=dataclasses.replace(engine.inference.transcripts, confidence=options)
            )
            one = [_median_ms(inference, [p], args.runs) for p in prepared]
            results[name] = {"single_ms": round(sum(one), 3)}
            if len(prepared) > 1:
                results[name]["batch_ms"] = round(_median_ms(inference, prepared, args.runs), 3)
    off = results["off"]["single_ms"]
    for entry in results.values():
        entry["single_vs_off"] = round(entry["single_ms"] / off, 3)
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count()}
    print(json.dumps({"machine": machine, "inputs": audio, "runs": args.runs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
