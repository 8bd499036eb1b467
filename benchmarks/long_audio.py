"""Long recordings: wall time, RTFx and peak RSS against length, this engine and NeMo side by side.

For each length, one 44.1 kHz stereo FLAC is made from the pieces given (the bundled sample clip by default,
at a few gains, with pauses of 0.3-1.5 s between pieces), and each system transcribes it in a fresh process
(its peak RSS is that process's high-water mark):

* ``engine``: ``Engine.transcribe(path)`` with the default ``LongFormOptions`` (one pass while it fits the
  memory budget, else chunks), and ``engine-chunked`` with chunks forced;
* ``nemo``: NeMo's ``transcribe`` on the same recording (as 16 kHz mono: NeMo takes no stereo), with full
  attention up to ``--nemo-full-max`` seconds and, beyond, NeMo's long-form recipe
  (``change_attention_model("rel_pos_local_attn", [128, 128])`` and
  ``change_subsampling_conv_chunking_factor(1)``).

The engine's words are checked: start times non-decreasing and inside the file; and compared with the pieces
transcribed one by one (WER, by word). Costs per audio second are reported relative to the shortest length.

    python benchmarks/long_audio.py --lengths 60 300 1800 3600 --nemo recipes/demo_model/demo.nemo \\
        --label demo --readme

Writes ``benchmarks/results/long-audio-<label>.json``, a plot ``long-audio-<label>.png`` (with matplotlib)
and, with ``--readme``, the table between the ``long-audio-<label>`` markers of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from readme_block import write_block, write_json  # noqa: E402

FILE_RATE = 44100
GAINS = (1.0, 0.7, 0.5, 0.85)


def machine() -> str:
    """The CPU's model name and the ISA extensions that matter here (from /proc/cpuinfo)."""
    import os

    from parakeet_runtime.engine.model.cpu import cpu_name, isa_summary

    return f"{cpu_name()}, {os.cpu_count()} CPUs ({', '.join(isa_summary().split())})"


def _pieces(paths: list[Path]) -> list[np.ndarray]:
    """Each piece at 16 kHz mono and at each gain."""
    out = []
    for path in paths:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1).astype(np.float32)
        if rate != 16000:
            mono = soxr.resample(mono, rate, 16000).astype(np.float32)
        out += [mono * gain for gain in GAINS]
    return out


def make_recording(pieces: list[np.ndarray], seconds: float, path: Path, seed: int = 0) -> list[int]:
    """A 44.1 kHz stereo FLAC of about ``seconds`` from ``pieces`` and pauses, and the same recording as a
    16 kHz mono WAV beside it (``.16k.wav``: NeMo's ``transcribe`` takes mono only); returns the piece order."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    chunks: list[np.ndarray] = []
    total = 0
    while total < seconds * 16000:
        index = int(rng.integers(len(pieces)))
        pause = np.zeros(int(rng.uniform(0.3, 1.5) * 16000), dtype=np.float32)
        chunks += [pieces[index], pause]
        order.append(index)
        total += pieces[index].shape[0] + pause.shape[0]
    mono = np.concatenate(chunks)
    soundfile.write(path.with_suffix(".16k.wav"), mono, 16000, subtype="PCM_16")
    with soundfile.SoundFile(path, "w", samplerate=FILE_RATE, channels=2, format="FLAC", subtype="PCM_16") as out:
        block = 16000 * 60
        stream = soxr.ResampleStream(16000, FILE_RATE, 1, dtype="float32")
        for start in range(0, mono.shape[0], block):
            part = stream.resample_chunk(mono[start : start + block], last=start + block >= mono.shape[0])
            out.write(np.stack([part, 0.9 * part], axis=1))
    return order


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_engine(model: str | None, path: str, strategy: str) -> dict[str, Any]:
    from parakeet_runtime.engine import Engine, LongFormOptions

    with Engine.load(model, long_form=LongFormOptions(strategy=strategy)) as engine:  # type: ignore[arg-type]
        started = time.perf_counter()
        transcript = engine.transcribe(path)
        wall = time.perf_counter() - started
    starts = [w.start for w in transcript.words]
    return {"wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "strategy": transcript.strategy,
            "duration_s": transcript.duration, "words": len(transcript.words), "text": transcript.text,
            "monotonic": starts == sorted(starts),
            "inside": all(0 <= w.start <= w.end <= transcript.duration for w in transcript.words)}


def child_nemo(nemo: str, path: str, local: bool) -> dict[str, Any]:
    import logging

    import torch

    logging.disable(logging.WARNING)
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(nemo, map_location="cpu")
    model.eval()
    if local:
        model.change_attention_model("rel_pos_local_attn", [128, 128])
        model.change_subsampling_conv_chunking_factor(1)
    started = time.perf_counter()
    with torch.inference_mode():
        (hypothesis,) = model.transcribe([path], batch_size=1, verbose=False)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "strategy": "local-attention" if local else "one_pass",
            "text": hypothesis.text}


def wer(reference: list[str], hypothesis: list[str]) -> float:
    """Word error rate (Levenshtein over words)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1] / max(len(reference), 1)


def _run_child(args: list[str], timeout: float) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write_table(report: dict[str, Any], readme: Path, label: str) -> None:
    lines = [f"Measured {report['date']} on {report['machine']}; model: {report['model']}.", "",
             "| length | system | strategy | wall | RTFx | cost / audio s vs shortest | peak RSS | WER vs pieces |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['length_s']:.0f} s | {row['system']} | – | {row['error'][:60]} | | | | |")
            continue
        wer_cell = f"{100 * row['wer_vs_pieces']:.1f}%" if "wer_vs_pieces" in row else "–"
        lines.append(
            f"| {row['length_s']:.0f} s | {row['system']} | {row['strategy']} | {row['wall_s']:.1f} s | "
            f"{row['rtfx']:.0f} | {row['cost_ratio']:.2f}× | {row['peak_rss_mb']:.0f} MB | {wer_cell} |")
    write_block(readme, f"long-audio-{label}", lines, f"Long recordings: {label}")


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (cost, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for system in sorted({r["system"] for r in report["rows"]}):
        rows = [r for r in report["rows"] if r["system"] == system and "error" not in r]
        if not rows:
            continue
        minutes = [r["length_s"] / 60 for r in rows]
        cost.plot(minutes, [1000 * r["wall_s"] / r["length_s"] for r in rows], marker="o", label=system)
        memory.plot(minutes, [r["peak_rss_mb"] for r in rows], marker="o", label=system)
    cost.set(xlabel="audio (minutes)", ylabel="ms of wall time per audio second", title="cost")
    memory.set(xlabel="audio (minutes)", ylabel="peak RSS (MB)", title="memory")
    for axes in (cost, memory):
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(f"{report['model']} on {report['machine']}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--pieces", nargs="+", type=Path, help="speech clips to build recordings from "
                        "(default: the bundled sample clip)")
    parser.add_argument("--lengths", nargs="+", type=float, default=[60, 300, 1800, 3600])
    parser.add_argument("--nemo", help="the .nemo of the same model, to run NeMo side by side")
    parser.add_argument("--nemo-full-max", type=float, default=600.0,
                        help="longest length asked (--lengths) that NeMo runs with full attention (beyond: local "
                        "attention)")
    parser.add_argument("--nemo-max", type=float, default=3600.0,
                        help="longest length asked (--lengths) that NeMo runs at all")
    parser.add_argument("--chunked", action="store_true", help="also run the engine with chunks forced")
    parser.add_argument("--label", default="demo")
    parser.add_argument("--readme", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "engine":
            model, path, strategy = rest
            result = child_engine(None if model == "-" else model, path, strategy)
        else:
            nemo, path, local = rest
            result = child_nemo(nemo, path, local == "1")
        print(json.dumps(result))
        return 0

    from parakeet_runtime.engine import Engine, sample_audio_path

    piece_paths = args.pieces or [sample_audio_path()]
    pieces = _pieces(piece_paths)
    with Engine.load(args.model) as engine:
        piece_texts = [engine.transcribe(p).text.split() for p in pieces]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for length in args.lengths:
            path = Path(folder) / f"{length:.0f}s.flac"
            order = make_recording(pieces, length, path)
            seconds = soundfile.info(str(path)).duration
            reference = [word for index in order for word in piece_texts[index]]
            systems: list[tuple[str, list[str]]] = [("engine", ["engine", args.model or "-", str(path), "auto"])]
            if args.chunked:
                systems.append(("engine-chunked", ["engine", args.model or "-", str(path), "chunked"]))
            # The limits compare with the length asked: a recording comes out a few seconds longer (whole pieces).
            if args.nemo and length <= args.nemo_max:
                local = "1" if length > args.nemo_full_max else "0"
                systems.append(("nemo", ["nemo", args.nemo, str(path.with_suffix(".16k.wav")), local]))
            for system, child in systems:
                result = _run_child(child, args.timeout)
                row: dict[str, Any] = {"length_s": seconds, "system": system, **result}
                if "error" not in result:
                    row["rtfx"] = seconds / result["wall_s"]
                    row["wer_vs_pieces"] = wer(reference, result.pop("text").split())
                print(json.dumps({k: v for k, v in row.items() if k != "text"}), flush=True)
                rows.append(row)
    for row in rows:
        first = next((r for r in rows if r["system"] == row["system"] and "error" not in r), None)
        if first is not None and "error" not in row:
            row["cost_ratio"] = (row["wall_s"] / row["length_s"]) / (first["wall_s"] / first["length_s"])
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "model": args.model or "bundled demo model",
              "pieces": [str(p) for p in piece_paths], "rows": rows}
    out = HERE / "results" / f"long-audio-{args.label}.json"
    write_json(out, report)
    if plot(report, out.with_suffix(".png")):
        print(f"plot: {out.with_suffix('.png')}")
    if args.readme:
        write_table(report, HERE / "README.md", args.label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
