"""Step 2 of ``gpu_check.sh``: parity with NeMo on a device.

    python benchmarks/gpu_parity.py --models models.json --device cuda --out results/gpu-parity.json
    python benchmarks/gpu_parity.py --models models.json --device cpu ...        # dry run on a CPU

NeMo (on CUDA, or on the CPU for ``--device cpu``) transcribes speech-like clips one at a time; each
engine configuration transcribes them as one batch: ``fp32`` and ``portable`` on ``--device`` (fp32: the
tokens must be NeMo's), ``fp16`` (the fp16 encoder) and, on a GPU, ``portable`` with TensorRT fp16 (the
agreement is measured and reported, not required). Writes one JSON report; exit code 1 when an fp32
configuration's tokens differ from NeMo's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_rtfx import gpu_name, speech_clips  # noqa: E402
from readme_block import write_json  # noqa: E402


def nemo_tokens(nemo: str, clips: list[Path], device: str) -> list[list[int]]:
    import torch
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(nemo, map_location="cuda" if device != "cpu" else "cpu")
    model.eval()
    with torch.inference_mode():
        hyps = model.transcribe([str(c) for c in clips], batch_size=1, return_hypotheses=True, verbose=False)
    return [[int(t) for t in hyp.y_sequence] for hyp in hyps]


def engine_tokens(model_dir: str, clips: list[Path], device: str) -> list[list[int]]:
    from parakeet_runtime.engine import AudioInput, BatchingOptions, Engine

    with Engine.load(model_dir, device=device, batching=BatchingOptions(max_batch_size=len(clips))) as engine:
        return [[t.id for t in result.tokens] for result in engine.transcribe(list[AudioInput](clips))]


def agreement(ours: list[list[int]], reference: list[list[int]]) -> dict[str, Any]:
    """Clips with identical tokens, and the share of reference tokens matched position by position."""
    same = sum(a == b for a, b in zip(ours, reference, strict=True))
    matched = sum(sum(x == y for x, y in zip(a, b, strict=False)) for a, b in zip(ours, reference, strict=True))
    total = sum(max(len(a), len(b)) for a, b in zip(ours, reference, strict=True))
    return {"identical_clips": same, "clips": len(reference), "token_agreement": matched / total if total else 1.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="gpu_models.py's JSON output")
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    models = json.loads(args.models.read_text())
    clips = speech_clips(args.out.parent / "gpu-clips", [4.0 + 3 * i for i in range(args.clips)])
    started = time.perf_counter()
    reference = nemo_tokens(models["nemo"], clips, args.device)
    runs = [("fp32", models["fp32"], args.device, True), ("portable", models["portable"], args.device, True),
            ("fp16", models["fp16"], args.device, False)]
    if args.device == "cuda":
        runs.append(("tensorrt-fp16", models["portable"], "tensorrt", False))
    results: dict[str, Any] = {}
    failed = False
    for name, directory, device, exact in runs:
        try:
            found = agreement(engine_tokens(directory, clips, device), reference)
        except Exception as exc:  # one configuration failing (fp16 on a CPU, TensorRT) is reported, not fatal
            results[name] = {"device": device, "error": f"{type(exc).__name__}: {exc}"[:500]}
            failed |= exact
            continue
        found.update(device=device, must_be_identical=exact)
        results[name] = found
        failed |= exact and found["identical_clips"] != found["clips"]
        print(f"{name} on {device}: {found['identical_clips']}/{found['clips']} clips identical to NeMo, "
              f"token agreement {found['token_agreement']:.4f}")
    report = {"device": args.device, "gpu": gpu_name(), "nemo": models["nemo"], "clips": [str(c) for c in clips],
              "results": results, "seconds": time.perf_counter() - started, "passed": not failed}
    write_json(args.out, report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
