"""Batch mode throughput: ``parakeet-runtime transcribe DIR --output-dir OUT`` against the engine's own batched
list call (``engine.transcribe(list_of_paths)``) on the same short files, same engine and batch size.

    python benchmarks/batch_throughput.py --files 1000 --runs 3

The batch mode is timed in-process (``transcribe_inputs`` writing every output, as the CLI does, on an
already loaded engine) and end to end (the CLI as a subprocess, model loading and interpreter start included).
Each measurement is repeated ``--runs`` times, interleaved; the median counts. Writes
``benchmarks/results/batch_throughput.json`` and the table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from parakeet_runtime.engine import AudioInput, BatchingOptions, Engine, sample_audio_path
from parakeet_runtime.engine.serving.batch import OutputPlan, transcribe_inputs, write_outputs
from parakeet_runtime.engine.serving.inputs import collect_inputs
from parakeet_runtime.engine.serving.progress import Progress

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from concurrency import machine  # noqa: E402
from readme_block import write_block, write_json  # noqa: E402


def make_files(folder: Path, count: int, seed: int = 20) -> float:
    """``count`` short clips (0.5 s to the sample's 4.8 s) cut from the bundled sample; returns their audio
    seconds."""
    sample, rate = soundfile.read(sample_audio_path(), dtype="int16")
    rng = np.random.default_rng(seed)
    total = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        length = int(rng.integers(rate // 2, len(sample) + 1))
        clip = sample[:length].astype(np.float64) * rng.uniform(0.4, 1.0) + rng.normal(0.0, 20.0, size=length)
        soundfile.write(folder / f"clip{number:04d}.wav", np.clip(clip, -32768, 32767).astype(np.int16), rate)
        total += length / rate
    return total


def time_engine_list(engine: Engine, paths: list[Path]) -> float:
    sources: list[AudioInput] = list(paths)
    started = time.perf_counter()
    results = engine.transcribe(sources)
    elapsed = time.perf_counter() - started
    assert len(results) == len(paths)
    return elapsed


def time_batch_mode(engine: Engine, folder: Path, out: Path, formats: tuple[str, ...]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    inputs = collect_inputs([str(folder)])
    plan = OutputPlan(out, formats)
    summary = transcribe_inputs(engine, inputs, on_result=lambda item, t: write_outputs(plan, item, t),
                                skip=lambda item: False, progress=Progress(len(inputs), sys.stderr, enabled=False))
    elapsed = time.perf_counter() - started
    assert summary.ok == len(inputs) and summary.failed == 0, summary
    return elapsed


def time_cli(folder: Path, out: Path, formats: tuple[str, ...], batch_size: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "transcribe", str(folder),
               "--output-dir", str(out), "--batch-size", str(batch_size)]
    for fmt in formats:
        command += ["--format", fmt]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    return elapsed


def write_table(report: dict[str, Any], readme: Path) -> None:
    meta = report["meta"]
    lines = [
             f"{meta['files']} files, {meta['audio_s']:.0f} s of audio (0.5–4.8 s each), demo model, batch size "
             f"{meta['batch_size']}, formats {', '.join(meta['formats'])}; median of {meta['runs']} runs; "
             f"{meta['machine']['cores']} cores ({meta['cpu']}), {meta['date']}.",
             "",
             "| how | wall (s) | files/s | audio s/s | vs engine list |",
             "|---|---:|---:|---:|---:|"]
    for row in report["results"]:
        lines.append(f"| {row['how']} | {row['wall_s']:.2f} | {row['files_per_s']:.1f} | "
                     f"{row['audio_s_per_s']:.1f} | {row['ratio']:.2f}× |")
    write_block(readme, "batch_throughput", lines, "Batch mode throughput")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--format", action="append", default=None, help="output formats (default: text, json)")
    parser.add_argument("--cpu", default="AMD EPYC Zen 4", help="the CPU's name for the table (lscpu says less)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "batch_throughput.json")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    args = parser.parse_args(argv)
    formats = tuple(args.format or ["text", "json"])
    with tempfile.TemporaryDirectory(prefix="batch-throughput-") as scratch:
        folder = Path(scratch) / "in"
        audio_s = make_files(folder, args.files)
        paths = sorted(folder.iterdir())
        times: dict[str, list[float]] = {"engine.transcribe(list)": [], "batch mode (in-process)": [],
                                         "batch mode (CLI, end to end)": []}
        with Engine.load(batching=BatchingOptions(max_batch_size=args.batch_size)) as engine:
            time_engine_list(engine, paths[:32])  # warm-up
            for run in range(args.runs):
                times["engine.transcribe(list)"].append(time_engine_list(engine, paths))
                times["batch mode (in-process)"].append(
                    time_batch_mode(engine, folder, Path(scratch) / "out", formats))
                print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v),
                      flush=True)
        for run in range(args.runs):
            times["batch mode (CLI, end to end)"].append(
                time_cli(folder, Path(scratch) / "out-cli", formats, args.batch_size))
            print(f"cli run {run + 1}: {times['batch mode (CLI, end to end)'][-1]:.2f} s", flush=True)
    reference = statistics.median(times["engine.transcribe(list)"])
    results = []
    for how, values in times.items():
        wall = statistics.median(values)
        results.append({"how": how, "wall_s": wall, "runs_s": values, "files_per_s": args.files / wall,
                        "audio_s_per_s": audio_s / wall, "ratio": reference / wall})
    meta = {"files": args.files, "audio_s": audio_s, "batch_size": args.batch_size, "formats": list(formats),
            "runs": args.runs, "machine": machine(), "cpu": args.cpu, "date": time.strftime("%Y-%m-%d")}
    report = {"meta": meta, "results": results}
    write_json(args.out, report)
    write_table(report, args.readme)
    for row in results:
        print(f"{row['how']:30s} {row['wall_s']:7.2f} s {row['files_per_s']:7.1f} files/s {row['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
