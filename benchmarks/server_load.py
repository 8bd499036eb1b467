"""HTTP load benchmark: the seed's FastAPI + NeMo-behind-a-semaphore server against ``parakeet-runtime
serve``, on loopback, same model and clips, at several concurrency levels.

    python benchmarks/server_load.py --nemo .fixtures/models/tdt_a.nemo \\
        --model-dir .fixtures/converted-*/tdt_a --clips engine/data/sample.wav ...

Writes ``benchmarks/results/server_load.json`` and the table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from concurrency import machine  # noqa: E402
from readme_block import write_block, write_json  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(kind: str, nemo: str, model_dir: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    if kind == "nemo-fastapi-semaphore":
        command = [sys.executable, "-m", "uvicorn", "nemo_server:app", "--port", str(port), "--log-level", "warning"]
        env = {**os.environ, "NEMO_CHECKPOINT": nemo}
        cwd: Path | None = HERE
    else:
        command = [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "serve", "--model", model_dir, "--port",
                   str(port), "--log-level", "warning", "--max-in-flight", "256"]
        env, cwd = dict(os.environ), None
    # The server's log goes to a file: a pipe nobody reads fills up and blocks the server.
    log = tempfile.NamedTemporaryFile(prefix=f"{kind}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited: {Path(log.name).read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{kind} server did not start")
        time.sleep(0.3)


def _load(url: str, clips: list[tuple[bytes, float]], concurrency: int, requests: int) -> dict[str, Any]:
    per_client = max(1, requests // concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    audio = [0.0]
    guard = threading.Lock()
    barrier = threading.Barrier(concurrency)

    def client(c: int) -> None:
        with httpx.Client(timeout=300) as http:
            barrier.wait()
            for r in range(per_client):
                data, seconds = clips[(c + r) % len(clips)]
                start = time.perf_counter()
                try:
                    response = http.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                                         data={"model": "parakeet"})
                    ok = response.status_code == 200
                    detail = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    ok, detail = False, type(exc).__name__
                elapsed = time.perf_counter() - start
                with guard:
                    if ok:
                        latencies.append(elapsed)
                        audio[0] += seconds
                    else:
                        errors.append(detail)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    return {"concurrency": concurrency, "requests": per_client * concurrency, "ok": len(latencies),
            "errors": len(errors), "error_examples": sorted(set(errors))[:3], "wall_s": wall,
            "throughput_audio_s_per_s": audio[0] / wall, "requests_per_s": len(latencies) / wall,
            "p50_s": pct(0.5), "p95_s": pct(0.95), "p99_s": pct(0.99)}


def write_table(results: list[dict[str, Any]], meta: dict[str, Any], readme: Path) -> None:
    lines = [
        f"Model `{meta['model']}`, clips {meta['clips']}, loopback HTTP, {meta['machine']['cores']} cores "
        f"({meta['machine']['cpu']}), {meta['date']}.",
        "",
        "| server | concurrency | requests | errors | req/s | audio s/s | p50 (s) | p95 (s) | p99 (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['requests']} | {r['errors']} | "
                     f"{r['requests_per_s']:.1f} | {r['throughput_audio_s_per_s']:.1f} | {r['p50_s']:.3f} | "
                     f"{r['p95_s']:.3f} | {r['p99_s']:.3f} |")
    write_block(readme, "server_load", lines, "HTTP server under load")


def main(argv: list[str] | None = None) -> int:
    import soundfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nemo", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--clips", nargs="+", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 33])
    parser.add_argument("--requests", type=int, default=330, help="requests per cell")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "server_load.json")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    args = parser.parse_args(argv)
    args.nemo, args.model_dir = str(Path(args.nemo).resolve()), str(Path(args.model_dir).resolve())
    clips = []
    for path in args.clips:
        info = soundfile.info(path)
        clips.append((Path(path).read_bytes(), info.frames / info.samplerate))
    results = []
    for server in ("nemo-fastapi-semaphore", "parakeet-runtime-serve"):
        proc, url = _start(server, args.nemo, args.model_dir)
        try:
            _load(url, clips, 1, 2)  # warm-up
            for concurrency in args.concurrency:
                result = {"server": server, **_load(url, clips, concurrency, args.requests)}
                results.append(result)
                print(f"{server:24s} x{concurrency:<3d} {result['ok']:4d} ok {result['errors']:3d} errors "
                      f"{result['requests_per_s']:6.1f} req/s  p50 {result['p50_s']:.3f} s", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    meta = {"model": Path(args.nemo).name, "clips": [Path(c).name for c in args.clips], "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "audio_per_request_s": statistics.fmean(s for _, s in clips)}
    write_json(args.out, {"meta": meta, "results": results})
    write_table(results, meta, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
