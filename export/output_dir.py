"""Where a conversion writes: checked before any work, and a staging folder beside it.

Every conversion writes into a staging folder next to ``OUT_DIR`` and renames it into place at the end,
replacing ``OUT_DIR`` with ``--overwrite``. That replacement must never reach the source: an ``OUT_DIR`` that is
the source, contains it (``convert-model model.nemo .`` from the checkpoint's folder) or lies inside it is
refused, as is an ``OUT_DIR`` that is a file, before anything is loaded or deleted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConversionError


def check_output_dir(source: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str], *,
                     overwrite: bool) -> Path:
    """``out_dir`` as a path, once it is safe to write (``source``: the checkpoint or directory converted, or a
    pretrained name, which has no path to protect).

    Raises:
        ConversionError: ``out_dir`` exists and ``overwrite`` is off, is a file, is the source, contains it or
            lies inside it.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"{out} is a file, not a directory: give a directory for the model")
    if source is not None and Path(source).exists():
        origin, target = Path(source).resolve(), out.resolve()
        if origin == target or target in origin.parents:
            raise ConversionError(f"{out} would replace the source {source} itself: write the model elsewhere")
        if origin.is_dir() and origin in target.parents:
            raise ConversionError(f"{out} is inside the source directory {source}: write the model elsewhere")
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} already exists (pass --overwrite to replace it)")
    return out


def staging_dir(out_dir: Path) -> Path:
    """A new, empty, owner-only folder beside ``out_dir`` (its parents created), renamed into place at the end.

    Raises:
        ConversionError: the folder cannot be created there (no permission, a file in the way, read-only).
    """
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise ConversionError(f"cannot write {out_dir}: {exc.strerror or exc}") from exc
