"""``convert-model SRC OUT_DIR``: convert a NeMo Parakeet TDT checkpoint into a model directory."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import logging
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from parakeet_runtime.engine import ParakeetRuntimeError, __version__, load_audio
from parakeet_runtime.engine.serving.signals import sigterm_raises

from .errors import ConversionError, ParityError
from .inspect_model import parse_context, parse_languages
from .output_dir import check_output_dir, move_into_place, staging_dir
from .portable import TARGETS
from .position_table import DEFAULT_FRAMES
from .quantize import ACTIVATIONS, DEFAULT_WEIGHTS, WEIGHT_CHOICES

PROBE_CHECK_RATE = 16000
"""The rate ``--probe-audio`` files are decoded at when they are checked up front (the model's own rate is known
only once it is loaded; any rate shows that the file decodes)."""

if TYPE_CHECKING:
    from .convert import ConversionReport

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="convert-model",
        description="Convert a NeMo TDT checkpoint (.nemo file or pretrained name) into a parakeet-runtime "
        "model directory: ONNX encoder, predictor and joint, tokenizer, and manifest.",
        epilog="Example: convert-model nvidia/parakeet-tdt-0.6b-v2 parakeet-tdt-0.6b-v2-onnx  (needs internet), "
        "or convert-model my_model.nemo my_model_dir",
    )
    parser.add_argument("source", help=".nemo file, or a NeMo pretrained model name (with --from: a directory in "
                        "that layout; with --layout: also a model directory of this project)")
    parser.add_argument("out_dir", type=Path, help="model directory to create")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if it is a model directory or an empty folder (anything else is refused)")
    parser.add_argument("--probe-audio", type=Path, action="append", default=[],
                        help="extra audio file for the NeMo parity check (repeatable)")
    parser.add_argument("--skip-verify", action="store_true",
                        help="do not compare against NeMo (debugging only; the manifest records it)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="quantise the encoder (dynamic int8 MatMul weights per output channel) after "
                        "the fp32 parity check; "
                        "the token agreement with fp32 is reported and recorded in the manifest")
    parser.add_argument("--int8-weights", choices=WEIGHT_CHOICES, default=None,
                        help=f"how --quantize int8 stores the weights (default {DEFAULT_WEIGHTS}): auto writes a "
                        "uint8 and an int8 graph and the engine loads int8 on CPUs with VNNI/AMX, uint8 elsewhere; "
                        "uint8 alone gives the same tokens on every CPU; int7 too, with the faster u8 x s8 kernels "
                        "and one bit less precision; int8 alone is exact and fastest only on CPUs with VNNI/AMX "
                        "or ARM dot products")
    parser.add_argument("--int8-activations", choices=ACTIVATIONS, default=None,
                        help="how --quantize int8 scales the products' inputs at run time (default per-row-fixed: "
                        "each encoder frame its own scale, Swish's outputs shifted by their lower bound, a fixed "
                        "quantiser: the same results alone and in a batch, so the engine batches concurrent "
                        "requests; per-row: each frame its own scale before ONNX Runtime's quantiser, whose range "
                        "spans the batch (the default before 2026-12-05, about 15%% more error); per-tensor: ONNX "
                        "Runtime's one scale per tensor, about 10%% faster, about 80%% more error; per-row-centred: "
                        "each frame centred, the least error, about 7-14%% slower)")
    parser.add_argument("--position-table-frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                        help="precompute the encoder's relative-position projections for inputs of up to N encoder "
                        f"frames (default {DEFAULT_FRAMES}: 82 s at 80 ms per frame; 8 MB per layer at d_model "
                        "1024); longer inputs compute them as before; 0 turns the tables off")
    parser.add_argument("--languages", default=None, metavar="CODES",
                        help="ISO 639-1 codes of the languages the model transcribes, comma-separated (e.g. en,de), "
                        "recorded in the manifest; default: what the checkpoint's config says, or the known "
                        "languages of NVIDIA's Parakeet TDT checkpoints of that name")
    parser.add_argument("--from", dest="from_layout", choices=("onnx-asr", "sherpa-onnx"), default=None,
                        help="SOURCE is a directory in onnx-asr's or sherpa-onnx's NeMo TDT layout: rewrite it into "
                        "this project's layout (no NeMo or torch needed); the result is checked to transcribe the "
                        "probe clips as the source directory does")
    parser.add_argument("--precision", choices=("fp32", "int8"), default=None,
                        help="with --from: which graphs of the source directory to read (default: fp32 when present)")
    parser.add_argument("--layout", choices=("onnx-asr",), default=None,
                        help="write OUT_DIR in onnx-asr's NeMo TDT layout (onnx_asr.load_model('nemo-conformer-tdt', "
                        "OUT_DIR)) instead of this project's; SOURCE may also be a converted model directory")
    parser.add_argument("--attention", choices=("local",), default=None,
                        help="switch the checkpoint's encoder to local attention before exporting it (NeMo's "
                        "rel_pos_local_attn, as NVIDIA's long-form recipe does; needs --context): memory grows "
                        "linearly with the audio's length instead of quadratically, and the directory takes audio "
                        "of any length; the parity check compares against the switched NeMo model")
    parser.add_argument("--context", default=None, metavar="LEFT,RIGHT",
                        help="local attention context in encoder frames on each side, e.g. 128,128 (with "
                        "--attention local)")
    parser.add_argument("--target", choices=TARGETS, default=None,
                        help="tensorrt: a portable encoder graph (standard ONNX operators only, no ONNX Runtime "
                        "contrib ops, fp16-safe masking, no position tables) that TensorRT parses, checked against "
                        "TensorRT's operator list; fp16 TensorRT engines too where tensorrt and a GPU are present "
                        "(else Engine.load(device='tensorrt') builds them at the first load)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs (and tracebacks)")
    parser.add_argument("--version", action="version", version=f"%(prog)s (parakeet-runtime) {__version__}")
    args = parser.parse_args(argv)
    for probe in args.probe_audio:
        if not probe.is_file():
            parser.error(f"--probe-audio {probe}: no such file")
        try:  # decoded now, not after minutes of export
            load_audio(probe, PROBE_CHECK_RATE)
        except ParakeetRuntimeError as exc:
            parser.error(f"--probe-audio {probe}: {exc}")
    if args.position_table_frames < 0:
        parser.error("--position-table-frames must be 0 or more")
    if args.int8_weights is not None and args.quantize != "int8":
        parser.error("--int8-weights needs --quantize int8")
    if args.int8_activations is not None and args.quantize != "int8":
        parser.error("--int8-activations needs --quantize int8")
    if args.from_layout is not None:
        if args.layout is not None:
            parser.error("--from and --layout go one way each; convert in two steps")
        if args.quantize is not None or args.position_table_frames != DEFAULT_FRAMES or args.attention is not None:
            parser.error("--from keeps the source's graphs: --quantize, --position-table-frames and --attention "
                         "do not apply")
        if not Path(args.source).is_dir():
            parser.error(f"--from {args.from_layout}: {args.source} is not a directory")
    elif args.precision is not None:
        parser.error("--precision needs --from")
    if args.layout is not None and (Path(args.source) / "manifest.json").is_file():
        ignored = [flag for flag, given in (
            ("--quantize", args.quantize is not None), ("--attention", args.attention is not None),
            ("--position-table-frames", args.position_table_frames != DEFAULT_FRAMES),
            ("--languages", args.languages is not None), ("--probe-audio", bool(args.probe_audio)),
            ("--skip-verify", args.skip_verify)) if given]
        if ignored:  # they were silently ignored: the directory is rewritten as it is
            parser.error(f"--layout from a model directory rewrites its graphs as they are: {', '.join(ignored)} "
                         "apply to a conversion from a checkpoint")
    if args.target is not None:
        if args.quantize is not None:
            parser.error("--target tensorrt takes an fp32 encoder (TensorRT builds fp16 engines); drop --quantize")
        if args.position_table_frames != DEFAULT_FRAMES:
            parser.error("--target tensorrt exports no position tables; drop --position-table-frames")
        if args.from_layout is not None or args.layout is not None:
            parser.error("--target tensorrt exports from a NeMo checkpoint; it does not go with --from or --layout")
    if args.context is not None and args.attention != "local":
        parser.error("--context needs --attention local")
    args.local_attention = None
    if args.attention == "local":
        if args.context is None:
            parser.error("--attention local needs --context LEFT,RIGHT (encoder frames, e.g. 128,128)")
        try:
            args.local_attention = parse_context(args.context)
        except ConversionError as exc:
            parser.error(f"--context: {exc}")
    if args.languages is not None:
        try:
            args.languages = list(parse_languages(args.languages))
        except ConversionError as exc:
            parser.error(f"--languages: {exc}")
    return args


def _quiet_nemo() -> None:
    # CRITICAL: NeMo logs a failed restore at ERROR with its traceback; convert-model's one line says it
    for name in ("nemo_logger", "nemo", "nv_one_logger", "lightning", "pytorch_lightning", "torch"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.CRITICAL)
    except Exception:  # NeMo missing: the load step reports it
        pass


def _sigterm_as_exit() -> contextlib.AbstractContextManager[threading.Event]:
    """While converting, turn SIGTERM into ``SystemExit(143)`` so that a terminated conversion removes its
    staging directory (``convert`` cleans up on any exception; the default SIGTERM action would skip that)."""
    return sigterm_raises(lambda: SystemExit(128 + signal.SIGTERM))


def run(args: argparse.Namespace) -> int:
    """The command; an interruption at any point (imports, conversion, writing a layout) removes what it was
    writing and ends in one line: 130 for SIGINT, 143 for SIGTERM."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        with _sigterm_as_exit() as terminated:
            code = _run(args, terminated)
        if terminated.is_set():  # the stop was swallowed too late for the step checks
            outcome = f" after {args.out_dir} was written" if code == 0 else "; nothing was written"
            print(f"convert-model: terminated{outcome}", file=sys.stderr)
            return 128 + signal.SIGTERM
        return code
    except KeyboardInterrupt:
        print("convert-model: interrupted; nothing was written", file=sys.stderr)
        return 130
    except SystemExit:
        if terminated.is_set():
            print("convert-model: terminated; nothing was written", file=sys.stderr)
        raise


def _needs_onnx(what: str) -> int | None:
    """2 with a one-line error when the ``onnx`` package (graph rewriting without NeMo) is missing, else None."""
    if importlib.util.find_spec("onnx") is not None:
        return None
    print(f"convert-model: error: {what} needs the onnx package: pip install onnx "
          "(or the export extra, pip install 'parakeet-runtime[export]', which brings NeMo and torch too)",
          file=sys.stderr)
    return 2


def _run(args: argparse.Namespace, terminated: threading.Event) -> int:
    if args.from_layout is not None:
        return _needs_onnx(f"--from {args.from_layout}") or _run_from_layout(args)
    if args.layout is not None and (Path(args.source) / "manifest.json").is_file():
        return _needs_onnx(f"--layout {args.layout}") or _run_layout(args, Path(args.source), terminated)
    try:
        import nemo  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        print(f"convert-model: error: needs the export extra (pip install 'parakeet-runtime[export]'): {exc}",
              file=sys.stderr)
        return 2
    if not args.verbose:
        _quiet_nemo()

    work: Path | None = None
    out_dir = args.out_dir
    if args.layout is not None:
        # This project's layout is only a step: converted beside OUT_DIR and removed after, so a failure while
        # writing onnx-asr's layout leaves OUT_DIR as it was (OUT_DIR is checked first: no conversion is wasted).
        try:
            target = check_output_dir(args.source, args.out_dir, overwrite=args.overwrite)
            work = staging_dir(target)
        except ConversionError as exc:
            print(f"convert-model: error: {_one_line(str(exc))}", file=sys.stderr)
            return 2
        out_dir = str(work / "model")
    try:
        return _convert(args, out_dir, terminated)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _convert(args: argparse.Namespace, out_dir: str, terminated: threading.Event) -> int:
    """The conversion of a checkpoint (or a pretrained name) into ``out_dir``, then ``--layout``'s rewrite."""
    from .convert import STEPS, convert

    started = time.monotonic()

    def on_step(index: int, name: str) -> None:
        if terminated.is_set():  # SIGTERM came, but its exit was swallowed (inside a finalizer, or a library's
            raise SystemExit(128 + signal.SIGTERM)  # catch-all): stop before the next step, nothing written
        print(f"[{index + 1}/{len(STEPS)}] {name} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)

    try:
        with warnings.catch_warnings():
            if not args.verbose:  # library warnings (NeMo, torch) would break the one-line error contract
                warnings.simplefilter("ignore")
            report = convert(args.source, out_dir, overwrite=args.overwrite, probe_audio=args.probe_audio,
                             verify=not args.skip_verify, quantize=args.quantize,
                             int8_weights=args.int8_weights or DEFAULT_WEIGHTS,
                             int8_activations=args.int8_activations or ACTIVATIONS[0],
                             position_table_frames=args.position_table_frames, languages=args.languages,
                             local_attention=args.local_attention, on_step=on_step, target=args.target)
    except ParityError as exc:
        print(f"convert-model: parity check failed: {_one_line(str(exc))}", file=sys.stderr)
        return 3
    except ConversionError as exc:
        if args.verbose:
            logger.error("conversion failed", exc_info=exc)
        print(f"convert-model: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # a failure convert-model has no message for: one line, the traceback with -v
        if args.verbose:
            logger.error("unexpected failure", exc_info=exc)
        hint = "" if args.verbose else " (run with -v for the traceback)"
        print(f"convert-model: error: unexpected {type(exc).__name__}: {_one_line(str(exc))}{hint}", file=sys.stderr)
        return 2
    if args.layout is not None:
        return _run_layout(args, report.out_dir, terminated, converted=report)
    _print_summary(args, report)
    return 0


def _run_from_layout(args: argparse.Namespace) -> int:
    """``--from onnx-asr|sherpa-onnx``: no NeMo, no torch."""
    from .layouts import convert_from_layout

    try:  # SIGTERM and SIGINT are handled around the whole command (run)
        done = convert_from_layout(args.from_layout, args.source, args.out_dir, overwrite=args.overwrite,
                                   precision=args.precision, probe_audio=args.probe_audio,
                                   verify=not args.skip_verify, languages=args.languages or ())
    except (ConversionError, OSError) as exc:
        if args.verbose:
            logger.error("conversion failed", exc_info=exc)
        reason = f"cannot write {args.out_dir}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
        print(f"convert-model: error: {_one_line(reason)}", file=sys.stderr)
        return 2
    m = done.manifest
    print(f"converted {args.source} ({done.layout} layout) -> {done.out_dir}")
    print(f"  vocabulary {m.decoding.vocab_size}, durations {list(m.decoding.durations)}, "
          f"max_symbols {m.decoding.max_symbols}, subsampling x{m.encoder.subsampling_factor}, "
          f"{m.features.n_mels} mels at {m.features.sample_rate} Hz, encoder {m.encoder.precision}")
    if done.clips:
        print(f"  {len(done.clips)} probe clips transcribed as by the source directory")
    else:
        print("  check skipped (--skip-verify)")
    return 0


def _run_layout(args: argparse.Namespace, model_dir: Path, terminated: threading.Event,
                converted: ConversionReport | None = None) -> int:
    """``--layout onnx-asr``: write a model directory (given, or just converted beside OUT_DIR) in onnx-asr's
    layout into OUT_DIR."""
    from .layouts import write_onnx_asr_layout

    try:
        target = check_output_dir(args.source if converted is not None else model_dir, args.out_dir,
                                  overwrite=args.overwrite)
        staging = staging_dir(target)
    except ConversionError as exc:
        print(f"convert-model: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    try:
        write_onnx_asr_layout(model_dir, staging)
        staging.chmod(0o755)  # mkdtemp's directory is owner-only (the files are the umask's, or hard links)
        if terminated.is_set():  # SIGTERM came but its exit was swallowed: nothing is put in place
            raise SystemExit(128 + signal.SIGTERM)
        move_into_place(staging, target, overwrite=args.overwrite)
    except (ConversionError, ParakeetRuntimeError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        reason = f"cannot write {target}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
        print(f"convert-model: error: {_one_line(reason)}", file=sys.stderr)
        return 2
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if converted is not None:
        _print_summary(args, dataclasses.replace(converted, out_dir=target))
    print(f"wrote {target} in onnx-asr's NeMo TDT layout (onnx_asr.load_model('nemo-conformer-tdt', '{target}'))")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_summary(args: argparse.Namespace, report: ConversionReport) -> None:
    m = report.manifest
    size = sum(p.stat().st_size for p in report.out_dir.iterdir() if p.is_file())
    print(f"converted {args.source} -> {report.out_dir} in {report.seconds:.0f} s ({size / 1e6:.1f} MB)")
    print(f"  vocabulary {m.decoding.vocab_size}, durations {list(m.decoding.durations)}, "
          f"max_symbols {m.decoding.max_symbols}, subsampling x{m.encoder.subsampling_factor}, "
          f"{m.features.n_mels} mels at {m.features.sample_rate} Hz")
    for probe in report.probes:
        print(f"  parity {Path(probe.audio).name}: {probe.tokens} tokens identical to NeMo; "
              f"features max diff {probe.feature_max_abs_diff:.1e}, encoder max diff {probe.encoder_max_abs_diff:.1e}")
    if not report.probes:
        print("  parity check skipped (--skip-verify)")
    if m.provenance.dropped_heads:
        print(f"  not converted: the checkpoint's {', '.join(h.upper() for h in m.provenance.dropped_heads)} head "
              f"(this directory decodes with its TDT head)")
    export = m.provenance.encoder_export
    if export is not None:
        tables = (f"position tables in {export.position_table_layers} layers (inputs up to "
                  f"{export.position_table_frames} encoder frames)" if export.position_table_layers
                  else "no position tables")
        print(f"  encoder: fused attention in {export.fused_attention_layers} layers, {tables}")
    if m.encoder.target != "default":
        built = (f"; TensorRT {m.encoder.tensorrt_version} fp16 engine built on {m.encoder.tensorrt_gpu}"
                 if m.encoder.tensorrt_version else "; no TensorRT engines (built at the first load on a GPU)")
        print(f"  encoder target {m.encoder.target}: standard ONNX operators, checked against TensorRT's list{built}")
    quantization = m.provenance.quantization
    if quantization is not None:
        agreement = quantization.token_agreement_with_fp32
        scaled = f", activations {quantization.activations}" if quantization.activations else ""
        print(f"  encoder quantised to {quantization.precision} ({quantization.weights} weights{scaled}): "
              f"token agreement with fp32 {'not measured' if agreement is None else f'{agreement:.4f}'} "
              f"({quantization.identical_clips}/{quantization.clips} probe clips identical)")
        signed = quantization.signed_int8_token_agreement_with_fp32
        if m.encoder.signed_int8_file is not None:
            print(f"  and {m.encoder.signed_int8_file} (int8 weights, loaded on CPUs with VNNI/AMX): token agreement "
                  f"{'not measured' if signed is None else f'{signed:.4f}'} "
                  f"({quantization.signed_int8_identical_clips}/{quantization.clips} probe clips identical)")
    attention = m.encoder.attention
    if attention.context is not None:
        print(f"  local attention, context {attention.context[0]},{attention.context[1]} encoder frames: "
              "no length limit")
    languages = ", ".join(m.languages) if m.languages else "not recorded (set them with --languages)"
    print(f"  model name {m.model_name}, languages: {languages}")


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
