"""The decoding step graph: the prediction network and the joint in one ONNX graph.

After every emitted label, the greedy TDT search feeds the label to the prediction network and then
evaluates the joint at the next frame with the new output. One graph that does both saves a session run
per emitted label, and both run on the same thread pool (for a large vocabulary the joint's weights are as
large as the predictor's, and splitting them over two pools costs more than the run itself).
"""

from __future__ import annotations

from pathlib import Path

from parakeet_runtime.engine.model.manifest import JointSpec, PredictorSpec, StepSpec

from .errors import ConversionError

STEP_FILE = "step.onnx"
_JOINT_PREFIX = "joint/"


def write_step_graph(out_dir: Path, predictor: PredictorSpec, joint: JointSpec) -> StepSpec:
    """Write ``out_dir/step.onnx`` from the predictor and joint graphs already in ``out_dir``.

    Inputs: the predictor's (label, ``h``, ``c``) and the joint's encoder frame. Outputs: the predictor's
    (projected output, ``h``, ``c``) and the joint's logits for that frame and that output.
    """
    import onnx
    from onnx import compose

    try:
        predictor_graph = onnx.load(str(out_dir / predictor.file))
        joint_graph = compose.add_prefix(onnx.load(str(out_dir / joint.file)), _JOINT_PREFIX,
                                         rename_inputs=False, rename_outputs=False)
        merged = compose.merge_models(
            predictor_graph,
            joint_graph,
            io_map=[(predictor.output, joint.input_predictor)],
            outputs=[predictor.output, predictor.output_h, predictor.output_c, joint.output_logits],
        )
        onnx.checker.check_model(merged)
        onnx.save_model(merged, str(out_dir / STEP_FILE))
    except Exception as exc:  # onnx raises assorted untyped errors
        raise ConversionError(f"cannot merge the predictor and joint graphs: {type(exc).__name__}: {exc}") from exc
    return StepSpec(file=STEP_FILE, input_encoder=joint.input_encoder, output_logits=joint.output_logits)
