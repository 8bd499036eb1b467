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


def sherpa_onnx_metadata(model: Any) -> dict[str, str]:
    """The metadata props sherpa-onnx's NeMo TDT export script writes into ``encoder.onnx`` (its keys; the
    values this model's own, where the script writes Parakeet 0.6b's constants: subsampling 8, 128 mels)."""
    normalize = model.cfg.preprocessor.normalize
    return {
        "vocab_size": str(model.decoder.vocab_size),
        "normalize_type": "" if normalize == "NA" else str(normalize),
        "pred_rnn_layers": str(model.decoder.pred_rnn_layers),
        "pred_hidden": str(model.decoder.pred_hidden),
        "subsampling_factor": str(model.cfg.encoder.subsampling_factor),
        "model_type": "EncDecRNNTBPEModel",
        "version": "2",
        "model_author": "NeMo",
        "url": "https://huggingface.co/nvidia/parakeet-tdt-0.6b-v2",
        "comment": "Only the transducer branch is exported",
        "feat_dim": str(model.cfg.preprocessor.features),
    }


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace an ONNX file's metadata props (as sherpa-onnx's ``add_meta_data`` does)."""
    import onnx

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def export_sherpa_onnx(model: Any, out_dir: Path, *, int8: bool = False) -> Path:
    """Export a loaded NeMo TDT model (eval mode) into ``out_dir`` in sherpa-onnx's NeMo TDT layout, as
    sherpa-onnx's ``scripts/nemo/parakeet-tdt-0.6b-v2/export_onnx.py`` does: ``tokens.txt`` from the joint's
    vocabulary with ``<blk>`` last, ``encoder.export``, ``decoder.export`` and ``joint.export`` into
    ``encoder.onnx``, ``decoder.onnx`` and ``joiner.onnx``, metadata props on the encoder; with ``int8``
    also ``*.int8.onnx`` by ONNX Runtime's dynamic quantisation (QUInt8 encoder, QInt8 decoder and joiner),
    the metadata on ``encoder.int8.onnx`` too.

    Returns:
        ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    pieces = [*model.joint.vocabulary, "<blk>"]
    (out_dir / "tokens.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(pieces)), encoding="utf-8")
    model.encoder.export(str(out_dir / "encoder.onnx"))
    model.decoder.export(str(out_dir / "decoder.onnx"))
    model.joint.export(str(out_dir / "joiner.onnx"))
    model.eval()
    metadata = sherpa_onnx_metadata(model)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for stem in ("encoder", "decoder", "joiner"):
            weights = QuantType.QUInt8 if stem == "encoder" else QuantType.QInt8
            quantize_dynamic(out_dir / f"{stem}.onnx", out_dir / f"{stem}.int8.onnx", weight_type=weights)
        set_metadata(out_dir / "encoder.int8.onnx", metadata)
    set_metadata(out_dir / "encoder.onnx", metadata)
    return out_dir
