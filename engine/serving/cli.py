"""``parakeet-runtime``: transcribe files from the command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, get_args

from .. import __version__
from ..engine import Engine, default_model_dir, sample_audio_path
from ..errors import OptionsError, ParakeetRuntimeError
from ..memory import limit_malloc_arenas
from ..model.devices import DEVICES, device_providers
from ..model.layouts import check_model_dir
from ..options import (
    Backend,
    BatchingOptions,
    ConfidenceOptions,
    DecoderWeights,
    LongFormOptions,
    Precision,
    SessionOptions,
)
from ..results import Transcript
from .batch import OutputPlan, PartialWriter, abandoned_workers, transcribe_inputs, write_combined, write_outputs
from .formats import FORMATS, render
from .inputs import BatchInput, collect_inputs
from .options import ServerOptions
from .progress import Progress
from .signals import interruptions_deferred, sigterm_raises

DEMO_NOTE = (
    "Without --model the bundled demo model is used: a small model trained on synthetic (espeak-ng) speech "
    "with a 360-word vocabulary, useful to check the installation, not for real transcription. "
    "Convert a real Parakeet checkpoint with "
    "`convert-model nvidia/parakeet-tdt-0.6b-v2 parakeet-v2` (needs the export extra and internet) and pass "
    "--model parakeet-v2."
)

API_KEY_ENV = "PARAKEET_API_KEY"
RAY_APP_NAME = "parakeet"
"""The Serve application ``serve --ray`` runs (replacing one of that name on the cluster)."""
CONFIDENCE_HELP = ("give tokens, words and segments NeMo's confidence scores (NeMo's default measure: tsallis "
                   "entropy, alpha 0.33, min over a word's tokens) in the JSON outputs")
DEVICE_HELP = ("where the graphs run: cpu, cuda (ONNX Runtime's CUDA provider, the gpu extra) or tensorrt (its "
               "TensorRT provider, fp16); a device that cannot run here is an error, never a CPU fall-back "
               "(default: ONNX Runtime's default providers, CUDA when installed, else the CPU)")
MODEL_HELP = ("a model directory written by convert-model, or one in onnx-asr's or sherpa-onnx's layout, or a Hugging "
              "Face hub name of one such as istupakov/parakeet-tdt-0.6b-v3-onnx (downloaded once; needs the hub "
              "extra) (default: the bundled demo model)")
THREADS_HELP = ("ONNX Runtime intra-op threads for the encoder and the large step graphs (default: ONNX Runtime's, "
                "one per physical core)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="parakeet-runtime", description="Parakeet TDT speech recognition.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser(
        "transcribe", help="transcribe audio files", description="Transcribe audio files.", epilog=DEMO_NOTE
    )
    transcribe.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="audio files (anything soundfile reads; MP4/M4A, WebM and AAC with the av extra), globs ('**' "
        "recurses), directories (searched recursively for audio extensions) or '-' for one file on standard "
        "input; default: the bundled sample clip")
    transcribe.add_argument("--manifest", action="append", type=Path, default=[], metavar="FILE",
                            help="a list of audio files: one path per line, or NeMo's JSON lines with "
                            "audio_filepath (repeatable)")
    transcribe.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    transcribe.add_argument("--format", action="append", choices=FORMATS, default=None,
                            help="output format (default: text); repeatable with --output-dir, where jsonl is "
                            "one transcripts.jsonl for all inputs")
    transcribe.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                            help="write one file per input and format under DIR (its path relative to the "
                            "inputs' common folder, plus .txt/.json/.srt/.vtt) instead of printing; a rerun "
                            "skips inputs whose outputs all exist")
    transcribe.add_argument("--overwrite", action="store_true",
                            help="with --output-dir: transcribe every input again, even where outputs exist")
    transcribe.add_argument("--batch-size", type=int, default=16, metavar="N",
                            help="BatchingOptions.max_batch_size (default: 16)")
    transcribe.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    transcribe.add_argument("--device", choices=DEVICES, default=None, help=DEVICE_HELP)
    transcribe.add_argument("--confidence", action="store_true", help=CONFIDENCE_HELP)
    _backend_arguments(transcribe)
    _long_form_arguments(transcribe)
    transcribe.add_argument("--ray", default=None, metavar="ADDRESS",
                            help="transcribe on a Ray cluster ('auto': the local one; needs the ray extra): "
                            "Ray Data actors load the model on the nodes, which must read the inputs (give "
                            "paths on shared storage); outputs are written here as without --ray")
    transcribe.add_argument("--ray-actors", type=int, default=None, metavar="N",
                            help="with --ray: actors, each loading the model once (default: one per node)")
    transcribe.add_argument("-v", "--verbose", action="store_true", help="show library logs")

    serve = commands.add_parser(
        "serve", help="serve an OpenAI-compatible HTTP API",
        description="Serve POST /v1/audio/transcriptions (OpenAI-compatible), GET /health and GET /v1/models. "
        "Needs the server extra: pip install 'parakeet-runtime[server]'.", epilog=DEMO_NOTE,
    )
    serve.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    serve.add_argument("--device", choices=DEVICES, default=None, help=DEVICE_HELP)
    serve.add_argument("--confidence", action="store_true", help=CONFIDENCE_HELP)
    _backend_arguments(serve)
    _long_form_arguments(serve)
    serve.add_argument("--max-batch-size", type=int, default=16, help="dynamic batch size (default: 16)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="batching window (default: 5 ms)")
    serve.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload (default: 25 MB)")
    serve.add_argument("--max-audio-s", type=float, default=3600.0, metavar="S",
                       help="longest audio per request, read from the file's header before decoding, else 400 "
                       "audio_too_long (default: 3600, or the model's own limit when lower)")
    serve.add_argument("--max-in-flight", type=int, default=64,
                       help="requests in flight before 503 (default: 64)")
    serve.add_argument("--warm-up-seconds", type=float, default=None, metavar="S",
                       help="before taking requests, run the model once on S seconds of silence, so that the first "
                            "requests up to S seconds do not pay the runtime's first-run costs (default: none)")
    serve.add_argument("--warm-up-batch", type=int, default=1, metavar="N",
                       help="with --warm-up-seconds, warm up on N such inputs as one batch, so that the first batches "
                       "up to N do not pay first-run costs either (e.g. --max-batch-size; default: 1)")
    serve.add_argument("--header-timeout-s", type=float, default=10.0, metavar="S",
                       help="a request's headers must arrive within S seconds of connecting (or of a kept-alive "
                       "connection's next request starting), else the connection is closed (default: 10)")
    serve.add_argument("--body-timeout-s", type=float, default=30.0, metavar="S",
                       help="the whole request body must arrive within S seconds, else 408 (default: 30)")
    serve.add_argument("--keep-alive-s", type=int, default=5, metavar="S",
                       help="close idle keep-alive connections after S seconds (default: 5)")
    serve.add_argument("--max-connections", type=int, default=256, metavar="N",
                       help="open connections before 503 (default: 256)")
    serve.add_argument("--shutdown-grace-s", type=int, default=30, metavar="S",
                       help="on SIGTERM, requests in flight get S seconds to finish, then 503 (default: 30)")
    serve.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None, metavar="KEY",
                       help=f"require 'Authorization: Bearer KEY' on every endpoint but /health (default: the "
                       f"{API_KEY_ENV} environment variable; none: no key)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="allow browser calls from ORIGIN ('*': any) (repeatable; default: none)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                       help="the log level of the server (uvicorn) and of the library (default: info: the model's "
                       "loading and warm-up, warnings; debug adds each request)")
    serve.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                       help="serve through Ray Serve on a Ray cluster (default address: auto, the local one; "
                       "needs the ray extra): replicas behind Serve's HTTP proxy on --host/--port, requests "
                       "batched across connections")
    serve.add_argument("--replicas", type=int, default=1, metavar="N",
                       help="with --ray: replicas, each loading the model once (default: 1)")
    serve.add_argument("--max-replicas", type=int, default=None, metavar="N",
                       help="with --ray: autoscale between --replicas and N replicas on requests in flight")
    serve.add_argument("-v", "--verbose", action="store_true", help="library logs at INFO at least")

    args, extra = parser.parse_known_args(argv)
    if extra:  # inputs after an option (`transcribe a.wav --format json b.wav`) are inputs too
        before, after = extra, []
        if "--" in extra:  # everything after it is an input, even `-x.wav`
            cut = extra.index("--")
            before, after = extra[:cut], extra[cut + 1:]
        if args.command != "transcribe" or any(e.startswith("-") and e != "-" for e in before):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.inputs = [*args.inputs, *before, *after]
    if args.precision != "fp32" and args.backend != "openvino":
        parser.error(f"--precision {args.precision} needs --backend openvino")
    if args.command == "serve":
        if not 0 <= args.port <= 65535:
            parser.error("--port must be between 0 and 65535")
        if not (args.max_upload_mb > 0 and math.isfinite(args.max_upload_mb)):  # megabytes here, bytes in the options
            parser.error("--max-upload-mb must be a positive number")
        if args.replicas < 1 or (args.max_replicas is not None and args.max_replicas < args.replicas):
            parser.error("--replicas must be at least 1 and --max-replicas at least --replicas")
        if args.ray is None and (args.replicas != 1 or args.max_replicas is not None):
            parser.error("--replicas and --max-replicas need --ray")
    if args.command == "transcribe":
        args.format = list(dict.fromkeys(args.format or ["text"]))
        if args.output_dir is None and len(args.format) > 1:
            parser.error("several --format values need --output-dir")
        if args.overwrite and args.output_dir is None:
            parser.error("--overwrite needs --output-dir")
        if args.ray_actors is not None and (args.ray is None or args.ray_actors < 1):
            parser.error("--ray-actors needs --ray and must be at least 1")
        if args.ray is not None and args.output_dir is None:
            parser.error("--ray needs --output-dir")
    flags = {**_FLAGS, **(_SERVE_FLAGS if args.command == "serve" else _TRANSCRIBE_FLAGS)}
    try:
        args.options = _options(args)
    except OptionsError as exc:  # the options' own checks, said in terms of the flags
        requirement = exc.requirement
        for option_field, flag in flags.items():
            requirement = requirement.replace(option_field, flag)
        parser.error(f"{flags.get(exc.field, exc.field)} must be {requirement}, got {exc.value!r}")
    return args


def _backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=get_args(Backend), default="onnxruntime",
                        help="what runs the encoder on the CPU (default: onnxruntime); openvino needs the openvino "
                        "extra and an fp32 model directory; decoding stays on ONNX Runtime")
    parser.add_argument("--precision", choices=get_args(Precision), default="fp32",
                        help="the encoder's compute precision (default: fp32); bf16 needs --backend openvino and a "
                        "CPU with AVX-512 BF16 or AMX; int8 needs --backend openvino (int8 weights made at load)")
    parser.add_argument("--decoder-weights", choices=get_args(DecoderWeights), default="auto",
                        help="what the decoding step's products read: fp32 (NeMo's arithmetic), int8 (a quarter of "
                        "the memory traffic; tokens can differ), auto (default: int8 where the encoder is int8 or "
                        "bf16 and the CPU has VNNI/AMX)")


@dataclass(frozen=True)
class _Options:
    """The options the flags make, built (and so checked) when the command line is parsed: a bad value is a usage
    error naming its flag, before any model is loaded."""

    session: SessionOptions
    long_form: LongFormOptions
    batching: BatchingOptions
    server: ServerOptions | None
    """``serve`` only."""


_FLAGS = {"threads": "--threads", "chunk_seconds": "--chunk-s"}
"""The flag that sets each option field, for the usage errors of :func:`_options`'s checks."""
_TRANSCRIBE_FLAGS = {"max_batch_size": "--batch-size"}
_SERVE_FLAGS = {
    "max_batch_size": "--max-batch-size", "max_wait_ms": "--max-wait-ms", "max_audio_s": "--max-audio-s",
    "max_in_flight": "--max-in-flight", "header_timeout_s": "--header-timeout-s", "body_timeout_s": "--body-timeout-s",
    "keep_alive_s": "--keep-alive-s", "max_connections": "--max-connections", "shutdown_grace_s": "--shutdown-grace-s",
    "api_key": "--api-key", "warm_up_seconds": "--warm-up-seconds", "warm_up_batch": "--warm-up-batch",
    "max_upload_bytes": "--max-upload-mb",
}


def _options(args: argparse.Namespace) -> _Options:
    """The options of ``args``' command (``OptionsError`` for a value one of them refuses)."""
    session = SessionOptions(threads=args.threads, backend=args.backend, precision=args.precision,
                             decoder_weights=args.decoder_weights)
    long_form = LongFormOptions(strategy=args.strategy, chunk_seconds=args.chunk_s)
    if args.command != "serve":
        return _Options(session, long_form, BatchingOptions(max_batch_size=args.batch_size), None)
    server = ServerOptions(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_audio_s=args.max_audio_s,
        max_in_flight=args.max_in_flight, header_timeout_s=args.header_timeout_s, body_timeout_s=args.body_timeout_s,
        keep_alive_s=args.keep_alive_s, max_connections=args.max_connections, shutdown_grace_s=args.shutdown_grace_s,
        api_key=args.api_key, cors_origins=tuple(args.cors_origin), close_engine_on_shutdown=True,
        warm_up_seconds=args.warm_up_seconds, warm_up_batch=args.warm_up_batch,
    )
    batching = BatchingOptions(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                               max_queue=max(server.max_in_flight, args.max_batch_size) * 2)
    return _Options(session, long_form, batching, server)


def _long_form_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", choices=("auto", "one_pass", "chunked"), default="auto",
                        help="long inputs: one pass while it fits the memory budget, else chunks (auto); or forced")
    parser.add_argument("--chunk-s", type=float, default=LongFormOptions.chunk_seconds, metavar="S",
                        help=f"chunk length of a chunked transcription (default: {LongFormOptions.chunk_seconds:g})")


def run(args: argparse.Namespace) -> int:
    """``transcribe``: 0 when every input was transcribed (or skipped), 1 when one failed, 2 when the model
    or the input list is unusable, 130 when interrupted (SIGINT; ``main`` makes it 143 for SIGTERM)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        arguments = args.inputs if args.inputs or args.manifest else [str(sample_audio_path())]
        inputs = collect_inputs(arguments, args.manifest, unique=args.output_dir is not None)
        if args.output_dir is not None:
            _check_output_dir(args.output_dir)
        if args.ray is not None:
            check_model_dir(args.model if args.model is not None else default_model_dir())  # fail fast, here
            return _run_on_ray(args, inputs)
        engine = Engine.load(
            args.model if args.model is not None else default_model_dir(),
            session=args.options.session,
            batching=args.options.batching,
            confidence=ConfidenceOptions() if args.confidence else None,
            long_form=args.options.long_form,
            device=args.device,
        )
    except (ParakeetRuntimeError, ValueError) as exc:
        print(f"parakeet-runtime: error: {exc}", file=sys.stderr)
        return 2
    progress = Progress(len(inputs), sys.stderr, enabled=sys.stderr.isatty())
    with engine:
        if args.output_dir is None:
            return _print_transcripts(engine, inputs, args.format[0], progress)
        plan = OutputPlan(args.output_dir, tuple(args.format))
        partials = PartialWriter(plan)

        def finished(item: BatchInput, transcript: Transcript) -> None:
            write_outputs(plan, item, transcript)
            partials.discard(item)

        summary = transcribe_inputs(
            engine, inputs, on_result=finished,
            skip=lambda item: not args.overwrite and plan.complete(item), progress=progress,
            stdin=_stdin(), on_update=partials.update, on_failure=partials.discard,
        )
        if "jsonl" in plan.formats and not summary.interrupted:
            write_combined(plan, inputs)
    print(f"parakeet-runtime: {summary.line()}", file=sys.stderr)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


def _check_output_dir(directory: Path) -> None:
    """``--output-dir`` created (with its parents) and writable, before any input is read.

    Raises:
        ValueError: it cannot be: a file in the way, no permission, a read-only file system.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--output-dir {directory}: {exc.strerror or exc}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"--output-dir {directory}: not writable")


def _run_on_ray(args: argparse.Namespace, inputs: list[BatchInput]) -> int:
    """``transcribe --ray``: the batch mode with the transcription on a Ray cluster (Ray Data)."""
    try:
        import ray

        from ..ray_data import transcribe_inputs_on_ray
    except ImportError as exc:
        print(f"parakeet-runtime: error: --ray needs the ray extra (pip install 'parakeet-runtime[ray]'): {exc}",
              file=sys.stderr)
        return 2
    if any(item.path is None for item in inputs):
        print("parakeet-runtime: error: --ray cannot read standard input ('-'): give files the cluster's nodes "
              "can read", file=sys.stderr)
        return 2
    session, long_form = args.options.session, args.options.long_form
    if not _connect(ray, args.ray, args.verbose):
        return 2
    try:
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        actors = args.ray_actors or max(1, sum(1 for node in nodes if node.get("Alive")))
        plan = OutputPlan(args.output_dir, tuple(args.format))
        progress = Progress(len(inputs), sys.stderr, enabled=len(inputs) > 1 and sys.stderr.isatty())
        summary = transcribe_inputs_on_ray(
            inputs, args.model, on_result=lambda item, transcript: write_outputs(plan, item, transcript),
            skip=lambda item: not args.overwrite and plan.complete(item), progress=progress, concurrency=actors,
            batch_size=args.batch_size, confidence=ConfidenceOptions() if args.confidence else None,
            session=session, long_form=long_form, device=args.device,
        )
        if "jsonl" in plan.formats and not summary.interrupted:
            write_combined(plan, inputs)
    finally:
        ray.shutdown()
    print(f"parakeet-runtime: {summary.line()}", file=sys.stderr)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


def _connect(ray: Any, address: str, verbose: bool) -> bool:
    """Connect this process to the Ray cluster at ``address`` as a driver; False (and the reason on stderr)
    when there is none there."""
    try:
        ray.init(address=address, logging_level=logging.INFO if verbose else logging.WARNING, log_to_driver=verbose)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"parakeet-runtime: error: cannot connect to the Ray cluster at {address}: {exc}", file=sys.stderr)
        return False
    return True


def _print_transcripts(engine: Engine, inputs: list[BatchInput], fmt: str, progress: Progress) -> int:
    """Today's behaviour without --output-dir: every transcript on stdout, in input order, at the end."""
    results: dict[int, Transcript] = {}

    def keep(item: BatchInput, transcript: Transcript) -> None:
        results[item.index] = transcript

    summary = transcribe_inputs(engine, inputs, on_result=keep, progress=progress, stdin=_stdin())
    ordered = [(item.name, results[item.index]) for item in inputs if item.index in results]
    if ordered:  # interrupted too: the finished transcripts are kept either way (nothing was printed before)
        with interruptions_deferred():  # all of it: a Ctrl-C during the write comes after it
            sys.stdout.write(render(ordered, fmt))
            sys.stdout.flush()
    if summary.interrupted:
        print(f"parakeet-runtime: {summary.line()}", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


def _stdin() -> BinaryIO | None:
    """Standard input's bytes, or ``None`` when the process has none (closed, as under some daemons and cron):
    ``sys.stdin`` is then ``None``, and only an input of ``-`` needs it."""
    return sys.stdin.buffer if sys.stdin is not None else None


def serve(args: argparse.Namespace) -> int:
    # --log-level sets the library's level as well as uvicorn's (-v: at least INFO)
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=min(level, logging.INFO) if args.verbose else level,
                        format="%(levelname)s %(message)s")
    if args.ray is not None:
        return _serve_on_ray(args)
    try:
        import uvicorn

        from .http11 import uvicorn_settings
        from .server import create_app
    except ImportError as exc:
        print(f"parakeet-runtime: error: serve needs the server extra "
              f"(pip install 'parakeet-runtime[server]'): {exc}", file=sys.stderr)
        return 2
    model_dir = args.model if args.model is not None else default_model_dir()
    chosen: _Options = args.options
    options = chosen.server
    assert options is not None  # serve's options have one

    def load() -> Engine:
        return Engine.load(model_dir, session=chosen.session, batching=chosen.batching,
                           confidence=ConfidenceOptions() if args.confidence else None, long_form=chosen.long_form,
                           device=args.device)

    try:
        # Fail fast, before binding the port, on a directory that cannot be a model (a hub name is downloaded
        # here; onnx-asr and sherpa-onnx directories have no manifest).
        model_dir = check_model_dir(model_dir)
        if args.device is not None:
            device_providers(args.device, model_dir)  # this onnxruntime build has the device's providers
    except ParakeetRuntimeError as exc:
        print(f"parakeet-runtime: error: {exc}", file=sys.stderr)
        return 2
    limit_malloc_arenas()  # before uvicorn and the engine start their threads
    uvicorn.run(create_app(load, options), host=args.host, port=args.port, log_level=args.log_level,
                **uvicorn_settings(options))
    return 0


def _serve_on_ray(args: argparse.Namespace) -> int:
    """``serve --ray``: the same HTTP API as a Ray Serve application, until SIGINT/SIGTERM."""
    try:
        import ray
        from ray import serve as ray_serve

        from ..ray_serve import app
    except ImportError as exc:
        print(f"parakeet-runtime: error: serve --ray needs the ray extra (pip install 'parakeet-runtime[ray]'): "
              f"{exc}", file=sys.stderr)
        return 2
    try:
        check_model_dir(args.model if args.model is not None else default_model_dir())
    except ParakeetRuntimeError as exc:
        print(f"parakeet-runtime: error: {exc}", file=sys.stderr)
        return 2
    autoscaling = None if args.max_replicas is None else {
        "min_replicas": args.replicas, "max_replicas": args.max_replicas,
        "target_ongoing_requests": args.max_batch_size}
    chosen: _Options = args.options
    application = app(args.model, num_replicas=args.replicas if autoscaling is None else None,
                      autoscaling_config=autoscaling, max_ongoing_requests=args.max_in_flight,
                      confidence=ConfidenceOptions() if args.confidence else None,
                      batch_wait_timeout_s=args.max_wait_ms / 1000, max_batch_size=args.max_batch_size,
                      server=chosen.server, session=chosen.session, long_form=chosen.long_form, device=args.device)
    if not _connect(ray, args.ray, args.verbose):
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda number, frame: stop.set())
    try:
        ray_serve.start(http_options={"host": args.host, "port": args.port,
                                      "keep_alive_timeout_s": args.keep_alive_s}, proxy_location="HeadOnly")
        ray_serve.run(application, name=RAY_APP_NAME, route_prefix="/")
        print(f"parakeet-runtime: serving on http://{args.host}:{args.port} through Ray Serve "
              f"({args.ray}); Ctrl-C stops", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1.0):
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):  # best effort: the cluster may be gone already
            ray_serve.delete(RAY_APP_NAME)
            if not ray_serve.status().applications:  # Serve ran this app only: stop its proxy and controller
                ray_serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    print("parakeet-runtime: stopped", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        return serve(args)
    # SIGTERM stops a batch as Ctrl-C does (the finished outputs kept, the summary printed), instead of killing
    # the process mid-write; the exit code then says which it was (143, as convert-model).
    with sigterm_raises(KeyboardInterrupt) as terminated:
        try:
            code = run(args)
        except KeyboardInterrupt:  # before the batch started (loading the model, listing inputs)
            print("parakeet-runtime: interrupted", file=sys.stderr)
            code = 130
    code = 128 + signal.SIGTERM if code == 130 and terminated.is_set() else code
    if code in (130, 128 + signal.SIGTERM) and abandoned_workers():
        # a worker blocked for good (opening a FIFO nothing writes to): the interpreter would wait for it at exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
