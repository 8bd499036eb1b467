"""Write NeMo checkpoints in other runtimes' directory layouts, as those runtimes' own recipes do (test helper).

onnx-asr (``istupakov/parakeet-tdt-0.6b-v2-onnx``): NeMo's ``model.export("model.onnx")``, which writes
``encoder-model.onnx`` and ``decoder_joint-model.onnx``, then ``vocab.txt`` as ``<piece> <id>`` lines with
``<blk>`` last, and ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def export_onnx_asr(model: Any, out_dir: Path, *, config: dict[str, Any] | None = None) -> Path:
    """Export a loaded NeMo TDT model (eval mode) into ``out_dir`` in onnx-asr's layout.

    Args:
        model: a NeMo ``EncDecRNNTBPEModel`` with TDT decoding.
        out_dir: created if missing.
        config: ``config.json``'s contents (default: onnx-asr's keys for this model).

    Returns:
        ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.export(str(out_dir / "model.onnx"))
    model.eval()
    pieces = [*model.tokenizer.vocab, "<blk>"]
    (out_dir / "vocab.txt").write_text("".join(f"{piece} {i}\n" for i, piece in enumerate(pieces)), encoding="utf-8")
    if config is None:
        config = {
            "model_type": "nemo-conformer-tdt",
            "features_size": int(model.cfg.preprocessor.features),
            "subsampling_factor": int(model.cfg.encoder.subsampling_factor),
            "max_tokens_per_step": int(model.decoding.decoding.max_symbols),
        }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir
