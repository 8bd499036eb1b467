"""Ray's overhead on one machine: the in-process engine against 1 and 2 Ray actors (Ray Data) and 1 and 2 Ray
Serve replicas, on the same short files and the same model.

    python benchmarks/ray_overhead.py --files 200 --clients 16 --requests 320

* Offline: ``engine.transcribe(list)`` (engine already loaded) against ``transcribe_dataset`` with 1 actor (ONNX
  Runtime on both cores) and 2 actors (one core each), the whole job timed: actor start and model load
  included, as a user pays them.
* Online: ``parakeet-runtime serve`` (uvicorn, in one process) against ``ray_serve.app`` behind Serve's HTTP
  proxy with 1 and 2 replicas: ``--clients`` concurrent httpx clients, ``--requests`` requests in all.

Starts a local single-node Ray instance (``ray.init``, 2 CPUs). Writes ``benchmarks/results/ray_overhead.json``
and the table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import soundfile

from parakeet_runtime.engine import AudioInput, Engine, SessionOptions

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from batch_throughput import make_files  # noqa: E402
from concurrency import machine  # noqa: E402
from readme_block import write_block, write_json  # noqa: E402
from server_load import _load  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit("the server exited")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not become healthy")
        time.sleep(0.3)


def offline(paths: list[Path], audio_s: float) -> list[dict[str, Any]]:
    import ray

    from parakeet_runtime.engine.ray_data import transcribe_dataset

    results = []
    started = time.perf_counter()
    with Engine.load() as engine:
        load_s = time.perf_counter() - started
        sources: list[AudioInput] = list(paths)
        engine.transcribe(sources[:16])  # warm-up
        started = time.perf_counter()
        expected = {str(path): t.text for path, t in zip(paths, engine.transcribe(sources), strict=True)}
        wall = time.perf_counter() - started
    results.append({"system": "in-process engine.transcribe(list)", "workers": 1, "wall_s": wall,
                    "load_s": load_s, "files_per_s": len(paths) / wall, "audio_s_per_s": audio_s / wall,
                    "mismatches": 0})
    for actors, threads in ((1, 2), (2, 1)):
        dataset = ray.data.from_items([{"path": str(path)} for path in paths])
        started = time.perf_counter()
        rows = transcribe_dataset(dataset, None, concurrency=actors, batch_size=16, threads=threads).take_all()
        wall = time.perf_counter() - started
        mismatches = sum(1 for row in rows if row["text"] != expected[row["path"]])
        assert len(rows) == len(paths)
        results.append({"system": f"Ray Data, {actors} actor{'s' if actors > 1 else ''} ({threads} thread"
                        f"{'s' if threads > 1 else ''} each)", "workers": actors, "wall_s": wall, "load_s": None,
                        "files_per_s": len(paths) / wall, "audio_s_per_s": audio_s / wall, "mismatches": mismatches})
        print(f"{results[-1]['system']}: {wall:.2f} s", flush=True)
    return results


def online(paths: list[Path], clients: int, requests: int) -> list[dict[str, Any]]:
    from ray import serve

    from parakeet_runtime.engine.ray_serve import app

    clips = []
    for path in paths[:20]:
        info = soundfile.info(path)
        clips.append((path.read_bytes(), info.frames / info.samplerate))
    results = []
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "serve", "--port", str(port),
                             "--log-level", "warning", "--max-in-flight", "256"], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc)
        _load(url, clips, 2, 8)  # warm-up
        results.append({"system": "parakeet-runtime serve (one process)", "workers": 1,
                        **_load(url, clips, clients, requests)})
        print(f"{results[-1]['system']}: {results[-1]['requests_per_s']:.1f} req/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    try:
        for replicas, threads in ((1, 2), (2, 1)):
            serve.run(app(None, num_replicas=replicas, threads=threads, num_cpus=1.0, max_ongoing_requests=256),
                      name="parakeet", route_prefix="/")
            _wait_healthy(url)
            _load(url, clips, 2, 8)  # warm-up
            results.append({"system": f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''} ({threads} "
                            f"thread{'s' if threads > 1 else ''} each)", "workers": replicas,
                            **_load(url, clips, clients, requests)})
            print(f"{results[-1]['system']}: {results[-1]['requests_per_s']:.1f} req/s", flush=True)
            serve.delete("parakeet")
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
    return results


def write_table(report: dict[str, Any], readme: Path) -> None:
    meta = report["meta"]
    lines = [
             f"{meta['files']} files, {meta['audio_s']:.0f} s of audio (0.5–4.8 s each), demo model; one machine, "
             f"{meta['machine']['cores']} cores ({meta['cpu']}), Ray {meta['ray']} (local instance, 2 CPUs), "
             f"{meta['date']}.",
             "",
             "| offline | wall (s) | files/s | audio s/s | vs in-process | transcripts differing |",
             "|---|---:|---:|---:|---:|---:|"]
    reference = report["offline"][0]["wall_s"]
    for row in report["offline"]:
        note = f" (+{row['load_s']:.1f} s model load)" if row["load_s"] else ""
        lines.append(f"| {row['system']}{note} | {row['wall_s']:.2f} | {row['files_per_s']:.1f} | "
                     f"{row['audio_s_per_s']:.1f} | {reference / row['wall_s']:.2f}× | {row['mismatches']} |")
    lines += ["",
              f"| online: {meta['clients']} clients, {meta['requests']} requests | errors | req/s | audio s/s | "
              "p50 (s) | p95 (s) | vs in-process |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    reference = report["online"][0]["requests_per_s"]
    for row in report["online"]:
        lines.append(f"| {row['system']} | {row['errors']} | {row['requests_per_s']:.1f} | "
                     f"{row['throughput_audio_s_per_s']:.1f} | {row['p50_s']:.3f} | {row['p95_s']:.3f} | "
                     f"{row['requests_per_s'] / reference:.2f}× |")
    write_block(readme, "ray_overhead", lines, "Ray")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--cpu", default="AMD EPYC Zen 4", help="the CPU's name for the table (lscpu says less)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ray_overhead.json")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    args = parser.parse_args(argv)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance: no token file in the home folder
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as scratch:
        folder = Path(scratch) / "in"
        audio_s = make_files(folder, args.files)
        paths = sorted(folder.iterdir())
        ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir)
        try:
            offline_results = offline(paths, audio_s)
            online_results = online(paths, args.clients, args.requests)
        finally:
            ray.shutdown()
            shutil.rmtree(ray_dir, ignore_errors=True)
    meta = {"files": args.files, "audio_s": audio_s, "clients": args.clients, "requests": args.requests,
            "machine": machine(), "cpu": args.cpu, "ray": ray.__version__, "date": time.strftime("%Y-%m-%d"),
            "in_process_threads": SessionOptions().threads}
    report = {"meta": meta, "offline": offline_results, "online": online_results}
    write_json(args.out, report)
    write_table(report, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
