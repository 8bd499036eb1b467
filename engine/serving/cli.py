"""``parakeet-runtime``: transcribe files from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..engine import Engine, default_model_dir, sample_audio_path
from ..errors import ParakeetRuntimeError
from ..model.manifest import load_manifest
from ..options import BatchingOptions, SessionOptions
from .formats import FORMATS, render

DEMO_NOTE = (
    "Without --model the bundled demo model is used: a small model trained on synthetic (espeak-ng) speech "
    "with a 360-word vocabulary, useful to check the installation, not for real transcription. "
    "Convert a real Parakeet checkpoint with "
    "`convert-model nvidia/parakeet-tdt-0.6b-v2 parakeet-v2` (needs the export extra and internet) and pass "
    "--model parakeet-v2."
)

THREADS_HELP = ("ONNX Runtime intra-op threads for the encoder and the large step graphs (default: ONNX Runtime's, "
                "one per physical core)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="parakeet-runtime", description="Parakeet TDT speech recognition.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser(
        "transcribe", help="transcribe audio files", description="Transcribe audio files.", epilog=DEMO_NOTE
    )
    transcribe.add_argument("files", nargs="*", type=Path,
                            help="audio files (any format soundfile reads); default: the bundled sample clip")
    transcribe.add_argument("--model", type=Path, default=None, help="model directory written by convert-model")
    transcribe.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    transcribe.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    transcribe.add_argument("-v", "--verbose", action="store_true", help="show library logs")

    serve = commands.add_parser(
        "serve", help="serve an OpenAI-compatible HTTP API",
        description="Serve POST /v1/audio/transcriptions (OpenAI-compatible), GET /health and GET /v1/models. "
        "Needs the server extra: pip install 'parakeet-runtime[server]'.", epilog=DEMO_NOTE,
    )
    serve.add_argument("--model", type=Path, default=None, help="model directory written by convert-model")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    serve.add_argument("--max-batch-size", type=int, default=16, help="dynamic batch size (default: 16)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="batching window (default: 5 ms)")
    serve.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload (default: 25 MB)")
    serve.add_argument("--max-in-flight", type=int, default=64,
                       help="requests in flight before 503 (default: 64)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.add_argument("-v", "--verbose", action="store_true", help="show library logs")

    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    files = list(args.files) or [sample_audio_path()]
    try:
        engine = Engine.load(
            args.model if args.model is not None else default_model_dir(),
            session=SessionOptions(threads=args.threads),
            batching=BatchingOptions(enabled=False),
        )
    except ParakeetRuntimeError as exc:
        print(f"parakeet-runtime: error: {exc}", file=sys.stderr)
        return 2
    results = []
    failed = 0
    for path in files:
        try:
            results.append((str(path), engine.transcribe(path)))
        except ParakeetRuntimeError as exc:
            failed += 1
            print(f"parakeet-runtime: error: {exc}", file=sys.stderr)
    if results:
        sys.stdout.write(render(results, args.format))
    return 1 if failed else 0


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        import uvicorn

        from .server import ServerOptions, create_app
    except ImportError as exc:
        print(f"parakeet-runtime: error: serve needs the server extra "
              f"(pip install 'parakeet-runtime[server]'): {exc}", file=sys.stderr)
        return 2
    model_dir = args.model if args.model is not None else default_model_dir()
    batching = BatchingOptions(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                               max_queue=max(args.max_in_flight, args.max_batch_size) * 2)

    def load() -> Engine:
        return Engine.load(model_dir, session=SessionOptions(threads=args.threads), batching=batching)

    options = ServerOptions(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_in_flight=args.max_in_flight,
                            close_engine_on_shutdown=True)
    try:
        # Fail fast, before binding the port, on a directory that cannot be a model.
        load_manifest(model_dir)
    except ParakeetRuntimeError as exc:
        print(f"parakeet-runtime: error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(load, options), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=30)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
