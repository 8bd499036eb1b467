"""Resident memory after loading and through requests: what ``Engine.load`` hands back, beside NeMo.

Loading reads graphs and rewrites some of them in memory (the decoding graphs' int8 weights, the exact path's
proven ranking), and two things kept those buffers resident after loading: ONNX Runtime's Python session holds
the serialised graph it was opened from for its whole life, and glibc keeps most of what a program frees in its
heaps. The engine lets go of both (``onnx_model._forget_graph_bytes``, ``memory.release_free_memory`` at the end
of ``Engine.load``). This script loads each model directory in a fresh process per variant, the variants taking
turns, and reads the resident memory after loading, the peak during ``--requests`` transcriptions of a clip and
the resident memory after them; with ``--nemo`` NeMo's own figures for the same checkpoint and clip come first.

Variants: ``engine`` (as shipped), ``kept-bytes`` (sessions keep their graphs' bytes), ``no-trim`` (no
``malloc_trim`` after loading), ``neither`` (neither of the two). Linux only (``/proc/self/status``).

    python benchmarks/load_memory.py --model ~/.cache/parakeet-bench/v3/int8-int8 ~/.cache/parakeet-bench/v3/fp32 \
        --nemo ~/.cache/parakeet-bench/v3/model.nemo --readme
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from concurrency import load_nemo, machine
from readme_block import measured_on, worker_result, write_block, write_json
from rtfx import make_clips, reset_peak_rss

VARIANTS = ("engine", "kept-bytes", "no-trim", "neither")


def _memory_mb() -> dict[str, float]:
    """The current resident memory (VmRSS), the part of it that maps files (RssFile: page cache the system can
    reclaim, such as a graph file a runtime maps) and the peak since the last reset (VmHWM), in MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:", "RssFile:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": values["VmRSS"], "peak_mb": values["VmHWM"], "file_mb": values.get("RssFile", 0.0)}


def worker(model: str, variant: str, clip: Path, requests: int, threads: int, backend: str = "onnxruntime",
           precision: str = "fp32") -> dict[str, Any]:
    """Load ``model`` as ``variant`` says (``nemo``: a ``.nemo`` checkpoint in NeMo; ``backend``, ``precision``:
    the engine's ``SessionOptions``), then transcribe ``clip``."""
    started = time.perf_counter()
    if variant == "nemo":
        nemo_model = load_nemo(model, threads)

        def transcribe() -> str:
            (hypothesis,) = nemo_model.transcribe([str(clip)], batch_size=1, verbose=False)
            nemo_model.eval()  # NeMo's transcribe leaves its modules in train mode
            return str(getattr(hypothesis, "text", hypothesis))
    else:
        from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions
        from parakeet_runtime.engine import engine as engine_module
        from parakeet_runtime.engine.model import onnx_model

        if variant in ("kept-bytes", "neither"):
            setattr(onnx_model, "_forget_graph_bytes", lambda session: None)  # noqa: B010 -- the variant's patch
        if variant in ("no-trim", "neither"):
            setattr(engine_module, "release_free_memory", lambda: False)  # noqa: B010 -- the variant's patch
        options = SessionOptions(threads=threads, backend=backend, precision=precision)  # type: ignore[arg-type]
        engine = Engine.load(model, session=options, batching=BatchingOptions(enabled=False))

        def transcribe() -> str:
            return engine.transcribe(clip).text
    load_s = time.perf_counter() - started
    after_load = _memory_mb()
    if not reset_peak_rss():
        raise SystemExit("load_memory.py needs Linux's /proc/self/clear_refs (the peak of the requests alone)")
    texts = [transcribe() for _ in range(requests)]
    after = _memory_mb()
    return {"variant": variant, "load_s": load_s, "rss_after_load_mb": after_load["rss_mb"],
            "load_peak_mb": after_load["peak_mb"], "request_peak_mb": after["peak_mb"],
            "rss_after_requests_mb": after["rss_mb"], "files_after_requests_mb": after["file_mb"],
            "same_text": len(set(texts)) == 1, "text": texts[0]}


def run_worker(args: argparse.Namespace, model: str, variant: str, clip: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", variant, "--model", model, "--clip", str(clip),
               "--requests", str(args.requests), "--threads", str(args.threads), "--backend", args.backend,
               "--precision", args.precision]
    return worker_result(command, f"{variant} on {model} failed")


def write_table(report: dict[str, Any], readme: Path) -> None:
    meta = report["meta"]
    lines = [
        f"{measured_on(meta)}; {meta['clip_s']:.0f} s clip, {meta['requests']} requests per process, threads "
        f"{meta['threads']}, the engine on "
        f"{meta.get('backend', 'onnxruntime')} {meta.get('precision', 'fp32')}; each row a fresh process (the "
        f"median of {meta['rounds']} by the memory after the requests, the variants taking turns, each round "
        "starting one later; load: the median). MB of resident memory.",
        "",
        "| model | system | after loading | loading's peak | requests' peak | after the requests | of it, mapped files "
        "| load (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(f"| `{r['model']}` | {r['variant']} | {r['rss_after_load_mb']:.0f} | {r['load_peak_mb']:.0f} | "
                     f"{r['request_peak_mb']:.0f} | {r['rss_after_requests_mb']:.0f} | "
                     f"{_files(r)} | {r['load_s']:.1f} |")
    lines += ["", "`engine`: as shipped; `kept-bytes`: the sessions on graphs made at load keep their bytes; "
              "`no-trim`: no `malloc_trim` after loading; `neither`: neither of the two. The same text in "
              f"every engine variant of a model: {'yes' if meta['same_text'] else '**no**'}."]
    write_block(readme, f"load-memory-{meta['name']}", lines, f"Memory after loading: {meta['name']}")


def _files(row: dict[str, Any]) -> str:
    return f"{row['files_after_requests_mb']:.0f}" if "files_after_requests_mb" in row else "–"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", required=True, help="converted model directories")
    parser.add_argument("--nemo", default=None, help="the .nemo checkpoint they came from (NeMo's figures first)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino"],
                        help="the engine's SessionOptions.backend (NeMo ignores it)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                        help="the engine's SessionOptions.precision, with --backend openvino")
    parser.add_argument("--seconds", default="60s", choices=["5s", "60s", "300s"], help="the clip")
    parser.add_argument("--name", default="zen4", help="results/load-memory-NAME.json")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--readme", nargs="?", const=Path(__file__).parent / "README.md", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.model[0], args.worker, args.clip, args.requests, args.threads,
                                            args.backend, args.precision)))
        return 0
    jobs = ([(args.nemo, "nemo")] if args.nemo else []) + [(m, v) for m in args.model for v in args.variants]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {job: [] for job in jobs}
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clips(Path(folder))[args.seconds][0]
        for round_index in range(args.rounds):  # each round starts one job later: no job is always first
            shift = round_index % len(jobs)
            for model, variant in jobs[shift:] + jobs[:shift]:
                runs[(model, variant)].append(run_worker(args, model, variant, clip))
                print(model, variant, json.dumps({k: v for k, v in runs[(model, variant)][-1].items()
                                                  if k != "text"}), flush=True)
    results = []
    for (model, _variant), rounds in runs.items():
        middle = sorted(rounds, key=lambda r: r["rss_after_requests_mb"])[len(rounds) // 2]
        path = Path(model).expanduser()
        results.append({**middle, "load_s": statistics.median(r["load_s"] for r in rounds),
                        "model": f"{path.parent.name}/{path.name}", "rounds": rounds})
    texts = {(r["model"], r["text"]) for r in results if r["variant"] != "nemo"}
    same = all(r["same_text"] for r in results) and len(texts) == len({m for m, _ in texts})
    meta = {"name": args.name, "date": date.today().isoformat(), "machine": machine(), "threads": args.threads,
            "backend": args.backend, "precision": args.precision,
            "requests": args.requests, "rounds": args.rounds, "clip_s": float(args.seconds[:-1]), "same_text": same}
    report = {"meta": meta, "results": results}
    write_json(args.results / f"load-memory-{args.name}.json", report)
    if args.readme:
        write_table(report, args.readme)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
