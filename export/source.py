"""Resolve and load the conversion source: a ``.nemo`` archive or a pretrained model name."""

from __future__ import annotations

import hashlib
import logging
import tarfile
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


def _looks_like_path(spec: str) -> bool:
    # Pretrained names look like "nvidia/parakeet-tdt-0.6b-v2"; files end in .nemo or are anchored.
    return spec.endswith(".nemo") or spec.startswith((".", "/", "~")) or Path(spec).suffix != ""


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
    if _looks_like_path(spec):
        raise ConversionError(f"checkpoint not found: {spec}")
    return Source(spec=spec, path=None, sha256="")


def load_model(source: Source) -> tuple[Any, Source]:
    """Load the NeMo ASR model on the CPU, in eval mode.

    Raises:
        ConversionError: NeMo cannot restore the checkpoint or fetch the pretrained name.
    """
    from nemo.collections.asr.models import ASRModel

    if source.path is not None:
        try:
            model = ASRModel.restore_from(str(source.path), map_location="cpu")
        except Exception as exc:  # NeMo raises many unrelated types for a bad archive
            raise ConversionError(f"NeMo cannot load {source.path}: {type(exc).__name__}: {exc}") from exc
        model.eval()
        return model, source
    try:
        model = ASRModel.from_pretrained(source.spec, map_location="cpu")
    except Exception as exc:
        raise ConversionError(
            f"cannot get pretrained model {source.spec!r} (it needs internet access to Hugging Face or NGC, "
            f"or pass a .nemo path): {type(exc).__name__}: {exc}"
        ) from exc
    model.eval()
    cached = getattr(model, "_restore_path", None) or ""
    sha = _sha256(Path(cached)) if cached and Path(cached).is_file() else ""
    return model, Source(spec=source.spec, path=None, sha256=sha)
