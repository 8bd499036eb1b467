"""Where the encoder's time goes: ONNX Runtime's node profile of one model directory's encoder graph.

Runs the encoder (as the engine opens it: all graph optimisations, sequential execution) on ``--seconds``
of input, once to warm up and ``--runs`` times with ONNX Runtime's profiler on, then sums node time by
operator type. For matrix products it also counts the arithmetic (2·M·K·N from the recorded shapes)
and reports the achieved GFLOP/s, to compare with the machine's peak.

    python benchmarks/profile_encoder.py --model ~/.cache/parakeet-bench/v2/fp32 --name v2-fp32

Writes ``benchmarks/results/profile-<name>.json`` and a table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from concurrency import machine  # noqa: E402
from readme_block import write_json  # noqa: E402

from parakeet_runtime.engine.model.manifest import load_manifest  # noqa: E402
from parakeet_runtime.engine.model.onnx_model import session_options  # noqa: E402

logger = logging.getLogger("profile_encoder")

MATMUL_OPS = {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
              "QGemm", "MatMulNBits"}


def _shapes(arg: Any) -> list[list[int]]:
    return [list(next(iter(entry.values()))) for entry in arg or []]


def _matmul_flops(inputs: list[list[int]], outputs: list[list[int]]) -> float:
    """2·K·(elements of the output) for a (batched) matrix product, K being the first input's last dimension
    (the profile records no shapes for weights, so the output shape stands in for them)."""
    if not inputs or not outputs or len(inputs[0]) < 2:
        return 0.0
    return 2.0 * inputs[0][-1] * math.prod(outputs[0])


def profile(model_dir: Path, seconds: float, runs: int, threads: int | None) -> dict[str, Any]:
    manifest = load_manifest(model_dir)
    spec = manifest.encoder
    frames = int(seconds / manifest.features.window_stride)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, manifest.features.n_mels, frames)).astype(np.float32)
    lengths = np.array([frames], dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(threads, "no")  # exactly what the engine's encoder runs with
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "encoder")
        session = ort.InferenceSession(str(model_dir / spec.file), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        feeds = {spec.input_features: features, spec.input_lengths: lengths}
        session.run(None, feeds)
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feeds)
            walls.append(time.perf_counter() - start)
        events = json.loads(Path(session.end_profiling()).read_text())
    # The first model_run is the warm-up: keep node events after its end.
    runs_seen = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    after = runs_seen[0]["ts"] + runs_seen[0]["dur"] if runs_seen else 0
    by_op: dict[str, dict[str, float]] = defaultdict(lambda: {"us": 0.0, "flops": 0.0, "nodes": 0.0})
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < after:
            continue
        op = e["args"].get("op_name", "?")
        entry = by_op[op]
        entry["us"] += e["dur"]
        entry["nodes"] += 1
        if op in MATMUL_OPS:
            entry["flops"] += _matmul_flops(_shapes(e["args"].get("input_type_shape")),
                                            _shapes(e["args"].get("output_type_shape")))
    total_us = sum(v["us"] for v in by_op.values())
    ops = []
    for op, v in sorted(by_op.items(), key=lambda kv: -kv[1]["us"]):
        ops.append({
            "op": op,
            "share": v["us"] / total_us,
            "ms_per_run": v["us"] / 1000 / runs,
            "nodes_per_run": v["nodes"] / runs,
            "gflop_per_s": v["flops"] / (v["us"] * 1e3) if v["flops"] else None,
        })
    return {
        "model": str(model_dir), "precision": spec.precision, "seconds": seconds, "runs": runs,
        "threads": threads, "onnxruntime": ort.__version__,
        "wall_s_median": float(np.median(walls)), "rtfx": seconds / float(np.median(walls)),
        "node_time_s_per_run": total_us / 1e6 / runs, "ops": ops,
    }


def _threads(result: dict[str, Any]) -> str:
    cores = result["machine"]["cores"]
    threads = result.get("threads")
    return f"{cores} cores" if threads in (None, cores) else f"{threads} threads on a {cores}-core machine"


def write_table(result: dict[str, Any], name: str, readme: Path) -> None:
    start, end = f"<!-- profile-{name}:start -->", f"<!-- profile-{name}:end -->"
    m = result["machine"]
    lines = [
        start,
        f"Encoder `{name}` ({result['precision']}), {result['seconds']:.0f} s of input, median of "
        f"{result['runs']} runs: {result['wall_s_median']:.2f} s ({result['rtfx']:.1f}× real time); "
        f"{_threads(result)} ({m['cpu']}, {m.get('simd', '?')}), "
        f"ONNX Runtime {result.get('onnxruntime', '?')}, {result['date']}.",
        "",
        "| operator | share of node time | ms per run | nodes per run | GFLOP/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for op in result["ops"][:12]:
        gf = f"{op['gflop_per_s']:.0f}" if op["gflop_per_s"] else ""
        lines.append(f"| {op['op']} | {100 * op['share']:.1f}% | {op['ms_per_run']:.0f} | "
                     f"{op['nodes_per_run']:.0f} | {gf} |")
    lines.append(end)
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    block = "\n".join(lines)
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = profile(args.model, args.seconds, args.runs, args.threads)
    result["machine"] = machine()
    result["date"] = time.strftime("%Y-%m-%d")
    write_json(args.results / f"profile-{args.name}.json", result)
    write_table(result, args.name, args.readme)
    for op in result["ops"][:8]:
        logger.info("%-24s %5.1f%%  %8.0f ms", op["op"], 100 * op["share"], op["ms_per_run"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
