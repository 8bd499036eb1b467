"""Step 3 of ``gpu_check.sh``: RTFx (audio seconds per wall-clock second) at batch 1, 32 and 128.

    python benchmarks/gpu_rtfx.py --models models.json --device cuda --out results/gpu-rtfx-v2.json
    python benchmarks/gpu_rtfx.py --models models.json --device cpu --batches 1 4 --clip-s 4 ...   # dry run

Contenders, in one process on the same clips: NeMo ``transcribe`` (torch on CUDA, ``timestamps=True`` as the
engine always gives them), the engine on ONNX Runtime's CUDA provider with the fp32 and the fp16 encoder, and
on its TensorRT provider (fp16) with the portable graph. With ``--device cpu`` (a dry run of the script): NeMo
and the engine on the CPU, no TensorRT. Each case: a warm-up run (TensorRT builds its engines then), then
``--runs`` timed runs of the whole batch from audio files to transcripts; the median is reported. A
contender that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from readme_block import write_json  # noqa: E402

RATE = 16000


def speech_clips(folder: Path, seconds: list[float]) -> list[Path]:
    """Speech-like clips of the given lengths, tiled from the bundled sample with pauses (made once)."""
    samples, rate = soundfile.read(REPO / "engine" / "data" / "sample.wav", dtype="float32")
    assert rate == RATE
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, length in enumerate(seconds):
        path = folder / f"clip{index}-{length:g}s.wav"
        if not path.is_file():
            rng = np.random.default_rng(index)
            parts: list[np.ndarray] = []
            total = 0
            while total < length * RATE:
                pause = np.zeros(int(rng.uniform(0.1, 0.6) * RATE), dtype=np.float32)
                parts += [samples * float(rng.uniform(0.6, 1.0)), pause]
                total += len(samples) + len(pause)
            soundfile.write(path, np.concatenate(parts)[: int(length * RATE)], RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def gpu_name() -> str | None:
    """The first CUDA GPU's name, or ``None`` (no torch, or no GPU)."""
    try:
        import torch
    except ImportError:
        return None
    return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None


def _nemo(nemo: str, device: str) -> Callable[[list[Path]], None]:
    import torch
    from nemo.collections.asr.models import ASRModel

    for name in ("nemo_logger", "nemo", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    model = ASRModel.restore_from(nemo, map_location="cuda" if device != "cpu" else "cpu")
    model.eval()

    def run(paths: list[Path]) -> None:
        with torch.inference_mode():
            model.transcribe([str(p) for p in paths], batch_size=len(paths), timestamps=True, verbose=False)
        model.eval()
        if device != "cpu":
            torch.cuda.synchronize()

    return run


def _engine(model_dir: str, device: str, batch: int, clip_s: float) -> Callable[[list[Path]], None]:
    from parakeet_runtime.engine import AudioInput, BatchingOptions, Engine

    batching = BatchingOptions(max_batch_size=batch, max_batch_seconds=batch * clip_s + 1.0)
    engine = Engine.load(model_dir, device=device, batching=batching)

    def run(paths: list[Path]) -> None:
        engine.transcribe(list[AudioInput](paths))

    return run


def contenders(models: dict[str, str], device: str) -> list[tuple[str, Callable[[int, float], Any]]]:
    """``(name, make(batch, clip_s) -> run(paths))`` of each contender on ``device``."""
    ort_device = "cuda" if device == "cuda" else "cpu"
    found: list[tuple[str, Callable[[int, float], Any]]] = [
        (f"nemo-{device}", lambda b, s: _nemo(models["nemo"], device)),
        (f"ort-{ort_device}-fp32", lambda b, s: _engine(models["fp32"], ort_device, b, s)),
        (f"ort-{ort_device}-fp16", lambda b, s: _engine(models["fp16"], ort_device, b, s)),
    ]
    if device == "cuda":
        found.append(("tensorrt-fp16", lambda b, s: _engine(models["portable"], "tensorrt", b, s)))
    return found


def measure(run: Callable[[list[Path]], None], paths: list[Path], runs: int) -> dict[str, Any]:
    run(paths)  # warm-up: allocations, cuDNN/TensorRT tactics and engines
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run(paths)
        times.append(time.perf_counter() - started)
    audio = float(sum(soundfile.info(str(p)).frames for p in paths)) / RATE
    median = statistics.median(times)
    return {"audio_s": audio, "seconds": times, "median_s": median, "rtfx": audio / median}


def _release() -> None:
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="gpu_models.py's JSON output")
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--clip-s", type=float, default=10.0, help="length of every clip (default: 10 s)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    models = json.loads(args.models.read_text())
    largest = max(args.batches)
    clips = speech_clips(args.out.parent / "gpu-clips", [args.clip_s] * largest)
    results: list[dict[str, Any]] = []
    report = {
        "device": args.device, "gpu": gpu_name(), "models": models, "clip_s": args.clip_s, "runs": args.runs,
        "machine": {"cpu_cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, make in contenders(models, args.device):
        try:
            run = make(largest, args.clip_s)  # one model per contender; every batch fits one engine batch
        except Exception as exc:  # reported; the other contenders still run
            results.append({"system": name, "error": f"load: {type(exc).__name__}: {exc}"[:500]})
            print(f"{name}: cannot load ({results[-1]['error'][:200]})", flush=True)
            continue
        # Largest first: TensorRT's provider rebuilds an engine when a shape leaves the range it has seen.
        for batch in sorted(args.batches, reverse=True):
            case: dict[str, Any] = {"system": name, "batch": batch}
            try:
                case.update(measure(run, clips[:batch], args.runs))
                print(f"{name} batch {batch}: RTFx {case['rtfx']:.1f}", flush=True)
            except Exception as exc:  # reported; the other contenders still run
                case["error"] = f"{type(exc).__name__}: {exc}"[:500]
                print(f"{name} batch {batch}: failed ({case['error'][:200]})", flush=True)
            results.append(case)
            write_json(args.out, report)  # kept if a time limit stops the run
        del run
        _release()
    write_json(args.out, report)
    return 0 if all("rtfx" in case for case in results if case["system"].startswith(("nemo", "ort-"))) else 1


if __name__ == "__main__":
    sys.exit(main())
