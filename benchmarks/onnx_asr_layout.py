"""Expose a converted model directory in onnx-asr's NeMo TDT layout, reusing the same ONNX graphs.

onnx-asr (``onnx_asr.load_model("nemo-conformer-tdt", DIR)``) expects NeMo's own export layout:
``encoder-model.onnx`` (``audio_signal``, ``length`` → ``outputs`` as ``(batch, hidden, frames)``,
``encoded_lengths``), ``decoder_joint-model.onnx`` (one graph: predictor step and joint, NeMo's input and
output names), ``vocab.txt`` as ``piece id`` lines ending with ``<blk>``, and ``config.json``. This script
builds those from this engine's three graphs without re-exporting anything (the logic lives in
``parakeet_runtime.export.layouts.write_onnx_asr_layout``, also ``convert-model --layout onnx-asr``):

- the encoder graph with its inputs renamed and a transpose on its output (its external weight file is
  hard-linked where the file system allows, else copied: ONNX Runtime refuses symbolic links that leave
  the model's directory). The encoder already includes the joint's encoder projection, so the frames
  onnx-asr passes to ``decoder_joint`` are projected ones;
- the predictor and joint graphs merged into one, with squeeze/identity glue for NeMo's names.

The result runs the same weights and the same matrix products as the engine, so a benchmark compares the
runtimes around the graphs (feature extraction, decoding loop), not two exports.

    python benchmarks/onnx_asr_layout.py ~/.cache/parakeet-bench/v2/fp32 ~/.cache/parakeet-bench/v2/onnx-asr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parakeet_runtime.export.layouts import write_onnx_asr_layout


def write_layout(model_dir: Path, out_dir: Path) -> None:
    write_onnx_asr_layout(model_dir, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    write_layout(args.model_dir, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
