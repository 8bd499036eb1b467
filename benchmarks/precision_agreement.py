"""Token agreement with the fp32 engine, per precision configuration, on one model and a set of inputs.

    python benchmarks/precision_agreement.py --model engine/default_model \\
        --clips /work/demo-build/eval/*_voices_*.wav --join 60 --name demo

Each configuration is an encoder (fp32 ONNX Runtime, the int8 directory's ``uint8`` or signed ``int8`` graph,
OpenVINO fp32 or bf16) with the decoding step's weights in fp32 or int8 (``SessionOptions.decoder_weights``).
The int8 directory is quantised from ``--model`` the way ``convert-model --quantize int8`` does. Every
configuration decodes the same inputs (the clips one by one, and with ``--join S`` also the clips joined
into recordings of about S seconds), and its tokens are compared with the fp32 engine's: agreement = 1 −
token edit distance / fp32 tokens. Configurations the CPU or the install cannot run (OpenVINO without the
extra, bf16 without AVX-512 BF16/AMX) are reported as not run. Writes JSON and a table in
``benchmarks/README.md`` (block ``agreement-NAME``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from readme_block import write_block, write_json  # noqa: E402

logger = logging.getLogger("precision_agreement")
PAUSE_SECONDS = 0.8
"""Digital silence between clips joined into a recording."""


@dataclass(frozen=True)
class Config:
    name: str
    int8_directory: bool
    session: dict[str, str]


CONFIGS = (
    Config("fp32, int8 decoding", False, {"decoder_weights": "int8"}),
    Config("ORT int8 uint8, fp32 decoding", True, {"int8_weights": "uint8", "decoder_weights": "fp32"}),
    Config("ORT int8 uint8, int8 decoding", True, {"int8_weights": "uint8", "decoder_weights": "int8"}),
    Config("ORT int8 signed, fp32 decoding", True, {"int8_weights": "int8", "decoder_weights": "fp32"}),
    Config("ORT int8 signed, int8 decoding", True, {"int8_weights": "int8", "decoder_weights": "int8"}),
    Config("OpenVINO fp32", False, {"backend": "openvino", "precision": "fp32"}),
    Config("OpenVINO bf16, fp32 decoding", False,
           {"backend": "openvino", "precision": "bf16", "decoder_weights": "fp32"}),
    Config("OpenVINO bf16, int8 decoding", False,
           {"backend": "openvino", "precision": "bf16", "decoder_weights": "int8"}),
    Config("OpenVINO int8, fp32 decoding", False,
           {"backend": "openvino", "precision": "int8", "decoder_weights": "fp32"}),
    Config("OpenVINO int8, int8 decoding", False,
           {"backend": "openvino", "precision": "int8", "decoder_weights": "int8"}),
)


def join_groups(seconds: list[float], join_seconds: float) -> list[list[int]]:
    """Indices of consecutive clips (``seconds`` long) joined with pauses into recordings of at least
    ``join_seconds``; a short remainder joins the last one."""
    groups: list[list[int]] = [[]]
    total = 0.0
    for index, length in enumerate(seconds):
        groups[-1].append(index)
        total += length + PAUSE_SECONDS
        if total >= join_seconds:
            groups.append([])
            total = 0.0
    remainder = groups.pop()
    if not groups:
        return [remainder] if remainder else []
    groups[-1] += remainder
    return groups


def read_inputs(clips: list[Path], sample_rate: int, join_seconds: float | None) -> list[np.ndarray]:
    """The clips at ``sample_rate`` (mono), then (``join_seconds``) consecutive clips joined with pauses into
    recordings of at least that long (a short remainder joins the last one)."""
    from parakeet_runtime.engine.requests.audio import load_audio

    arrays = [load_audio(str(c), sample_rate).samples for c in clips]
    inputs = list(arrays)
    if join_seconds is None:
        return inputs
    pause = np.zeros(int(PAUSE_SECONDS * sample_rate), np.float32)
    groups = [[arrays[i] for i in group]
              for group in join_groups([len(a) / sample_rate for a in arrays], join_seconds)]
    for group in groups:
        parts: list[np.ndarray] = []
        for array in group:
            parts += [pause, array] if parts else [array]
        inputs.append(np.concatenate(parts))
    return inputs


def main(argv: list[str] | None = None) -> int:
    from parakeet_runtime.engine import Engine, SessionOptions, load_manifest
    from parakeet_runtime.engine.errors import ParakeetRuntimeError
    from parakeet_runtime.engine.model.cpu import cpu_name, isa_summary
    from parakeet_runtime.engine.requests.audio import AudioInput
    from parakeet_runtime.export.quantize import _edit_distance, quantize_directory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an fp32 model directory")
    parser.add_argument("--clips", nargs="+", type=Path, required=True)
    parser.add_argument("--join", type=float, default=None, metavar="S",
                        help="also decode the clips joined into recordings of about S seconds")
    parser.add_argument("--name", required=True, help="the README block and results file name")
    parser.add_argument("--description", default="", help="what the model is, for the table's heading")
    parser.add_argument("--configs", nargs="+", default=[c.name for c in CONFIGS], choices=[c.name for c in CONFIGS],
                        metavar="CONFIG")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    manifest = load_manifest(args.model)
    inputs = read_inputs(sorted(args.clips), manifest.features.sample_rate, args.join)
    seconds = sum(len(a) for a in inputs) / manifest.features.sample_rate
    logger.info("%d inputs, %.1f min", len(inputs), seconds / 60)

    def tokens(directory: Path, session: dict[str, Any]) -> list[list[int]]:
        with Engine.load(directory, session=SessionOptions(threads=args.threads, **session)) as engine:
            batch: list[AudioInput] = [*inputs]
            transcripts = engine.transcribe(batch, sample_rate=manifest.features.sample_rate)
            return [[t.id for t in tr.tokens] for tr in transcripts]

    reference = tokens(args.model, {"decoder_weights": "fp32"})
    total = sum(len(r) for r in reference)
    rows: list[dict[str, Any]] = []  # one per configuration
    with tempfile.TemporaryDirectory() as folder:
        int8_dir = Path(folder) / "int8"
        for config in (c for c in CONFIGS if c.name in args.configs):
            if config.int8_directory and not int8_dir.exists():
                quantize_directory(args.model, int8_dir, manifest, "auto")
            started = time.perf_counter()
            try:
                hypothesis = tokens(int8_dir if config.int8_directory else args.model, config.session)
            except (ParakeetRuntimeError, ImportError) as exc:
                logger.info("%s: not run (%s)", config.name, exc)
                rows.append({"config": config.name, "session": config.session, "not_run": str(exc)})
                continue
            edits = sum(_edit_distance(a, b) for a, b in zip(reference, hypothesis, strict=True))
            row = {"config": config.name, "session": config.session, "tokens": total,
                   "token_agreement": max(0.0, 1 - edits / total) if total else 1.0, "token_edits": edits,
                   "identical_inputs": sum(a == b for a, b in zip(reference, hypothesis, strict=True)),
                   "inputs": len(inputs), "seconds": time.perf_counter() - started}
            logger.info("%s: %.4f (%d/%d identical)", config.name, row["token_agreement"], row["identical_inputs"],
                        len(inputs))
            rows.append(row)
    machine = {"cpu": cpu_name(), "isa": isa_summary()}
    result: dict[str, Any] = {"model": str(args.model), "description": args.description, "inputs": len(inputs),
              "audio_seconds": seconds, "fp32_tokens": total, "machine": machine, "date": time.strftime("%Y-%m-%d"),
              "rows": rows}
    out = args.out or HERE / "results" / f"agreement-{args.name}.json"
    write_json(out, result)
    lines = [f"Measured {result['date']} on {machine['cpu']} ({machine['isa']}); model "
             f"{args.description or args.model}; {len(inputs)} inputs, {seconds / 60:.1f} min, {total} fp32 tokens "
             f"(`results/{out.name}`).", "",
             "| configuration | token agreement | inputs identical |", "|---|---:|---:|"]
    for row in result["rows"]:
        if "not_run" in row:
            lines.append(f"| {row['config']} | not run: {row['not_run'][:80]} | – |")
        else:
            lines.append(f"| {row['config']} | {100 * row['token_agreement']:.1f}% | "
                         f"{row['identical_inputs']} / {row['inputs']} |")
    write_block(args.readme, f"agreement-{args.name}", lines, f"Token agreement with fp32: {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
