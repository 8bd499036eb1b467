"""Resolve and load the conversion source: a ``.nemo`` archive or a pretrained model name."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConversionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where the checkpoint came from."""

    spec: str
    """What the user passed."""
    path: Path | None
    """The ``.nemo`` file, when the source is a file."""
    sha256: str
    """SHA-256 of the ``.nemo`` file (of the cached download for pretrained names)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_PRETRAINED_NAME = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")
"""``owner/name`` (Hugging Face, e.g. ``nvidia/parakeet-tdt-0.6b-v2``) or a bare NGC name."""

_CHECKPOINT_SUFFIXES = (".nemo", ".ckpt", ".pt", ".pth", ".tar", ".tar.gz", ".zip", ".onnx")


def is_pretrained_name(spec: str) -> bool:
    """Whether a source that is not an existing file names a pretrained model.

    Names have the ``owner/name`` shape, and may contain dots (``nvidia/parakeet-tdt-0.6b-v2``): the dot in
    ``0.6b-v2`` is not a file extension. Anchored paths (``./``, ``/``, ``~``), deeper paths and names ending
    in a checkpoint file's extension are paths.
    """
    if spec.startswith((".", "/", "~")) or spec.lower().endswith(_CHECKPOINT_SUFFIXES):
        return False
    return _PRETRAINED_NAME.fullmatch(spec) is not None


def model_slug(spec: str) -> str:
    """A short name for the model: the pretrained name's last part, or the ``.nemo`` file's stem, lower-case,
    with anything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``-``."""
    name = Path(spec).stem if spec.lower().endswith(".nemo") else spec.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")
    return slug or "model"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_nemo_file(path: Path) -> None:
    """Fail fast, before importing NeMo, on a file that cannot be a ``.nemo`` archive."""
    if path.is_dir():
        raise ConversionError(f"{path} is a directory, expected a .nemo file")
    if not tarfile.is_tarfile(path):
        raise ConversionError(f"{path} is not a .nemo archive (not a tar file)")
    try:
        with tarfile.open(path) as archive:
            names = archive.getnames()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ConversionError(f"{path} is a damaged .nemo archive: {exc}") from exc
    if not any(name.endswith("model_config.yaml") for name in names):
        raise ConversionError(f"{path} is not a NeMo checkpoint: it has no model_config.yaml")
    if not any(name.endswith(".ckpt") for name in names):
        raise ConversionError(f"{path} is not a NeMo checkpoint: it has no model weights")


def resolve(spec: str) -> Source:
    """Check a source before the (slow) load.

    Raises:
        ConversionError: a missing file, or a file that is not a ``.nemo`` archive.
    """
    path = Path(spec).expanduser()
    if path.exists():
        check_nemo_file(path)
        return Source(spec=spec, path=path, sha256=_sha256(path))
    if not is_pretrained_name(spec):
        raise ConversionError(f"checkpoint not found: {spec}")
    return Source(spec=spec, path=None, sha256="")


@contextlib.contextmanager
def _nemo_errors() -> Iterator[list[str]]:
    """The ``Error(s):`` lines NeMo logs while the block runs: a failed restore logs its real cause (a tokenizer
    that does not parse) and then raises an unrelated consequence, without chaining them. NeMo's own handlers
    print them only where its logger was already set to (``-v``: everything; otherwise nothing)."""
    found: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.extend(line.split("Error(s):", 1)[1].strip() for line in record.getMessage().splitlines()
                         if "Error(s):" in line)

    nemo = logging.getLogger("nemo_logger")
    saved = nemo.handlers[:], nemo.level, nemo.propagate
    shown = nemo.getEffectiveLevel() <= logging.ERROR
    nemo.handlers = [Capture(), *(saved[0] if shown else [])]
    nemo.propagate = saved[2] and shown
    nemo.setLevel(min(nemo.getEffectiveLevel(), logging.ERROR))
    try:
        yield found
    finally:
        nemo.handlers, nemo.propagate = saved[0], saved[2]
        nemo.setLevel(saved[1])


def _reasons(exc: BaseException) -> str:
    """``exc`` and, first, the exception it came from (the end of its chain): NeMo often ends a failed restore
    with a consequence (``Can't instantiate abstract class ASRModel``) of the real cause (``could not parse
    ModelProto``, a damaged tokenizer)."""
    root, seen = exc, {id(exc)}
    while (nested := root.__cause__ or root.__context__) is not None and id(nested) not in seen:
        seen.add(id(nested))
        root = nested
    last = f"{type(exc).__name__}: {exc}"
    return last if root is exc else f"{type(root).__name__}: {root} (then {last})"


def load_model(source: Source) -> tuple[Any, Source]:
    """Load the NeMo ASR model on the CPU, in eval mode.

    Raises:
        ConversionError: NeMo cannot restore the checkpoint or fetch the pretrained name.
    """
    from nemo.collections.asr.models import ASRModel

    if source.path is not None:
        try:
            with _nemo_errors() as logged:
                model = ASRModel.restore_from(str(source.path), map_location="cpu")
        except Exception as exc:  # NeMo raises many unrelated types for a bad archive
            first = f"{logged[0]}; " if logged else ""
            raise ConversionError(f"NeMo cannot load {source.path}: {first}{_reasons(exc)}") from exc
        model.eval()
        return model, source
    try:
        model = ASRModel.from_pretrained(source.spec, map_location="cpu")
    except Exception as exc:  # huggingface_hub / httpx / NeMo raise many types for a failed download
        file_name = f"{model_slug(source.spec)}.nemo"
        raise ConversionError(
            f"download of pretrained model {source.spec!r} failed ({type(exc).__name__}: {_one_line(str(exc))}); "
            f"it needs internet access to Hugging Face (and HF_HUB_OFFLINE unset). Without it, download "
            f"{file_name} on a machine that has it and convert the local file: convert-model path/to/{file_name} "
            "OUT_DIR"
        ) from exc
    model.eval()
    cached = getattr(model, "_restore_path", None) or ""
    sha = _sha256(Path(cached)) if cached and Path(cached).is_file() else ""
    return model, Source(spec=source.spec, path=None, sha256=sha)
