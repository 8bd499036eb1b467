"""What ``parakeet-runtime transcribe`` reads: files, globs, directories, manifests and stdin, as a list of
:class:`BatchInput` with collision-free output names.

Output names mirror each input's path relative to the common root of the inputs (the directories given,
and the folders of the files given), so two ``a.wav`` in different folders never share an output file.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ParakeetRuntimeError

STDIN = "-"
"""The input name that reads one audio file from standard input."""
STDIN_NAME = "stdin"
"""The output name of the audio read from standard input."""
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
    ".w64", ".rf64", ".m4a", ".mp4", ".aac", ".webm", ".mka", ".mkv",
})
"""Files a directory contributes (case-insensitive); files and globs given by name are taken whatever they end in."""
GLOB_CHARACTERS = frozenset("*?[")


class InputListError(ParakeetRuntimeError, ValueError):
    """An input argument or a manifest line that names no audio (a glob or directory with no match, a
    malformed manifest), or two inputs that would write the same output file."""


@dataclass(frozen=True)
class BatchInput:
    """One audio input of a batch."""

    index: int
    """Its place in the list of inputs."""
    name: str
    """How it is shown and labelled in outputs: the path as given or found, or ``-`` for stdin."""
    path: Path | None
    """The file to read; ``None`` for standard input."""
    output_name: PurePosixPath
    """Where its outputs go, relative to ``--output-dir`` (a format's extension is appended)."""


def _is_glob(text: str) -> bool:
    return any(char in GLOB_CHARACTERS for char in text) and not os.path.exists(text)


def _directory_files(directory: Path) -> list[Path]:
    return sorted(
        path for path in directory.rglob("*")
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def read_manifest(manifest: Path) -> list[Path]:
    """The audio paths a manifest lists: one path per line, or NeMo's JSON lines with ``audio_filepath``.
    A relative path is taken relative to the manifest's folder when the file is there (as NeMo does), and
    relative to the working directory otherwise. Blank lines and lines starting with ``#`` are skipped.

    Raises:
        InputListError: the manifest cannot be read, or a JSON line is malformed or lacks ``audio_filepath``.
    """
    try:
        lines = manifest.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark some editors write
    except (OSError, UnicodeDecodeError) as exc:
        raise InputListError(f"cannot read manifest {manifest}: {exc}") from exc
    paths = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                entry = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputListError(f"{manifest}:{number}: not valid JSON ({exc.msg})") from exc
            value = entry.get("audio_filepath") if isinstance(entry, dict) else None
            if not isinstance(value, str) or not value:
                raise InputListError(f"{manifest}:{number}: expected a JSON object with an \"audio_filepath\" "
                                     f"string, found {text[:80]!r}")
            text = value
        path = Path(text).expanduser()
        if not path.is_absolute() and (manifest.parent / path).exists():
            path = manifest.parent / path
        paths.append(path)
    return paths


def collect_inputs(
    arguments: Sequence[str], manifests: Sequence[Path] = (), *, unique: bool = True
) -> list[BatchInput]:
    """Expand files, globs (``**`` recurses), directories (recursively, audio extensions only, hidden
    entries skipped), manifests and ``-`` into inputs, in the order given. With ``unique`` (for output
    files) each file is taken once and no two inputs may share an output name; without it (for printing)
    a file given twice is transcribed twice.

    Raises:
        InputListError: a glob or a directory that matches no audio, ``-`` given twice, a malformed
            manifest or one that lists nothing, or two inputs whose outputs would collide.
    """
    found: list[tuple[str, Path | None]] = []  # (name, file)
    roots: list[str] = []
    stdin_seen = False
    for argument in arguments:
        if argument == STDIN:
            if stdin_seen:
                raise InputListError("'-' (standard input) can be given only once")
            stdin_seen = True
            found.append((STDIN, None))
        elif os.path.isdir(argument):
            files = _directory_files(Path(argument))
            if not files:
                raise InputListError(f"no audio files (by extension) under directory {argument}")
            roots.append(os.path.abspath(argument))
            found.extend((str(path), path) for path in files)
        elif _is_glob(argument):
            matches = sorted(Path(match) for match in glob.glob(argument, recursive=True) if os.path.isfile(match))
            if not matches:
                raise InputListError(f"no files match {argument!r}")
            found.extend((str(path), path) for path in matches)
        else:  # a file; one that does not exist fails when it is read, like any unreadable file
            found.append((argument, Path(argument)))
    for manifest in manifests:
        listed = read_manifest(manifest)
        if not listed:  # as a glob or a directory with nothing in it: an empty run is not a success
            raise InputListError(f"{manifest}: the manifest lists no audio files")
        found.extend((str(path), path) for path in listed)

    roots.extend(os.path.dirname(os.path.abspath(path)) for _, path in found if path is not None)
    root = os.path.commonpath(roots) if roots else os.getcwd()
    inputs: list[BatchInput] = []
    seen: set[str] = set()
    owners: dict[PurePosixPath, str] = {}
    for name, path in found:
        absolute = os.path.abspath(path) if path is not None else STDIN
        output = PurePosixPath(STDIN_NAME if path is None else Path(os.path.relpath(absolute, root)).as_posix())
        if unique:
            if absolute in seen:
                continue
            seen.add(absolute)
            if output in owners:
                raise InputListError(f"{owners[output]} and {name} would write the same outputs ({output}.*)")
            owners[output] = name
        inputs.append(BatchInput(index=len(inputs), name=name, path=path, output_name=output))
    return inputs
