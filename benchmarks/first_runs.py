"""The cost of a system's first run at an input length, beside NeMo: each length runs twice in a row, in order.

A server meets lengths in any order. Some runtimes pay once for a new input shape (kernels made for it) or for a
longer input than any before (buffers grown); this script tells which, per system, by running a sequence of
lengths (``--seconds``, in the order given: e.g. growing, then shorter ones not seen before, then a longer one)
twice each, back to back, on the same audio (a noise clip cut to each length), each system in its own process
(with ``--warm-up S``, after one run on S seconds of silence: ``Engine.warm_up``, NeMo ``transcribe``):
NeMo ``transcribe`` and the engine with the sessions asked for (``--system NAME=BACKEND/PRECISION``, e.g.
``ov-int8=openvino/int8``, ``ort-fp32=onnxruntime/fp32``). The extra of a first run is its time minus the second's.

    python benchmarks/first_runs.py --nemo v2/model.nemo --model v2/fp32 --name v2-zen4 \\
        --seconds 30 60 30.3 45.7 59.1 59.9 61 70 --system ort-fp32=onnxruntime/fp32 ov-int8=openvino/int8

Writes ``benchmarks/results/first-runs-<name>.json`` and a table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from concurrency import load_nemo, machine  # noqa: E402
from readme_block import write_block, write_json  # noqa: E402

RATE = 16000


def clip(seconds: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The same quiet noise for every system, cut to ``seconds``."""
    noise = np.random.default_rng(0).standard_normal(round(seconds * RATE)) * 0.05
    return noise.astype(np.float32)


def _runner(system: str, spec: str, nemo: str, model: str, threads: int,
            warm_up: float | None) -> Callable[[np.ndarray[Any, Any]], None]:
    """``system`` loaded, as a function of one input; with ``warm_up``, run once on that many seconds of silence
    first (the engine's ``Engine.warm_up``; NeMo: ``transcribe`` of the same silence)."""
    if system == "nemo":
        loaded = load_nemo(nemo, threads)

        def run_nemo(audio: np.ndarray[Any, Any]) -> None:
            loaded.transcribe([audio], batch_size=1, timestamps=True, verbose=False)
        if warm_up is not None:
            run_nemo(np.zeros(round(warm_up * RATE), dtype=np.float32))
        return run_nemo
    from parakeet_runtime.engine import Engine, SessionOptions
    backend, precision = spec.split("/")
    engine = Engine.load(model, session=SessionOptions(threads=threads, backend=backend,  # type: ignore[arg-type]
                                                       precision=precision))  # type: ignore[arg-type]
    if warm_up is not None:
        engine.warm_up(warm_up)

    def run_engine(audio: np.ndarray[Any, Any]) -> None:
        engine.transcribe(audio)
    return run_engine


def measure(system: str, spec: str, nemo: str, model: str, seconds: list[float], threads: int,
            warm_up: float | None = None) -> dict[str, Any]:
    """Load ``system`` (and warm it up), then run each length twice in order; returns its rows."""
    started = time.perf_counter()
    run = _runner(system, spec, nemo, model, threads, warm_up)
    load_s = time.perf_counter() - started
    rows = []
    for length in seconds:
        audio = clip(length)
        times = []
        for _ in range(2):
            began = time.perf_counter()
            run(audio)
            times.append(time.perf_counter() - began)
        rows.append({"seconds": length, "first_s": times[0], "second_s": times[1]})
    return {"system": system, "spec": spec, "load_s": load_s, "rows": rows}


def write_table(report: dict[str, Any], readme: Path) -> None:
    hardware = report["machine"]
    systems = report["systems"]
    warmed = f"after a warm-up on {report['warm_up_s']:g} s of silence, " if report.get("warm_up_s") else ""
    lines = [f"Measured {report['date']} on {hardware['cpu']} ({hardware.get('isa', '')}), "
             f"{report['threads']} threads; {warmed}each length run twice in a row, in the order below; first run / "
             f"second run in seconds, and the first run's extra (`results/first-runs-{report['name']}.json`).", "",
             "| audio (s) | " + " | ".join(s["system"] + (f" ({s['spec']})" if s["spec"] else "") for s in systems)
             + " |",
             "|---:|" + "---:|" * len(systems)]
    for index, length in enumerate(report["seconds"]):
        cells = []
        for s in systems:
            row = s["rows"][index]
            cells.append(f"{row['first_s']:.2f} / {row['second_s']:.2f} ({row['first_s'] - row['second_s']:+.2f})")
        lines.append(f"| {length:g} | " + " | ".join(cells) + " |")
    write_block(readme, f"first-runs-{report['name']}", lines, f"First runs: {report['name']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nemo", required=True, help="the .nemo checkpoint")
    parser.add_argument("--model", required=True, help="its convert-model directory")
    parser.add_argument("--name", required=True)
    parser.add_argument("--seconds", nargs="+", type=float, required=True)
    parser.add_argument("--system", nargs="+", default=["ort-fp32=onnxruntime/fp32"], metavar="NAME=BACKEND/PRECISION")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warm-up", type=float, default=None, metavar="S",
                        help="after loading, run each system once on S seconds of silence (Engine.warm_up)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # NAME SPEC: measure one system, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.nemo, args.model, args.seconds, args.threads,
                                 args.warm_up)))
        return 0
    systems = [("nemo", "")] + [tuple(item.split("=", 1)) for item in args.system]
    measured = []
    for name, spec in systems:
        command = [sys.executable, __file__, "--nemo", args.nemo, "--model", args.model, "--name", args.name,
                   "--threads", str(args.threads), "--seconds", *map(str, args.seconds), "--one", name, spec]
        if args.warm_up is not None:
            command += ["--warm-up", str(args.warm_up)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name}: failed\n{done.stderr[-3000:]}")
        measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
    from parakeet_runtime.engine.model.cpu import isa_summary
    report = {"name": args.name, "date": time.strftime("%Y-%m-%d"), "machine": {**machine(), "isa": isa_summary()},
              "threads": args.threads, "warm_up_s": args.warm_up, "seconds": args.seconds, "systems": measured}
    write_json(args.out_dir / f"first-runs-{args.name}.json", report)
    write_table(report, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
