"""Expose a converted model directory in onnx-asr's NeMo TDT layout, reusing the same ONNX graphs.

onnx-asr (``onnx_asr.load_model("nemo-conformer-tdt", DIR)``) expects NeMo's own export layout:
``encoder-model.onnx`` (``audio_signal``, ``length`` → ``outputs`` as ``(batch, hidden, frames)``,
``encoded_lengths``), ``decoder_joint-model.onnx`` (one graph: predictor step and joint, NeMo's input and
output names), ``vocab.txt`` as ``piece id`` lines ending with ``<blk>``, and ``config.json``. This script
builds those from this engine's three graphs without re-exporting anything:

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
import json
import os
import shutil
import sys
from pathlib import Path

import onnx
from onnx import compose, helper

from parakeet_runtime.engine.model.manifest import load_manifest


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for value in graph.input:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def encoder_graph(model_dir: Path, out_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    spec = manifest.encoder
    model = onnx.load(str(model_dir / spec.file), load_external_data=False)
    graph = model.graph
    _rename_input(graph, spec.input_features, "audio_signal")
    _rename_input(graph, spec.input_lengths, "length")
    graph.node.append(helper.make_node("Transpose", [spec.output_frames], ["outputs"], perm=[0, 2, 1]))
    kept = [o for o in graph.output if o.name != spec.output_frames]
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("outputs", onnx.TensorProto.FLOAT,
                                                       ["batch", spec.joint_hidden, "encoded_frames"]), *kept])
    for o in graph.output:
        if o.name == spec.output_lengths:
            o.name = "encoded_lengths"
    for node in graph.node:
        node.output[:] = ["encoded_lengths" if n == spec.output_lengths else n for n in node.output]
    onnx.save(model, str(out_dir / "encoder-model.onnx"))
    if spec.external_data:
        link = out_dir / spec.external_data
        if link.exists() or link.is_symlink():
            link.unlink()
        try:
            os.link(model_dir / spec.external_data, link)
        except OSError:
            shutil.copyfile(model_dir / spec.external_data, link)


def decoder_joint_graph(model_dir: Path, out_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    p, j = manifest.predictor, manifest.joint
    predictor = compose.add_prefix(onnx.load(str(model_dir / p.file)), "p_")
    joint = compose.add_prefix(onnx.load(str(model_dir / j.file)), "j_")
    i64 = onnx.TensorProto.INT64
    nodes = [
        helper.make_node("Constant", [], ["axis1"], value=helper.make_tensor("axis1", i64, [1], [1])),
        helper.make_node("Constant", [], ["axis2"], value=helper.make_tensor("axis2", i64, [1], [2])),
        helper.make_node("Squeeze", ["targets", "axis1"], ["p_" + p.input_targets]),
        helper.make_node("Identity", ["input_states_1"], ["p_" + p.input_h]),
        helper.make_node("Identity", ["input_states_2"], ["p_" + p.input_c]),
        helper.make_node("Squeeze", ["encoder_outputs", "axis2"], ["j_" + j.input_encoder]),
        *predictor.graph.node,
        helper.make_node("Identity", ["p_" + p.output], ["j_" + j.input_predictor]),
        *joint.graph.node,
        helper.make_node("Identity", ["j_" + j.output_logits], ["outputs"]),
        helper.make_node("Identity", ["target_length"], ["prednet_lengths"]),
        helper.make_node("Identity", ["p_" + p.output_h], ["output_states_1"]),
        helper.make_node("Identity", ["p_" + p.output_c], ["output_states_2"]),
    ]
    f = onnx.TensorProto.FLOAT
    layers, hidden, joint_hidden = p.layers, p.hidden, manifest.encoder.joint_hidden
    graph = helper.make_graph(
        nodes, "decoder_joint",
        inputs=[
            helper.make_tensor_value_info("encoder_outputs", f, ["batch", joint_hidden, 1]),
            helper.make_tensor_value_info("targets", i64, ["batch", 1]),
            helper.make_tensor_value_info("target_length", i64, ["batch"]),
            helper.make_tensor_value_info("input_states_1", f, [layers, "batch", hidden]),
            helper.make_tensor_value_info("input_states_2", f, [layers, "batch", hidden]),
        ],
        outputs=[
            helper.make_tensor_value_info("outputs", f, ["batch", j.num_outputs]),
            helper.make_tensor_value_info("prednet_lengths", i64, ["batch"]),
            helper.make_tensor_value_info("output_states_1", f, [layers, "batch", hidden]),
            helper.make_tensor_value_info("output_states_2", f, [layers, "batch", hidden]),
        ],
        initializer=[*predictor.graph.initializer, *joint.graph.initializer],
    )
    model = helper.make_model(graph, opset_imports=predictor.opset_import)
    model.ir_version = predictor.ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(out_dir / "decoder_joint-model.onnx"))


def write_layout(model_dir: Path, out_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder_graph(model_dir, out_dir)
    decoder_joint_graph(model_dir, out_dir)
    pieces = (model_dir / manifest.tokenizer.vocab_file).read_text(encoding="utf-8").splitlines()
    lines = [f"{piece} {i}" for i, piece in enumerate(pieces)] + [f"<blk> {manifest.decoding.blank_id}"]
    (out_dir / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "model_type": "nemo-conformer-tdt",
        "features_size": manifest.features.n_mels,
        "subsampling_factor": manifest.encoder.subsampling_factor,
        "max_tokens_per_step": manifest.decoding.max_symbols or 10,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    write_layout(args.model_dir, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
