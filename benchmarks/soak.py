"""Soak test: many short requests against ``parakeet-runtime serve``, watching the server's memory.

    python benchmarks/soak.py                       # 10,000 requests, RSS every 1,000
    python benchmarks/soak.py --requests 200 --sample-every 50 --out /tmp/soak.json

Starts ``parakeet-runtime serve`` (the bundled demo model unless ``--model``) on a free port of 127.0.0.1
as a subprocess, sends ``--requests`` transcription requests from ``--clients`` threads (clips of 1–3 s cut
from the bundled sample; every answer is checked against the engine's own transcript of that clip), and
reads the server's resident memory (``VmRSS`` of the process and any children, from /proc) before the first
request and after every ``--sample-every`` requests. The loop is bounded: it stops after ``--requests`` or
at ``--time-limit`` seconds, whichever comes first.

``--warmup-rounds K`` first sends K rounds of ``--clients`` simultaneous requests of the longest clip (not
counted, before the first sample): ONNX Runtime's arena keeps what it grew for the largest batch shape seen
(short inputs do not release it, see ``SessionOptions``), and without a warm-up that shape may first occur
late in the run, as a one-off step. Default 0: the run starts cold.

Pass criterion: after the first ``--sample-every`` requests (default 1,000; allocator arenas and ONNX
Runtime's buffers settle there), RSS grows by at most 5% (``--max-growth``) for the rest of the run.
Writes the JSON report (default ``benchmarks/results/soak.json``), prints a markdown table, and with
``--readme`` replaces the table between the soak markers in that file. Exit status: 0 when every request
got its 200 with the right transcript, 1 otherwise (the growth verdict is in the report and the output).
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import io
import itertools
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import soundfile

from parakeet_runtime.engine import BatchingOptions, Engine, sample_audio_path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from readme_block import write_block, write_json  # noqa: E402

DEFAULT_OUT = HERE / "results" / "soak.json"
CLIP_SECONDS = (1.0, 1.5, 2.0, 2.5, 3.0)
CLIP_OFFSETS = (0.0, 0.9, 1.8)
"""Clips are ``CLIP_SECONDS`` long, cut at these offsets (seconds) of the sample where they fit."""


@dataclass(frozen=True)
class Clip:
    """One request body and what the server must answer for it."""

    wav: bytes
    """The clip as a 16-bit WAV file."""
    seconds: float
    """Its length."""
    text: str
    """The engine's transcript of it (batching off), the expected answer."""


def cpu_model() -> str:
    """``lscpu``'s Model name (``/proc/cpuinfo`` when lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def make_clips(model: Path | None) -> list[Clip]:
    samples, rate = soundfile.read(sample_audio_path(), dtype="int16")
    total = len(samples) / rate
    cuts = [(offset, length) for length in CLIP_SECONDS for offset in CLIP_OFFSETS if offset + length <= total]
    bodies = []
    for offset, length in cuts:
        buffer = io.BytesIO()
        start = round(offset * rate)
        soundfile.write(buffer, samples[start : start + round(length * rate)], rate, format="WAV", subtype="PCM_16")
        bodies.append((buffer.getvalue(), length))
    with Engine.load(model, batching=BatchingOptions(enabled=False)) as engine:
        texts = engine.transcribe([wav for wav, _ in bodies])
    return [Clip(wav=wav, seconds=length, text=t.text) for (wav, length), t in zip(bodies, texts, strict=True)]


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in kB (``VmRSS`` from /proc/PID/status)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the parenthesised command name
        children[parent].append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``parakeet-runtime serve`` on 127.0.0.1; a thread drains its output and notices uvicorn's 'running' line."""

    def __init__(self, model: Path | None, extra: list[str]) -> None:
        self.port = _free_port()
        command = [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "info", *extra]
        if model is not None:
            command += ["--model", str(model)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self._listening = threading.Event()
        self._settled = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "Uvicorn running on" in line:
                self._listening.set()
                self._settled.set()
            if '"POST /v1/audio/transcriptions HTTP/1.1" 200' not in line:  # keep what is worth reading
                self.tail.append(line)
        self._settled.set()

    def wait_listening(self, timeout: float) -> None:
        if not self._settled.wait(timeout) or not self._listening.is_set():
            self.stop()
            raise SystemExit(f"soak: the server did not start:\n{''.join(self.tail)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)


def warm_up(url: str, clip: Clip, *, clients: int, rounds: int) -> int:
    """``rounds`` rounds of ``clients`` requests of ``clip`` released together (a barrier); the number of 200s."""
    barrier = threading.Barrier(clients)
    answered = [0]
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            for _ in range(rounds):
                barrier.wait()
                response = http.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", clip.wav)},
                                     data={"model": "parakeet"})
                with lock:
                    answered[0] += response.status_code == 200 and response.json().get("text") == clip.text

    threads = [threading.Thread(target=client, name=f"soak-warmup-{c}") for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answered[0]


def soak(url: str, pid: int, clips: list[Clip], *, requests: int, clients: int, sample_every: int,
         time_limit: float) -> dict[str, Any]:
    """Send the requests; RSS samples (requests answered, seconds since the start, kB) at 0 and every
    ``sample_every`` answers."""
    lock = threading.Lock()
    indices = itertools.count()
    started = time.monotonic()
    deadline = started + time_limit
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    mismatches = [0]
    answered = [0]
    samples: list[tuple[int, float, int]] = [(0, 0.0, rss_kb(pid))]
    stopped_by_time = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    index = next(indices)
                if index >= requests:
                    return
                if time.monotonic() > deadline:
                    stopped_by_time.set()
                    return
                clip = clips[index % len(clips)]
                begin = time.perf_counter()
                try:
                    response = http.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", clip.wav)},
                                         data={"model": "parakeet"})
                    outcome = f"HTTP {response.status_code}" if response.status_code != 200 else ""
                    wrong = not outcome and response.json().get("text") != clip.text
                except httpx.HTTPError as exc:
                    outcome, wrong = type(exc).__name__, False
                elapsed = time.perf_counter() - begin
                with lock:
                    answered[0] += 1
                    if outcome:
                        errors[outcome] += 1
                    else:
                        latencies.append(elapsed)
                        mismatches[0] += wrong
                    if answered[0] % sample_every == 0:
                        samples.append((answered[0], time.monotonic() - started, rss_kb(pid)))

    threads = [threading.Thread(target=client, name=f"soak-client-{c}") for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    if samples[-1][0] != answered[0]:
        samples.append((answered[0], wall, rss_kb(pid)))
    latencies.sort()

    def quantile(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else None

    return {
        "answered": answered[0], "ok": len(latencies) - mismatches[0], "errors": sum(errors.values()),
        "error_kinds": dict(errors), "mismatches": mismatches[0], "stopped_by_time_limit": stopped_by_time.is_set(),
        "wall_s": round(wall, 2), "requests_per_s": round(answered[0] / wall, 2) if wall > 0 else None,
        "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99),
                       "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None},
        "rss": [{"requests": n, "elapsed_s": round(t, 2), "rss_mb": round(kb / 1024, 1)} for n, t, kb in samples],
    }


def verdict(rss: list[dict[str, Any]], sample_every: int, max_growth: float) -> dict[str, Any]:
    """RSS growth from the sample after the first ``sample_every`` requests to the largest later sample."""
    after = [s for s in rss if s["requests"] >= sample_every]
    if len(after) < 2:
        return {"baseline_mb": None, "peak_after_mb": None, "growth_pct": None, "pass": None,
                "why": "fewer than two samples after the first interval"}
    base, peak = after[0]["rss_mb"], max(s["rss_mb"] for s in after[1:])
    growth = (peak - base) / base * 100
    return {"baseline_mb": base, "peak_after_mb": peak, "growth_pct": round(growth, 2),
            "pass": growth <= max_growth * 100}


def table(report: dict[str, Any]) -> str:
    base = report["verdict"]["baseline_mb"]
    lines = ["| requests | elapsed (s) | server RSS (MB) | vs. after the first interval |", "|---:|---:|---:|---:|"]
    for s in report["rss"]:
        change = f"{(s['rss_mb'] - base) / base * 100:+.1f}%" if base and s["requests"] >= report["sample_every"] \
            else "–"
        lines.append(f"| {s['requests']} | {s['elapsed_s']:.1f} | {s['rss_mb']:.1f} | {change} |")
    return "\n".join(lines)


def summary(report: dict[str, Any]) -> str:
    v = report["verdict"]
    result = "no verdict" if v["pass"] is None else ("PASS" if v["pass"] else "FAIL")
    return (
        f"{report['answered']} of {report['requests']} requests answered ({report['ok']} right, {report['errors']} "
        f"errors, {report['mismatches']} wrong transcripts) by {report['clients']} client threads in "
        f"{report['wall_s']:.0f} s ({report['requests_per_s']} req/s, p50 {report['latency_ms']['p50']} ms, p99 "
        f"{report['latency_ms']['p99']} ms); clips {min(CLIP_SECONDS):g}–{max(CLIP_SECONDS):g} s. "
        f"Server RSS growth after the first {report['sample_every']} requests: {v['growth_pct']}% "
        f"(criterion ≤ {report['max_growth_pct']:g}%): **{result}**. "
        f"Model `{report['model']}`, {report['machine']['cores']} cores ({report['machine']['cpu']}), "
        f"MALLOC_ARENA_MAX={report['env']['MALLOC_ARENA_MAX'] or 'unset'}, "
        f"warm-up {report['warmup']['requests']} requests, {report['date']}."
    )


def write_readme(readme: Path, report: dict[str, Any]) -> None:
    write_block(readme, "soak", [summary(report), "", table(report)], "Soak")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10_000, help="requests to send (default: 10000)")
    parser.add_argument("--sample-every", type=int, default=1000, help="RSS sample interval (default: 1000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default: 4)")
    parser.add_argument("--time-limit", type=float, default=3600.0,
                        help="stop sending after this many seconds (default: 3600)")
    parser.add_argument("--warmup-rounds", type=int, default=0,
                        help="rounds of simultaneous longest-clip requests before the first sample (default: 0)")
    parser.add_argument("--max-growth", type=float, default=0.05, help="pass criterion (default: 0.05 = 5%%)")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the bundled demo)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument("--readme", type=Path, default=None, help="update the soak table in this markdown file")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.sample_every < 1 or args.clients < 1 or args.time_limit <= 0:
        parser.error("--requests, --sample-every, --clients and --time-limit must be positive")
    if args.warmup_rounds < 0:
        parser.error("--warmup-rounds must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clips = make_clips(args.model)
    server = Server(args.model, ["--max-in-flight", str(max(64, 2 * args.clients))])
    try:
        server.wait_listening(timeout=300)
        model_id = httpx.get(f"{server.url}/health", timeout=30).json()["model"]
        longest = max(clips, key=lambda c: c.seconds)
        warmed = warm_up(server.url, longest, clients=args.clients, rounds=args.warmup_rounds)
        result = soak(server.url, server.proc.pid, clips, requests=args.requests, clients=args.clients,
                      sample_every=args.sample_every, time_limit=args.time_limit)
    finally:
        server.stop()
    report: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "model": model_id,
        "requests": args.requests, "clients": args.clients, "sample_every": args.sample_every,
        "time_limit_s": args.time_limit, "max_growth_pct": args.max_growth * 100,
        "warmup": {"rounds": args.warmup_rounds, "requests": args.warmup_rounds * args.clients, "ok": warmed},
        "clips": [{"seconds": c.seconds, "text": c.text} for c in clips],
        "env": {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX")},
        **result,
    }
    report["verdict"] = verdict(report["rss"], args.sample_every, args.max_growth)
    write_json(args.out, report)
    print(summary(report))
    print()
    print(table(report))
    if args.readme is not None:
        write_readme(args.readme, report)
    all_right = report["answered"] == args.requests and report["ok"] == args.requests
    all_right = all_right and warmed == report["warmup"]["requests"]
    if not all_right:
        print(f"soak: not every request got its right answer; server log tail:\n{''.join(server.tail)}",
              file=sys.stderr)
    return 0 if all_right else 1


if __name__ == "__main__":
    sys.exit(main())
