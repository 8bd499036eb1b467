"""Write random weights for an ONNX graph whose initializers all live in an external data file.

The 0.6B benchmark encoders carry random weights anyway (``parakeet_models.py`` builds them from a NeMo
config without training), so their graph file alone (about 40 MB) is enough to rebuild an equivalent
model on a machine the 2.4 GB weight file cannot be copied to, for example to profile the encoder on
another CPU:

    python benchmarks/random_weights.py MODEL_DIR/encoder.onnx

Writes each external initializer at its recorded offset: normal noise with standard deviation 0.02,
except normalisation scales (ones) and biases (zeros), so activations stay finite through every layer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger("random_weights")


def fill(graph_path: Path, seed: int = 0) -> Path:
    """Write the external data file that ``graph_path`` refers to; returns its path."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(graph_path), load_external_data=False)
    rng = np.random.default_rng(seed)
    target: Path | None = None
    written = 0
    handle = None
    try:
        for init in model.graph.initializer:
            if init.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {entry.key: entry.value for entry in init.external_data}
            path = graph_path.parent / info["location"]
            if target is None:
                target = path
                handle = path.open("wb")
            elif path != target:
                raise ValueError(f"{graph_path}: more than one external data file ({target.name}, {path.name})")
            dtype = np.dtype(tensor_dtype_to_np_dtype(init.data_type))
            shape = tuple(int(d) for d in init.dims)
            if init.name.endswith(".bias"):
                values = np.zeros(shape, dtype)
            elif "norm" in init.name and init.name.endswith(".weight"):
                values = np.ones(shape, dtype)
            else:
                values = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)
            data = values.tobytes()
            if "length" in info and int(info["length"]) != len(data):
                raise ValueError(f"{init.name}: {len(data)} bytes, graph says {info['length']}")
            assert handle is not None
            handle.seek(int(info.get("offset", 0)))
            handle.write(data)
            written += len(data)
    finally:
        if handle is not None:
            handle.close()
    if target is None:
        raise ValueError(f"{graph_path} has no external initializers")
    logger.info("wrote %s (%.2f GB of weights)", target, written / 1e9)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    fill(args.graph, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
