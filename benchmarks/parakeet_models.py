"""Build Parakeet-shaped TDT models with random weights (no download) and convert them.

Shapes (as parakeet-tdt-0.6b-v2 / v3): FastConformer d_model 1024, 24 layers, 8 heads, dw_striding ×8
with 256 channels, 128 mels, conv kernel 9, predictor and joint 640, 2 LSTM layers, durations
[0, 1, 2, 3, 4]; vocabulary 1024 (v2) or 8192 (v3), with SentencePiece tokenizers trained on generated
text. A random joint emits a label at almost every step, which no trained model does; the blank logit's
bias is raised until the model emits about one token per 3 encoder frames, as a trained model does on
speech, so that decoding costs what it costs in real use. Each Conformer layer's residual branches are
scaled down first (:func:`_keep_frames_apart`): a deep random encoder otherwise maps every frame to
nearly the same output, and no bias gives a realistic rate. Neither changes what the model computes per
frame, only the values: the encoder and decoding cost what Parakeet's do.

    python benchmarks/parakeet_models.py --out ~/.cache/parakeet-bench --shapes v2

Writes ``<out>/<shape>/model.nemo``, ``<out>/<shape>/fp32`` and ``<out>/<shape>/int8`` (convert-model
directories; ``--int8-weights int7`` adds ``<out>/<shape>/int8-int7``, and so on for each scheme besides
the default; ``--int8-activations per-row-fixed per-tensor`` adds ``-per-tensor`` directories, the same weights
with ONNX Runtime's one activation scale per tensor, and so on for each scaling besides the default). Cached: an
existing output is reused, unless its manifest records other int8 choices than the ones asked for (a directory
converted with another activation scaling, or before activations were scaled per row, is converted again). Not part
of CI (minutes and ~10 GB of memory); ``--shapes tiny`` builds a small model of the same structure for the CI smoke
run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from parakeet_runtime.engine.model.manifest import UNRECORDED_ACTIVATIONS  # noqa: E402
from parakeet_runtime.export.quantize import ACTIVATIONS, DEFAULT_WEIGHTS, WEIGHT_SCHEMES  # noqa: E402
from tests.fixtures.nemo_config import Geometry, model_config  # noqa: E402

logger = logging.getLogger("parakeet_models")

SHAPES = {
    "v2": Geometry(name="parakeet-v2-shape", vocab_size=1024, durations=(0, 1, 2, 3, 4), d_model=1024, n_layers=24,
                   n_heads=8, subsampling_factor=8, subsampling_conv_channels=256, conv_kernel_size=9, n_mels=128,
                   window_size=0.025, window_stride=0.01, n_fft=512, pred_hidden=640, pred_rnn_layers=2,
                   joint_hidden=640),
    "v3": Geometry(name="parakeet-v3-shape", vocab_size=8192, durations=(0, 1, 2, 3, 4), d_model=1024, n_layers=24,
                   n_heads=8, subsampling_factor=8, subsampling_conv_channels=256, conv_kernel_size=9, n_mels=128,
                   window_size=0.025, window_stride=0.01, n_fft=512, pred_hidden=640, pred_rnn_layers=2,
                   joint_hidden=640),
    "tiny": Geometry(name="parakeet-tiny-shape", vocab_size=128, durations=(0, 1, 2, 3, 4), d_model=64, n_layers=2,
                     n_heads=2, subsampling_factor=8, subsampling_conv_channels=32, conv_kernel_size=9, n_mels=128,
                     window_size=0.025, window_stride=0.01, n_fft=512, pred_hidden=64, pred_rnn_layers=2,
                     joint_hidden=64),
}


def _tokenizer(vocab_size: int, out_dir: Path) -> Path:
    """A SentencePiece BPE tokenizer with exactly ``vocab_size`` pieces, trained on generated words."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "tokenizer.model").is_file():
        return out_dir
    rng = random.Random(vocab_size)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    words = ["".join(rng.choices(letters, weights, k=rng.randint(2, 9))) for _ in range(max(20000, vocab_size * 6))]
    lines = [" ".join(rng.choices(words, k=12)) + rng.choice([".", "?", "!", ","]) for _ in range(40000)]
    (out_dir / "text.txt").write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(input=str(out_dir / "text.txt"), model_prefix=str(out_dir / "tokenizer"),
                                   vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, bos_id=-1,
                                   eos_id=-1, unk_id=0, num_threads=2, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    (out_dir / "vocab.txt").write_text("\n".join(sp.id_to_piece(i) for i in range(sp.get_piece_size())) + "\n")
    return out_dir


def _tokens_per_frame(model: Any, clip: Path, frame_seconds: float) -> float:
    import soundfile

    hyp = model.transcribe([str(clip)], batch_size=1, return_hypotheses=True, verbose=False)[0]
    model.eval()
    info = soundfile.info(str(clip))
    frames = max(1.0, float(info.frames) / float(info.samplerate) / frame_seconds)
    return float(len(hyp.y_sequence)) / frames


BRANCH_SCALE = 0.1
"""Factor on the outputs of every Conformer layer's feed-forward, attention and convolution modules."""


def _keep_frames_apart(model: Any, scale: float = BRANCH_SCALE) -> None:
    """Scale the last projection of each residual branch of every Conformer layer by ``scale``.

    With random weights, 24 layers of full-size branches wash out the input: every output frame is nearly
    the same, so the blank decision is the same at every frame and calibrating its bias jumps from a label
    at every frame to none at all (the v3 shape: 8 tokens per frame on a 60 s clip, none on 5 s). With
    the branches scaled down, each layer's output stays close to its input and the frames keep following
    the audio (v3 shape: 0.23-0.34 tokens per frame on the benchmark's clips after calibration). The
    arithmetic is unchanged: same layers, same shapes, different values.
    """
    import torch

    with torch.no_grad():
        for layer in model.encoder.layers:
            for module in (layer.feed_forward1.linear2, layer.feed_forward2.linear2, layer.self_attn.linear_out,
                           layer.conv.pointwise_conv2):
                module.weight *= scale
                if module.bias is not None:
                    module.bias *= scale


def _rate_with_blank_bias(model: Any, geometry: Any, clip: Path, bias: float) -> float:
    """Set the joint's blank-logit bias to ``bias`` and return the tokens per encoder frame on ``clip``."""
    import torch

    blank = geometry.vocab_size  # TDT: the blank follows the vocabulary
    with torch.no_grad():
        model.joint.joint_net[-1].bias[blank] = bias
    rate = _tokens_per_frame(model, clip, geometry.window_stride * geometry.subsampling_factor)
    logger.info("%s: blank bias %.3f -> %.2f tokens per frame", geometry.name, bias, rate)
    return rate


def _bisect_blank_bias(model: Any, geometry: Any, clip: Path, low: float, high: float) -> tuple[float, float]:
    """Bracket (by doubling) and bisect the blank bias for ``low``..``high`` tokens per frame; returns the
    bias added and the rate it gives (``<= high``, possibly below ``low`` where the rate jumps)."""
    original = float(model.joint.joint_net[-1].bias[geometry.vocab_size])

    def rate_at(bias: float) -> float:
        return _rate_with_blank_bias(model, geometry, clip, original + bias)

    rate = rate_at(0.0)
    if low <= rate <= high:
        return 0.0, rate
    # Bracket: rate(below) > high >= rate(above).
    if rate > high:
        below, above = 0.0, 1.0
        rate = rate_at(above)
        while rate > high and above < 4096:
            below, above = above, above * 2
            rate = rate_at(above)
    else:
        below, above = -1.0, 0.0
        while rate_at(below) <= high and below > -4096:
            below, above = below * 2, below
        rate = rate_at(above)
    for _ in range(16):
        if low <= rate <= high:
            break
        middle = (below + above) / 2
        middle_rate = rate_at(middle)
        if middle_rate > high:
            below = middle
        else:
            above, rate = middle, middle_rate
    rate_at(above)
    return above, rate


def _calibrate_blank_bias(model: Any, geometry: Any, clip: Path, low: float = 0.2, high: float = 0.4) -> None:
    """Make the random model emit ``low``..``high`` tokens per encoder frame on ``clip``, as a trained
    model does on speech, by raising the blank logit's bias."""
    _, rate = _bisect_blank_bias(model, geometry, clip, low, high)
    if not low <= rate <= high:
        logger.warning("%s: no blank bias gives %.2f-%.2f tokens per frame (best %.2f)", geometry.name, low, high,
                       rate)


def build(shape: str, out: Path, clip: Path) -> Path:
    """Build (or reuse) ``out/<shape>/model.nemo``."""
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    geometry = SHAPES[shape]
    target = out / shape / "model.nemo"
    if target.is_file():
        return target
    torch.manual_seed(0)
    tokenizer = _tokenizer(geometry.vocab_size, out / shape / "tokenizer")
    cfg = model_config(geometry, str(tokenizer))
    model = EncDecRNNTBPEModel(cfg=OmegaConf.create(cfg))
    model.eval()
    _keep_frames_apart(model)
    _calibrate_blank_bias(model, geometry, clip)
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(target))
    return target


def int8_folder(weights: str, activations: str) -> str:
    """``int8`` for the default choices, ``int8-<scheme>`` for another weight scheme, ``-per-tensor`` appended for
    activations scaled per tensor."""
    name = "int8" if weights == DEFAULT_WEIGHTS else f"int8-{weights}"
    return name if activations == ACTIVATIONS[0] else f"{name}-{activations}"


def _holds(directory: Path, weights: str, activations: str) -> bool:
    """Whether ``directory`` is an int8 conversion with these choices (``auto`` writes a second, signed graph; an
    older conversion records no activations: per tensor)."""
    if not (directory / "manifest.json").is_file():
        return False
    manifest = json.loads((directory / "manifest.json").read_text())
    quantization = manifest.get("provenance", {}).get("quantization")
    if not quantization:
        return False
    recorded_weights = "auto" if manifest.get("encoder", {}).get("signed_int8_file") else quantization.get("weights")
    recorded_activations = quantization.get("activations") or UNRECORDED_ACTIVATIONS
    return bool(recorded_weights == weights and recorded_activations == activations)


def convert_all(nemo: Path, out: Path, int8_weights: tuple[str, ...] = (DEFAULT_WEIGHTS,),
                int8_activations: tuple[str, ...] = (ACTIVATIONS[0],)) -> list[Path]:
    """The fp32 directory, then one int8 directory per weight scheme and activation scaling (named by
    :func:`int8_folder`)."""
    from parakeet_runtime.export.convert import convert

    fp32 = out / "fp32"
    if not (fp32 / "manifest.json").is_file():
        convert(str(nemo), fp32, overwrite=True)
    written = [fp32]
    for weights in int8_weights:
        for activations in int8_activations:
            int8 = out / int8_folder(weights, activations)
            if not _holds(int8, weights, activations):
                convert(str(nemo), int8, overwrite=True, quantize="int8", int8_weights=weights,
                        int8_activations=activations)
            written.append(int8)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "parakeet-bench")
    parser.add_argument("--shapes", nargs="+", default=["v2", "v3"], choices=sorted(SHAPES))
    parser.add_argument("--clip", type=Path, default=REPO / "engine" / "data" / "sample.wav")
    parser.add_argument("--int8-weights", nargs="+", default=[DEFAULT_WEIGHTS], choices=tuple(WEIGHT_SCHEMES),
                        help="int8 weight schemes to convert (convert-model --int8-weights)")
    parser.add_argument("--int8-activations", nargs="+", default=[ACTIVATIONS[0]], choices=ACTIVATIONS,
                        help="int8 activation scalings to convert, each with every weight scheme (convert-model "
                        "--int8-activations)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("nemo_logger", "nemo", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for shape in args.shapes:
        nemo = build(shape, args.out, args.clip)
        written = convert_all(nemo, args.out / shape, tuple(args.int8_weights), tuple(args.int8_activations))
        logger.info("%s: %s", shape, ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
