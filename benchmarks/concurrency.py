"""Concurrency benchmark: NeMo ``transcribe`` (unguarded, and behind a global lock) against this engine
(without and with dynamic batching), at several concurrency levels, on the same model and clips.

Each (system, concurrency) cell runs in its own process so that peak RSS is that cell's own. Every
thread issues requests back to back for a fixed number of requests; throughput is audio seconds
transcribed per wall-clock second, latency is per request.

    python benchmarks/concurrency.py --nemo .fixtures/models/tdt_a.nemo \\
        --model-dir .fixtures/converted-*/tdt_a --clips .fixtures/models/clips/c1_short.wav ...

Writes ``benchmarks/results/concurrency.json`` and the table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from readme_block import write_block, write_json  # noqa: E402

SYSTEMS = ("nemo-unguarded", "nemo-lock", "engine-unbatched", "engine-batched")


def _audio_seconds(path: str) -> float:
    import soundfile

    info = soundfile.info(path)
    return float(info.frames) / float(info.samplerate)


def load_nemo(nemo_path: str, threads: int | None) -> Any:
    """A NeMo ASR model restored on the CPU in eval mode, with NeMo's logging quietened."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    for name in ("nemo_logger", "nemo", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from nemo.collections.asr.models import ASRModel
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    model = ASRModel.restore_from(nemo_path, map_location="cpu")
    model.eval()
    return model


def _load_system(system: str, nemo_path: str, model_dir: str, threads: int | None,
                 session: dict[str, Any] | None = None) -> Any:
    """A callable ``f(path) -> text`` for the system under test; ``session``: more ``SessionOptions`` fields for the
    engine (``backend``, ``precision``)."""
    if system.startswith("nemo"):
        model = load_nemo(nemo_path, threads)
        lock = threading.Lock() if system == "nemo-lock" else None

        def nemo_call(path: str) -> str:
            if lock is None:
                hyps = model.transcribe([path], batch_size=1, timestamps=True, verbose=False)
            else:
                with lock:
                    hyps = model.transcribe([path], batch_size=1, timestamps=True, verbose=False)
            return str(hyps[0].text)

        return nemo_call, lambda: None

    from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions

    batching = BatchingOptions(enabled=system == "engine-batched")
    engine = Engine.load(model_dir, session=SessionOptions(threads=threads, **(session or {})), batching=batching)

    def engine_call(path: str) -> str:
        return engine.transcribe(path).text

    return engine_call, engine.close


def run_cell(system: str, concurrency: int, requests: int, clips: list[str], nemo_path: str, model_dir: str,
             threads: int | None, session: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one cell in this process and return its measurements."""
    call, close = _load_system(system, nemo_path, model_dir, threads, session)
    seconds = {c: _audio_seconds(c) for c in clips}
    for clip in clips[:2]:  # warm-up
        call(clip)
    per_thread = max(1, requests // concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    done_audio = [0.0]
    guard = threading.Lock()
    barrier = threading.Barrier(concurrency)

    def worker(t: int) -> None:
        barrier.wait()
        for r in range(per_thread):
            clip = clips[(t + r) % len(clips)]
            start = time.perf_counter()
            try:
                call(clip)
            except Exception as exc:
                with guard:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                continue
            elapsed = time.perf_counter() - start
            with guard:
                latencies.append(elapsed)
                done_audio[0] += seconds[clip]

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(concurrency)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - started
    close()
    latencies.sort()

    def pct(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    return {
        "system": system,
        "concurrency": concurrency,
        "requests": per_thread * concurrency,
        "ok": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "wall_s": wall,
        "audio_s": done_audio[0],
        "throughput_audio_s_per_s": done_audio[0] / wall if wall else None,
        "p50_s": pct(0.50),
        "p95_s": pct(0.95),
        "mean_s": statistics.fmean(latencies) if latencies else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "simd": _simd(), "python": platform.python_version(),
            "platform": platform.platform()}


def _simd() -> str:
    """The widest vector extensions the CPU reports (what bounds fp32 and int8 matrix-product speed)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx2", "fma", "avx")
                return " ".join(f for f in wanted if f in flags) or "none of avx/avx2/avx512"
    except OSError:
        pass
    return "unknown"


def write_table(results: list[dict[str, Any]], meta: dict[str, Any], readme: Path) -> None:
    lines = [
        f"Model `{meta['model']}`, clips {meta['clips']} ({meta['audio_per_request_s']:.1f} s of audio per request on "
        f"average), {meta['machine']['cores']} cores ({meta['machine']['cpu']}), {meta['date']}.",
        "",
        "| system | concurrency | requests | errors | throughput (audio s/s) | p50 (s) | p95 (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        tp = r["throughput_audio_s_per_s"]
        lines.append(
            f"| {r['system']} | {r['concurrency']} | {r['requests']} | {r['errors']} | "
            f"{tp:.1f} | {r['p50_s'] or float('nan'):.3f} | {r['p95_s'] or float('nan'):.3f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    write_block(readme, "concurrency", lines, "Concurrency")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nemo", required=True, help=".nemo checkpoint (NeMo runs it)")
    parser.add_argument("--model-dir", required=True, help="the same checkpoint converted by convert-model")
    parser.add_argument("--clips", nargs="+", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 33])
    parser.add_argument("--requests", type=int, default=66, help="requests per cell (split over the threads)")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and ONNX Runtime")
    parser.add_argument("--backend", choices=("onnxruntime", "openvino"), default=None,
                        help="the engine's SessionOptions.backend (default: the engine's)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                        help="the engine's SessionOptions.precision (OpenVINO; default: the engine's)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "concurrency.json")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--cell", nargs=2, metavar=("SYSTEM", "CONCURRENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    session: dict[str, Any] = {k: v for k, v in (("backend", args.backend), ("precision", args.precision)) if v}

    if args.cell:
        result = run_cell(args.cell[0], int(args.cell[1]), args.requests, args.clips, args.nemo, args.model_dir,
                          args.threads, session)
        sys.stdout.write("RESULT " + json.dumps(result) + "\n")
        return 0

    results = []
    for system in args.systems:
        for concurrency in args.concurrency:
            command = [sys.executable, __file__, "--nemo", args.nemo, "--model-dir", args.model_dir,
                       "--requests", str(args.requests), "--cell", system, str(concurrency), "--clips", *args.clips]
            if args.threads:
                command += ["--threads", str(args.threads)]
            command += [f"--{key}={value}" for key, value in session.items()]
            proc = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                raise SystemExit(f"{system} x{concurrency} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT "):])
            results.append(result)
            logging.getLogger("bench").warning(
                "%-16s x%-3d %4d ok %3d errors  %7.1f audio s/s  p50 %.3f s", system, concurrency, result["ok"],
                result["errors"], result["throughput_audio_s_per_s"], result["p50_s"] or float("nan"),
            )
    meta = {
        "model": Path(args.nemo).name,
        "clips": [Path(c).name for c in args.clips],
        "audio_per_request_s": statistics.fmean(_audio_seconds(c) for c in args.clips),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "engine_session": session,
    }
    write_json(args.out, {"meta": meta, "results": results})
    write_table(results, meta, args.readme)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sys.exit(main())
