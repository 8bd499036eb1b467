"""How close NeMo's and the engine's fp32 encoders run to this CPU's fp32 matrix-product rate.

The exact (fp32) path does NeMo's arithmetic, product for product, so it can only beat NeMo by running those
products at a higher rate. This script counts the encoder's floating-point operations on one clip
(``torch.utils.flop_counter`` over NeMo's own forward: every matrix product and convolution), measures the CPU's
fp32 matrix-product rate (``torch.mm`` of 4096 × 4096 matrices, the best of several, on the same threads), and
times the encoder alone on the same features: NeMo's torch forward, the engine's ONNX Runtime session and, with
``--openvino``, OpenVINO fp32. Reported per system: time, GFLOP/s and the share of the measured matrix-product
rate; and what a 1.5× faster encoder than NeMo's would need.

    python benchmarks/flop_rate.py --nemo ~/.cache/parakeet-bench/v2/model.nemo \\
        --fp32 ~/.cache/parakeet-bench/v2/fp32 --openvino --label v2-amx --readme

Writes ``benchmarks/results/flop-rate-<label>.json`` (``--out-dir``) and, with ``--readme [PATH]``, a table between
the ``flop-rate-<label>`` markers of benchmarks/README.md (or of PATH).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from concurrency import load_nemo  # noqa: E402
from long_audio import machine  # noqa: E402
from readme_block import write_block, write_json  # noqa: E402

PRODUCT_SIZE = 4096
"""Side of the square fp32 products that measure the CPU's matrix-product rate."""


def matmul_rate(threads: int, repeats: int = 5) -> float:
    """The best fp32 GFLOP/s of ``torch.mm`` on :data:`PRODUCT_SIZE`-square matrices over ``repeats`` runs."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(PRODUCT_SIZE, PRODUCT_SIZE)
    b = torch.randn(PRODUCT_SIZE, PRODUCT_SIZE)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * PRODUCT_SIZE**3 / best / 1e9


def _median_time(run: Any, runs: int) -> float:
    run()  # untimed: first-run allocations, OpenVINO's kernel compilation for this shape
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(nemo_path: str, fp32_dir: str, seconds: float, threads: int, runs: int,
            openvino: bool) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions, sample_audio_path

    peak = matmul_rate(threads)
    model = load_nemo(nemo_path, threads)
    import soundfile

    sample, rate = soundfile.read(str(sample_audio_path()), dtype="float32")
    audio = np.resize(sample, int(seconds * rate))  # speech repeated; the encoder's cost does not depend on it
    with torch.inference_mode():
        signal = torch.from_numpy(audio)[None]
        features, lengths = model.preprocessor(input_signal=signal, length=torch.tensor([signal.shape[1]]))
        counter = FlopCounterMode(display=False)
        with counter:
            model.encoder(audio_signal=features, length=lengths)
        flops = float(counter.get_total_flops())

        nemo_s = _median_time(lambda m=model.encoder: m(audio_signal=features, length=lengths), runs)
    rows: list[dict[str, Any]] = [{"system": "nemo (torch)", "encoder_s": nemo_s}]
    del model  # its weights: the engine's sessions load their own
    feats = features.numpy()
    feat_lengths = lengths.numpy().astype(np.int64)
    configs = [("engine fp32 (ONNX Runtime)", SessionOptions(threads=threads))]
    if openvino:
        configs.append(("engine fp32 (OpenVINO)", SessionOptions(threads=threads, backend="openvino",
                                                                 precision="fp32")))
    for name, session in configs:
        with Engine.load(fp32_dir, session=session, batching=BatchingOptions(enabled=False)) as engine:
            onnx_model = engine.inference.model
            rows.append({"system": name,
                         "encoder_s": _median_time(lambda m=onnx_model: m.encode(feats, feat_lengths), runs)})
    for row in rows:
        row["gflops"] = flops / row["encoder_s"] / 1e9
        row["share_of_peak"] = row["gflops"] / peak
    nemo_rate = rows[0]["gflops"]
    return {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "threads": threads, "seconds": seconds,
            "model": nemo_path, "encoder_gflop": flops / 1e9, "matmul_gflops": peak, "rows": rows,
            "needed_for_1_5x_gflops": 1.5 * nemo_rate, "needed_for_1_5x_share": 1.5 * nemo_rate / peak}


def write_table(report: dict[str, Any], readme: Path, label: str) -> None:
    lines = [f"Measured {report['date']} on {report['machine']}, {report['threads']} threads; "
             f"`{Path(report['model']).parent.name}` encoder on {report['seconds']:g} s: "
             f"{report['encoder_gflop']:.0f} GFLOP (matrix products and convolutions, counted on NeMo's forward); "
             f"fp32 matrix-product rate of this CPU (`torch.mm`, {PRODUCT_SIZE}²): "
             f"{report['matmul_gflops']:.0f} GFLOP/s.", "",
             "| encoder (fp32) | time | GFLOP/s | share of the matrix-product rate |", "|---|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['system']} | {row['encoder_s']:.2f} s | {row['gflops']:.0f} | "
                     f"{100 * row['share_of_peak']:.0f}% |")
    lines += ["", f"An fp32 encoder 1.5× faster than NeMo's would need {report['needed_for_1_5x_gflops']:.0f} GFLOP/s: "
              f"{100 * report['needed_for_1_5x_share']:.0f}% of the matrix-product rate."]
    write_block(readme, f"flop-rate-{label}", lines, f"fp32 encoder rate: {label}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nemo", required=True, help="the .nemo checkpoint")
    parser.add_argument("--fp32", required=True, help="its fp32 model directory (convert-model)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--openvino", action="store_true", help="also time OpenVINO fp32 (the openvino extra)")
    parser.add_argument("--label", required=True)
    parser.add_argument("--readme", nargs="?", type=Path, const=HERE / "README.md", default=None, metavar="PATH",
                        help="write the table into PATH (default benchmarks/README.md)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    report = measure(args.nemo, args.fp32, args.seconds, args.threads, args.runs, args.openvino)
    for row in report["rows"]:
        print(json.dumps(row), flush=True)
    write_json(args.out_dir / f"flop-rate-{args.label}.json", report)
    if args.readme is not None:
        write_table(report, args.readme, args.label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
