"""Step 1 of ``gpu_check.sh``: the Parakeet-shaped model and the directories the GPU check runs.

    python benchmarks/gpu_models.py --out ~/.cache/parakeet-gpu --shape v2     # on the GPU machine
    python benchmarks/gpu_models.py --out /tmp/parakeet-gpu --shape tiny       # dry run on a CPU

Writes under ``<out>/<shape>/``: ``model.nemo`` (random weights, :mod:`parakeet_models`), ``fp32`` (the default
graphs: ONNX Runtime's fused attention, for the CUDA provider), ``portable`` (``convert-model --target
tensorrt``: NeMo's parity check runs on it here) and ``fp16`` (``portable`` with its encoder converted to
float16 by ONNX Runtime's ``convert_float_to_float16``, inputs and outputs kept float32, for the CUDA
provider at fp16). Cached: an existing output is reused. Writes the paths as JSON into ``--json`` (default
``<out>/<shape>-models.json``; NeMo prints on stdout), the input of ``gpu_parity.py`` and ``gpu_rtfx.py``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from parakeet_models import REPO, SHAPES, build  # noqa: E402
from readme_block import write_json  # noqa: E402

logger = logging.getLogger("gpu_models")


def fp16_directory(portable: Path, out: Path) -> Path:
    """A copy of ``portable`` whose encoder graph computes in float16 (float32 in and out); the step graphs
    stay float32 (their argmaxes decide the tokens, and they are small)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from parakeet_runtime.engine import load_manifest
    from parakeet_runtime.engine.model.manifest import MANIFEST_NAME, with_file_digests

    if (out / MANIFEST_NAME).is_file():
        return out
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(portable, staging)
    manifest = load_manifest(staging)
    encoder = staging / manifest.encoder.file
    model = convert_float_to_float16(onnx.load(str(encoder)), keep_io_types=True, disable_shape_infer=True)
    onnx.save_model(model, str(encoder))
    manifest = with_file_digests(manifest, staging)
    (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def prepare(shape: str, out: Path, clip: Path) -> dict[str, str]:
    """Build the model and its directories (see the module docstring)."""
    from parakeet_runtime.export.convert import convert

    nemo = build(shape, out, clip)
    folder = out / shape
    fp32, portable = folder / "fp32", folder / "portable"
    if not (fp32 / "manifest.json").is_file():
        convert(str(nemo), fp32, overwrite=True, verify=False)  # gpu_parity.py checks it against NeMo
    if not (portable / "manifest.json").is_file():
        convert(str(nemo), portable, overwrite=True, target="tensorrt")
    fp16 = fp16_directory(portable, folder / "fp16")
    return {"nemo": str(nemo), "fp32": str(fp32), "portable": str(portable), "fp16": str(fp16)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "parakeet-gpu")
    parser.add_argument("--shape", default="v2", choices=sorted(SHAPES))
    parser.add_argument("--clip", type=Path, default=REPO / "engine" / "data" / "sample.wav")
    parser.add_argument("--json", type=Path, default=None, help="where to write the paths (see above)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("nemo_logger", "nemo", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    paths = prepare(args.shape, args.out, args.clip)
    target = args.json or args.out / f"{args.shape}-models.json"
    write_json(target, paths)
    logger.info("wrote %s", target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
