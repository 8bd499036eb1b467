"""``parakeet-runtime``: transcribe files from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .engine import Engine, default_model_dir, sample_audio_path
from .errors import ParakeetRuntimeError
from .formats import FORMATS, render
from .options import BatchingOptions, SessionOptions

DEMO_NOTE = (
    "Without --model the bundled demo model is used: a tiny model trained on synthetic (espeak-ng) speech, "
    "useful to check the installation, not for real transcription. Convert a real Parakeet checkpoint with "
    "`convert-model nvidia/parakeet-tdt-0.6b-v2 parakeet-v2` (needs the export extra and internet) and pass "
    "--model parakeet-v2."
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="parakeet-runtime", description="Parakeet TDT speech recognition.")
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser(
        "transcribe", help="transcribe audio files", description="Transcribe audio files.", epilog=DEMO_NOTE
    )
    transcribe.add_argument("files", nargs="*", type=Path,
                            help="audio files (any format soundfile reads); default: the bundled sample clip")
    transcribe.add_argument("--model", type=Path, default=None, help="model directory written by convert-model")
    transcribe.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    transcribe.add_argument("--threads", type=int, default=None, help="encoder threads (default: all cores)")
    transcribe.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        transcribe.error("--threads must be at least 1")
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


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
