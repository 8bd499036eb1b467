"""Token agreement with the fp32 engine, per precision configuration, on one model and a set of inputs.

    python benchmarks/precision_agreement.py --model engine/default_model \\
        --clips /work/demo-build/eval/*_voices_*.wav --join 60 --name demo

Each configuration is an encoder (fp32 ONNX Runtime, the int8 directory's ``uint8`` or signed ``int8`` graph,
OpenVINO fp32 or bf16) with the decoding step's weights in fp32 or int8 (``SessionOptions.decoder_weights``).
The int8 directory is quantised from ``--model`` the way ``convert-model --quantize int8`` does (activations
scaled per row); the ``per tensor`` rows use a second one quantised as before 2026-12-05 (ONNX Runtime's one
activation scale per tensor). Every configuration decodes the same inputs (the clips one by one, and with
``--join S`` also the clips joined into recordings of about S seconds), and its tokens are compared with the
fp32 engine's: agreement = 1 − token edit distance / fp32 tokens. The encoder error is a measure that does not
jump with one drifting recording: the relative RMS difference of the encoder's output frames from the fp32
engine's, over every input. Configurations the CPU or the install cannot run (OpenVINO without the
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
    int8_activations: str | None
    """The int8 directory whose encoder runs, by its activations' scaling (``per-row``, ``per-tensor``,
    ``per-row-centred``, ``per-row-fixed``);
    ``None``: the fp32 directory."""
    session: dict[str, str]


CONFIGS = (
    Config("fp32, int8 decoding", None, {"decoder_weights": "int8"}),
    Config("ORT int8 uint8, fp32 decoding", "per-row", {"int8_weights": "uint8", "decoder_weights": "fp32"}),
    Config("ORT int8 uint8, int8 decoding", "per-row", {"int8_weights": "uint8", "decoder_weights": "int8"}),
    Config("ORT int8 signed, fp32 decoding", "per-row", {"int8_weights": "int8", "decoder_weights": "fp32"}),
    Config("ORT int8 signed, int8 decoding", "per-row", {"int8_weights": "int8", "decoder_weights": "int8"}),
    Config("ORT int8 uint8 per tensor, fp32 decoding", "per-tensor",
           {"int8_weights": "uint8", "decoder_weights": "fp32"}),
    Config("ORT int8 signed per tensor, fp32 decoding", "per-tensor",
           {"int8_weights": "int8", "decoder_weights": "fp32"}),
    Config("ORT int8 uint8 centred, fp32 decoding", "per-row-centred",
           {"int8_weights": "uint8", "decoder_weights": "fp32"}),
    Config("ORT int8 signed centred, fp32 decoding", "per-row-centred",
           {"int8_weights": "int8", "decoder_weights": "fp32"}),
    Config("ORT int8 signed centred, int8 decoding", "per-row-centred",
           {"int8_weights": "int8", "decoder_weights": "int8"}),
    Config("ORT int8 uint8 fixed, fp32 decoding", "per-row-fixed",
           {"int8_weights": "uint8", "decoder_weights": "fp32"}),
    Config("ORT int8 signed fixed, fp32 decoding", "per-row-fixed",
           {"int8_weights": "int8", "decoder_weights": "fp32"}),
    Config("ORT int8 signed fixed, int8 decoding", "per-row-fixed",
           {"int8_weights": "int8", "decoder_weights": "int8"}),
    Config("OpenVINO fp32", None, {"backend": "openvino", "precision": "fp32"}),
    Config("OpenVINO bf16, fp32 decoding", None,
           {"backend": "openvino", "precision": "bf16", "decoder_weights": "fp32"}),
    Config("OpenVINO bf16, int8 decoding", None,
           {"backend": "openvino", "precision": "bf16", "decoder_weights": "int8"}),
    Config("OpenVINO int8, fp32 decoding", None,
           {"backend": "openvino", "precision": "int8", "decoder_weights": "fp32"}),
    Config("OpenVINO int8, int8 decoding", None,
           {"backend": "openvino", "precision": "int8", "decoder_weights": "int8"}),
)


def _agreement(edits: int, tokens: int) -> float:
    """1 − ``edits`` / ``tokens`` (at least 0; 1 where there are no tokens)."""
    return max(0.0, 1 - edits / tokens) if tokens else 1.0


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
    from parakeet_runtime.engine import Engine, PreparedAudio, SessionOptions, load_manifest
    from parakeet_runtime.engine.errors import ParakeetRuntimeError
    from parakeet_runtime.engine.model.cpu import cpu_name, isa_summary
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

    rate = manifest.features.sample_rate

    def run(directory: Path, session: dict[str, Any]) -> tuple[list[list[int]], list[np.ndarray]]:
        """Each input's tokens, and its encoder output frames: one encoder run per input, decoded as a request
        of it alone is (an input the engine would chunk is transcribed as such, its frames from one pass)."""
        with Engine.load(directory, session=SessionOptions(threads=args.threads, **session)) as engine:
            tokens, frames = [], []
            for samples in inputs:
                prepared = engine.prepare(samples, sample_rate=rate)
                if isinstance(prepared, PreparedAudio) and prepared.features is not None:
                    encoded, lengths = engine.inference.encode_batch([prepared])
                    (transcript,) = engine.inference.decode_batch(encoded, lengths, [prepared])
                else:
                    transcript = engine.transcribe(samples, sample_rate=rate)
                    features, valid = engine.features(samples)
                    encoded, lengths = engine.model.encode(features[None], np.array([valid], dtype=np.int64))
                tokens.append([t.id for t in transcript.tokens])
                frames.append(np.asarray(encoded[0, : int(lengths[0])], dtype=np.float64))
            return tokens, frames

    reference, reference_frames = run(args.model, {"decoder_weights": "fp32"})
    total = sum(len(r) for r in reference)
    clips = len(args.clips)  # the inputs past them are the joined recordings
    clip_tokens = sum(len(r) for r in reference[:clips])
    energy = sum(float(np.square(f).sum()) for f in reference_frames)
    rows: list[dict[str, Any]] = []  # one per configuration
    with tempfile.TemporaryDirectory() as folder:
        for config in (c for c in CONFIGS if c.name in args.configs):
            directory = args.model
            if config.int8_activations is not None:
                directory = Path(folder) / f"int8-{config.int8_activations}"
                if not directory.exists():
                    quantize_directory(args.model, directory, manifest, "auto", activations=config.int8_activations)
            started = time.perf_counter()
            try:
                hypothesis, frames = run(directory, config.session)
            except (ParakeetRuntimeError, ImportError) as exc:
                logger.info("%s: not run (%s)", config.name, exc)
                rows.append({"config": config.name, "session": config.session, "not_run": str(exc)})
                continue
            edits = sum(_edit_distance(a, b) for a, b in zip(reference, hypothesis, strict=True))
            clip_edits = sum(_edit_distance(a, b) for a, b in zip(reference[:clips], hypothesis[:clips], strict=True))
            error = sum(float(np.square(f - r).sum()) for f, r in zip(frames, reference_frames, strict=True))
            row = {"config": config.name, "session": config.session, "tokens": total,
                   "token_agreement": _agreement(edits, total), "token_edits": edits,
                   "identical_inputs": sum(a == b for a, b in zip(reference, hypothesis, strict=True)),
                   "encoder_error": (error / energy) ** 0.5 if energy else 0.0,
                   "clip_agreement": _agreement(clip_edits, clip_tokens),
                   "joined_agreement": (_agreement(edits - clip_edits, total - clip_tokens)
                                        if len(inputs) > clips else None),
                   "inputs": len(inputs), "seconds": time.perf_counter() - started}
            logger.info("%s: %.4f (%d/%d identical), encoder error %.4f", config.name, row["token_agreement"],
                        row["identical_inputs"], len(inputs), row["encoder_error"])
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
             "| configuration | token agreement | on the clips | on the joined recordings | inputs identical "
             "| encoder error |", "|---|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        if "not_run" in row:
            lines.append(f"| {row['config']} | not run: {row['not_run'][:80]} | – | – | – | – |")
        else:
            joined = "–" if row["joined_agreement"] is None else f"{100 * row['joined_agreement']:.1f}%"
            lines.append(f"| {row['config']} | {100 * row['token_agreement']:.1f}% | "
                         f"{100 * row['clip_agreement']:.1f}% | {joined} | "
                         f"{row['identical_inputs']} / {row['inputs']} | {100 * row['encoder_error']:.2f}% |")
    lines += ["", "Token agreement: 1 − token edits / fp32 tokens, over every input, over the clips alone, and over "
              "the recordings joined from them (a small model's state drifts further on a long recording: one edit "
              "there can shift every later token)."]
    write_block(args.readme, f"agreement-{args.name}", lines, f"Token agreement with fp32: {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
