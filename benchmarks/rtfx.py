"""Speed at one model size: NeMo ``transcribe`` against this engine (fp32 and int8), same model, same audio.

Cases: single clips of 5 s, 60 s and 300 s, and a batch of 10 clips (5–14 s). Each system runs in its own
process (its peak RSS is its own, and on Linux each case's peak is measured separately by resetting the
high-water mark before it); the model load is timed; a warm-up run and one untimed run of each case are
excluded; each case is the median of ``--runs`` runs. With ``--rounds N`` the systems take turns N times
(NeMo, fp32, int8, NeMo, ...), each turn a fresh process, so that a machine whose speed drifts slows every
system alike; the table gives the speed-up over NeMo from the pooled medians and for each round. For the
engine the time is broken down into features (audio decoding and the numpy filterbank), encoder (ONNX Runtime)
and decoding (TDT search and timestamps).

    python benchmarks/rtfx.py --nemo ~/.cache/parakeet-bench/v2/model.nemo \\
        --fp32 ~/.cache/parakeet-bench/v2/fp32 --int8 ~/.cache/parakeet-bench/v2/int8

When the int8 directory holds both weight graphs (``--int8-weights auto``), ``int8`` is the one the engine picks on this
CPU and ``int8-uint8`` / ``int8-int8`` force each. The int8 systems, ``openvino-int8`` and ``openvino-bf16`` decode with
int8 decoding weights (``SessionOptions.decoder_weights="auto"``); ``--fp32-decoding`` adds ``int8-fp32-decoding``, the
int8 encoder with fp32 decoding weights, to show what the decoding weights change; ``--logits`` adds ``fp32-logits`` and
``int8-logits``, decoding graphs that end in the joint's logits rather than its choices (``argmax_step=False``: for fp32
the joint's full fp32 logits, where the default for joints as large as Parakeet v3's ranks its labels in int8 and proves
the choices); ``--spinning`` adds ``int8-spin``, the int8 directory with ``SessionOptions(spinning=True)``, the setting
the engine documents for a single stream on dedicated cores (its default is a server's: nothing spins between runs, so
that the request threads keep the cores); ``--compare-int8 DIR`` adds ``int8-compare``, the engine on a second int8
directory (one converted before a change to the quantiser, say). With ``--openvino`` it also runs the fp32 directory's
encoder on OpenVINO: ``openvino-fp32``, ``openvino-int8`` (int8 weights made at load, activations quantised at run
time; where the CPU has VNNI or AMX) and ``openvino-bf16`` where the CPU has AVX-512 BF16 or AMX (decoding stays on
ONNX Runtime). ``--only`` keeps a subset of those systems.
The CPU's name and ISA extensions are in the results.

With ``--onnx-asr DIR`` it also runs onnx-asr (``recognize`` on the same paths) on the fp32 directory's
own graphs, rearranged into onnx-asr's layout by ``benchmarks/onnx_asr_layout.py`` (built on the fly when
DIR does not exist yet).

Writes ``benchmarks/results/rtfx-<name>.json`` and a table in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from concurrency import load_nemo, machine  # noqa: E402
from readme_block import write_block, write_json  # noqa: E402

from parakeet_runtime.engine import PreparedAudio  # noqa: E402
from parakeet_runtime.engine.requests.prepare import Prepared  # noqa: E402


def one_pass(prepared: Prepared) -> PreparedAudio:
    """The benchmark times one-pass inputs only (its clips are far below the long-form threshold)."""
    if not isinstance(prepared, PreparedAudio):
        raise SystemExit("a benchmark clip was planned as a long (chunked) input; use shorter clips")
    return prepared

RATE = 16000


def make_clips(folder: Path) -> dict[str, list[Path]]:
    """Speech-like clips of the benchmark lengths, tiled from the bundled sample with pauses."""
    samples, rate = soundfile.read(REPO / "engine" / "data" / "sample.wav", dtype="float32")
    assert rate == RATE
    rng = np.random.default_rng(0)

    def clip(seconds: float, name: str) -> Path:
        parts: list[np.ndarray] = []
        total = 0
        while total < seconds * RATE:
            gain = float(rng.uniform(0.6, 1.0))
            parts += [samples * gain, np.zeros(int(rng.uniform(0.1, 0.6) * RATE), dtype=np.float32)]
            total += len(samples) + len(parts[-1])
        audio = np.concatenate(parts)[: int(seconds * RATE)]
        path = folder / f"{name}.wav"
        soundfile.write(path, audio, RATE, subtype="PCM_16")
        return path

    folder.mkdir(parents=True, exist_ok=True)
    return {
        "5s": [clip(5, "5s")],
        "60s": [clip(60, "60s")],
        "300s": [clip(300, "300s")],
        "batch10": [clip(5 + i, f"b{i}") for i in range(10)],
    }


def _seconds(paths: list[Path]) -> float:
    return float(sum(soundfile.info(str(p)).frames for p in paths)) / RATE


def _nemo_runner(nemo: str, threads: int | None) -> Any:
    import torch

    model = load_nemo(nemo, threads)

    def run(paths: list[Path]) -> dict[str, float]:
        with torch.inference_mode():
            model.transcribe([str(p) for p in paths], batch_size=len(paths), timestamps=True, verbose=False)
        model.eval()
        return {}

    return run


def _engine_runner(model_dir: str, threads: int | None, argmax_step: bool | None = None, **session: Any) -> Any:
    """The engine on ``model_dir``; ``session``: more ``SessionOptions`` fields (backend, precision, int8_weights)."""
    from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions

    engine = Engine.load(model_dir, session=SessionOptions(threads=threads, **session),
                         batching=BatchingOptions(enabled=False), argmax_step=argmax_step)

    def run(paths: list[Path]) -> dict[str, float]:
        """``engine.transcribe(paths)``, step by step, with timers (the steps of ``Inference.run``)."""
        t0 = time.perf_counter()
        prepared = [one_pass(engine.prepare(p)) for p in paths]
        t1 = time.perf_counter()
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].valid_frames)
        encoder = decoding = 0.0
        for bucket in engine.inference.buckets(order, prepared):
            items = [prepared[i] for i in bucket]
            e0 = time.perf_counter()
            frames, lengths = engine.inference.encode_batch(items)
            e1 = time.perf_counter()
            engine.inference.decode_batch(frames, lengths, items)
            e2 = time.perf_counter()
            encoder += e1 - e0
            decoding += e2 - e1
        return {"features_s": t1 - t0, "encoder_s": encoder, "decoding_s": decoding}

    return run


def _onnx_asr_runner(layout_dir: str, threads: int | None) -> Any:
    import onnx_asr
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    model = onnx_asr.load_model("nemo-conformer-tdt", layout_dir, sess_options=options)

    def run(paths: list[Path]) -> dict[str, float]:
        model.recognize([str(p) for p in paths])
        return {}

    return run


RUNNERS: dict[str, Any] = {
    "nemo": _nemo_runner,
    "fp32": _engine_runner,
    "fp32-logits": functools.partial(_engine_runner, argmax_step=False),
    "int8": _engine_runner,
    "int8-uint8": functools.partial(_engine_runner, int8_weights="uint8"),
    "int8-int8": functools.partial(_engine_runner, int8_weights="int8"),
    "int8-fp32-decoding": functools.partial(_engine_runner, decoder_weights="fp32"),
    "int8-logits": functools.partial(_engine_runner, argmax_step=False),
    "int8-spin": functools.partial(_engine_runner, spinning=True),
    "int8-compare": _engine_runner,
    "openvino-fp32": functools.partial(_engine_runner, backend="openvino"),
    "openvino-bf16": functools.partial(_engine_runner, backend="openvino", precision="bf16"),
    "openvino-int8": functools.partial(_engine_runner, backend="openvino", precision="int8"),
    "onnx-asr": _onnx_asr_runner,
}


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), or of the whole process where that is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_system(
    system: str, source: str, clips: dict[str, list[Path]], runs: int, threads: int | None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    runner = RUNNERS[system](source, threads)
    load_s = time.perf_counter() - started
    rss_after_load = process_peak = peak_rss_mb()
    runner(clips["5s"])  # warm-up
    cases = {}
    for case, paths in clips.items():
        if only and case not in only:
            continue
        walls, parts = [], []
        # Each case's shapes once untimed: OpenVINO compiles kernels for a new input shape on its first run
        # (a 60 s clip: 24 s, then 3.8 s), ONNX Runtime grows its arena.
        runner(paths)
        process_peak = max(process_peak, peak_rss_mb())  # the window so far, before it is reset
        per_case = reset_peak_rss()
        for _ in range(runs):
            t0 = time.perf_counter()
            breakdown = runner(paths)
            walls.append(time.perf_counter() - t0)
            parts.append(breakdown)
        wall = statistics.median(walls)
        audio = _seconds(paths)
        entry: dict[str, Any] = {"audio_s": audio, "wall_s": wall, "walls_s": walls, "rtfx": audio / wall}
        for key in parts[0]:
            entry[key] = statistics.median(p[key] for p in parts)
        if per_case:
            entry["peak_rss_mb"] = peak_rss_mb()
        cases[case] = entry
        logging.getLogger("rtfx").warning("%-5s %-8s %7.2f s  RTFx %6.1f", system, case, wall, audio / wall)
    # Resetting the high-water mark resets ru_maxrss too: the process peak is the largest of the windows.
    process_peak = max([process_peak, peak_rss_mb(), *(c.get("peak_rss_mb", 0.0) for c in cases.values())])
    return {"system": system, "load_s": load_s, "cases": cases, "rss_after_load_mb": rss_after_load,
            "peak_rss_mb": process_peak}


def _runs(meta: dict[str, Any]) -> str:
    rounds = int(meta.get("rounds", 1))
    if rounds == 1:
        return f"{meta['runs']} runs"
    return f"{meta['runs'] * rounds} runs ({meta['runs']} in each of {rounds} rounds, the systems taking turns)"


def speedup(case: dict[str, Any]) -> str:
    """NeMo's wall time over this system's (pooled medians), with each round's own ratio."""
    if "speedup_vs_nemo" not in case:
        return "–"
    rounds = ", ".join(f"{r:.2f}" for r in case["speedup_vs_nemo_per_round"])
    return f"{case['speedup_vs_nemo']:.2f}× ({rounds})"


def cell_mb(case: dict[str, Any]) -> str:
    return f"{case['peak_rss_mb']:.0f}" if "peak_rss_mb" in case else "–"


def write_table(report: dict[str, Any], readme: Path) -> None:
    name = report["meta"]["name"]
    meta = report["meta"]
    hardware = meta["machine"]
    lines = [f"Model `{name}` ({meta['model']}), {hardware['cores']} cores ({hardware['cpu']}), "
             f"{hardware.get('isa') or hardware.get('simd', '')}, threads {meta['threads'] or 'default'}, "
             f"median of {_runs(meta)}, {meta['date']}.", "",
             "| system | case | audio (s) | wall (s) | RTFx | × NeMo (per round) | features (s) | encoder (s) | "
             "decoding (s) | decoding share | load (s) | case peak RSS (MB) | process peak RSS (MB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in report["results"]:
        for case, c in result["cases"].items():
            dec = c.get("decoding_s")
            total = sum(c.get(k, 0.0) for k in ("features_s", "encoder_s", "decoding_s"))
            share = f"{100 * dec / total:.1f}%" if dec is not None and total else "–"

            def cell(key: str, c: dict[str, Any] = c) -> str:
                return f"{c[key]:.2f}" if key in c else "–"

            lines.append(f"| {result['system']} | {case} | {c['audio_s']:.0f} | {c['wall_s']:.2f} | {c['rtfx']:.1f} | "
                         f"{speedup(c)} | {cell('features_s')} | {cell('encoder_s')} | {cell('decoding_s')} | "
                         f"{share} | "
                         f"{result['load_s']:.1f} | {cell_mb(c)} | {result['peak_rss_mb']:.0f} |")
    directories = meta.get("int8_directories") or {}
    if directories:
        lines += ["", "; ".join(f"`{system}`: directory `{d['directory']}` (int8 activations {d['activations']})"
                                for system, d in directories.items()) + "."]
    write_block(readme, f"rtfx-{name}", lines, f"Speed: {name}")


def int8_directories(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The int8 directories the run compares, each with its activation scaling as its manifest records it (a
    directory converted before per-row scales records none: per tensor; one this project did not quantise records
    no quantisation at all)."""
    from parakeet_runtime.engine import load_manifest

    described: dict[str, dict[str, str]] = {}
    for system, directory in (("int8", args.int8), ("int8-compare", args.compare_int8)):
        if directory:
            quantization = load_manifest(Path(directory)).provenance.quantization
            activations = "not recorded" if quantization is None else quantization.scaling
            described[system] = {"directory": Path(directory).name, "activations": activations}
    return described


def _systems(args: argparse.Namespace) -> list[str]:
    from parakeet_runtime.engine import load_manifest
    from parakeet_runtime.engine.model.cpu import this_cpu_has_bf16, x86_without_int8_dot_products

    both_schemes = bool(args.int8) and load_manifest(Path(args.int8)).encoder.signed_int8_file is not None
    wanted = {"nemo": True, "fp32": True, "fp32-logits": args.logits, "int8": bool(args.int8),
              "int8-uint8": both_schemes, "int8-int8": both_schemes, "openvino-fp32": args.openvino,
              "openvino-bf16": args.openvino and this_cpu_has_bf16(),
              "openvino-int8": args.openvino and not x86_without_int8_dot_products(), "onnx-asr": bool(args.onnx_asr),
              "int8-fp32-decoding": bool(args.int8) and args.fp32_decoding,
              "int8-logits": bool(args.int8) and args.logits, "int8-spin": bool(args.int8) and args.spinning,
              "int8-compare": bool(args.compare_int8)}
    return [system for system, on in wanted.items() if on and (not args.only or system in args.only)]


def _source(system: str, args: argparse.Namespace) -> str:
    if system == "nemo":
        return str(args.nemo)
    if system == "int8-compare":
        return str(args.compare_int8)
    if system.startswith("int8"):
        return str(args.int8)
    if system == "onnx-asr":
        return str(args.onnx_asr)
    return str(args.fp32)  # fp32, openvino-*


def _run_subprocess(system: str, args: argparse.Namespace, folder: str) -> dict[str, Any]:
    """One system, all cases, in a fresh process (its memory is its own)."""
    command = [sys.executable, __file__, "--nemo", args.nemo, "--fp32", args.fp32, "--system", system,
               "--clips-dir", folder, "--runs", str(args.runs)]
    if args.int8:
        command += ["--int8", args.int8]
    if args.compare_int8:
        command += ["--compare-int8", args.compare_int8]
    if args.onnx_asr:
        command += ["--onnx-asr", str(args.onnx_asr)]
    if args.openvino:
        command += ["--openvino"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.cases:
        command += ["--cases", *args.cases]
    proc = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{system} failed")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def merge_rounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One result per system: wall times pooled over all rounds (median of every run), breakdowns the median
    of the rounds' medians, memory the largest of any round; plus each round's speed-up over NeMo."""
    merged = []
    for index, first in enumerate(rounds[0]):
        per_round = [r[index] for r in rounds]
        cases: dict[str, Any] = {}
        for case, entry in first["cases"].items():
            entries = [r["cases"][case] for r in per_round]
            walls = [w for e in entries for w in e["walls_s"]]
            combined = {**entry, "walls_s": walls, "wall_s": statistics.median(walls)}
            combined["rtfx"] = entry["audio_s"] / combined["wall_s"]
            for key in ("features_s", "encoder_s", "decoding_s"):
                if key in entry:
                    combined[key] = statistics.median(e[key] for e in entries)
            if all("peak_rss_mb" in e for e in entries):
                combined["peak_rss_mb"] = max(e["peak_rss_mb"] for e in entries)
            if rounds[0][0]["system"] == "nemo" and first["system"] != "nemo":
                nemo = [r[0]["cases"][case] for r in rounds]
                pooled = statistics.median(w for n in nemo for w in n["walls_s"])
                combined["speedup_vs_nemo"] = pooled / combined["wall_s"]
                combined["speedup_vs_nemo_per_round"] = [
                    n["wall_s"] / e["wall_s"] for n, e in zip(nemo, entries, strict=True)
                ]
            cases[case] = combined
        merged.append({
            "system": first["system"],
            "load_s": statistics.median(r["load_s"] for r in per_round),
            "cases": cases,
            "rss_after_load_mb": max(r["rss_after_load_mb"] for r in per_round),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in per_round),
        })
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nemo", required=True)
    parser.add_argument("--fp32", required=True, help="convert-model directory (fp32)")
    parser.add_argument("--int8", help="convert-model --quantize int8 directory")
    parser.add_argument("--compare-int8", metavar="DIR",
                        help="a second int8 directory run beside --int8 (int8-compare: e.g. one converted before "
                        "a change to the quantiser)")
    parser.add_argument("--onnx-asr", type=Path, help="onnx-asr layout of the fp32 directory (made when missing)")
    parser.add_argument("--openvino", action="store_true",
                        help="also run the fp32 directory's encoder on OpenVINO (fp32, and bf16 where the CPU has it)")
    parser.add_argument("--fp32-decoding", action="store_true",
                        help="also run the int8 directory with fp32 decoding weights (int8-fp32-decoding), beside its "
                             "default int8 decoding weights")
    parser.add_argument("--logits", action="store_true",
                        help="also run the directories with decoding graphs that end in the joint's logits "
                             "(argmax_step=False): fp32-logits (the fp32 joint's full logits, not its labels ranked "
                             "in int8 with a proof) and int8-logits, beside the defaults that end in its choices")
    parser.add_argument("--spinning", action="store_true",
                        help="also run the int8 directory with spinning thread pools (int8-spin, "
                             "SessionOptions(spinning=True): a single stream on dedicated cores)")
    parser.add_argument("--name", default=None, help="label for the results (default: the .nemo file's folder)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every system this many times in turn (NeMo, fp32, int8, NeMo, ...) so that a "
                             "drifting machine slows all of them alike; cases report the median over all runs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--cases", nargs="+", choices=("5s", "60s", "300s", "batch10"),
                        help="run only these cases (default: all)")
    parser.add_argument("--only", nargs="+", metavar="SYSTEM",
                        help="run only these systems of the ones the other options select (e.g. nemo int8 "
                             "openvino-int8)")
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--clips-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    if args.system:
        clips = make_clips(args.clips_dir)
        result = run_system(args.system, _source(args.system, args), clips, args.runs, args.threads, args.cases)
        sys.stdout.write("RESULT " + json.dumps(result) + "\n")
        return 0

    name = args.name or Path(args.nemo).resolve().parent.name
    if args.onnx_asr and not (args.onnx_asr / "config.json").is_file():
        from onnx_asr_layout import write_layout

        write_layout(Path(args.fp32), args.onnx_asr)
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            logging.getLogger("rtfx").warning("round %d of %d", number + 1, args.rounds)
            rounds.append([_run_subprocess(system, args, folder) for system in _systems(args)])
    results = merge_rounds(rounds)
    from parakeet_runtime.engine.model.cpu import int8_weights_for_this_cpu, isa_summary

    hardware = {**machine(), "isa": isa_summary(), "int8_weights_auto": int8_weights_for_this_cpu()}
    report = {"meta": {"name": name, "model": Path(args.nemo).name, "machine": hardware, "runs": args.runs,
                       "rounds": args.rounds, "threads": args.threads, "cases": args.cases or "all",
                       "date": time.strftime("%Y-%m-%d"), "int8_directories": int8_directories(args)},
              "results": results}
    write_json(args.out_dir / f"rtfx-{name}.json", report)
    write_table(report, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
