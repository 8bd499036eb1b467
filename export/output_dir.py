"""Where a conversion writes: checked before any work, and a staging folder beside it.

Every conversion writes into a staging folder next to ``OUT_DIR`` and renames it into place at the end,
replacing ``OUT_DIR`` with ``--overwrite``. That replacement must never reach the source or the caller's own
folder: an ``OUT_DIR`` that is the source, contains it (``convert-model model.nemo .`` from the checkpoint's
folder), lies inside it, contains the current directory (``.``, ``..``), the home folder or a model cache
(Hugging Face's, where a pretrained name's checkpoint lies, and NeMo's), lies inside a model cache, is a file or
a symbolic link is refused before anything is loaded or deleted. Paths are compared after ``~`` is expanded and
``.``/``..`` and links are resolved, and by device and inode where both exist (a case-insensitive file system, a
bind mount).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from parakeet_runtime.engine import ParakeetRuntimeError
from parakeet_runtime.engine.model.layouts import layout_of
from parakeet_runtime.engine.model.manifest import MANIFEST_NAME

from .errors import ConversionError


def check_output_dir(source: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str], *,
                     overwrite: bool) -> Path:
    """``out_dir`` as an absolute path, once nothing but ``out_dir`` itself can be replaced by writing there
    (``source``: the checkpoint or directory converted, or a pretrained name, which has no local path).

    Raises:
        ConversionError: ``out_dir`` exists and ``overwrite`` is off; is a file or a symbolic link; is the
            source, contains it or lies inside it; contains the current directory; or cannot be examined.
    """
    written = os.fspath(out_dir)
    out = Path(os.path.abspath(os.path.expanduser(written or ".")))
    try:
        if out.is_symlink():
            raise ConversionError(f"{written} is a symbolic link: give the directory it points to instead")
        exists = out.exists()
        if exists and not out.is_dir():
            raise ConversionError(f"{written} is a file, not a directory: give a directory for the model")
        target = out.resolve()
        if source is not None:
            origin_path = Path(os.path.expanduser(os.fspath(source)))
            if origin_path.exists():
                origin = origin_path.resolve()
                if _same_or_within(origin, target):
                    raise ConversionError(f"{written} would replace the source {source} itself: write the model "
                                          "elsewhere")
                if origin.is_dir() and _same_or_within(target, origin) and target != origin:
                    raise ConversionError(f"{written} is inside the source directory {source}: write the model "
                                          "elsewhere")
        if exists and _same_or_within(Path.cwd().resolve(), target):
            raise ConversionError(f"{written} is, or contains, the current directory: write the model into a "
                                  "directory of its own")
        for folder, what, cache in _protected_folders():
            if _same_or_within(folder, target):
                raise ConversionError(f"{written} is, or contains, {what} ({folder}): write the model into a "
                                      "directory of its own")
            if cache and _same_or_within(target, folder):
                raise ConversionError(f"{written} is inside {what} ({folder}): write the model elsewhere")
        if exists and not overwrite:
            raise ConversionError(f"{written} already exists (pass --overwrite to replace it)")
        if exists and not _replaceable(target):
            raise ConversionError(f"{written} exists and is not a model directory (nor empty): --overwrite replaces "
                                  "only a model directory; give a new or empty folder")
    except OSError as exc:
        raise ConversionError(f"cannot use {written} as the output directory: {exc.strerror or exc}") from exc
    return out


def _replaceable(folder: Path) -> bool:
    """Whether ``--overwrite`` may replace ``folder``: empty, or a model directory (this project's: a manifest and
    ONNX graphs; onnx-asr's or sherpa-onnx's, as the engine's loader tells them; ``--overwrite`` used to delete
    any folder given, ``/usr`` as well as a model)."""
    if not any(folder.iterdir()):
        return True
    ours = (folder / MANIFEST_NAME).is_file() and any(folder.glob("*.onnx"))
    try:
        return ours or layout_of(folder) is not None
    except ParakeetRuntimeError:  # it cannot be examined: not replaced
        return False


def _protected_folders() -> list[tuple[Path, str, bool]]:
    """Folders an ``OUT_DIR`` must not contain (replacing it would delete them): the home folder and the model
    caches (Hugging Face's, NeMo's), each with what it is and whether writing inside it is refused too (a
    cache's)."""
    home = Path.home()
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    hf_home = Path(os.environ.get("HF_HOME") or cache_home / "huggingface")
    candidates = [
        (home, "your home folder", False),
        (hf_home, "Hugging Face's folder", False),
        (Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or hf_home / "hub"),
         "the Hugging Face cache", True),
        (Path(os.environ.get("NEMO_CACHE_DIR") or home / ".cache" / "torch" / "NeMo"), "NeMo's model cache", True),
        (cache_home, "the cache folder", False),
    ]
    return [(Path(os.path.abspath(os.path.expanduser(folder))).resolve(), what, cache)
            for folder, what, cache in candidates]  # also a cache that does not exist yet: OUT_DIR would hold it


def _same_or_within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies inside it (both resolved); also by device and inode, so that another
    spelling of the same folder (letter case, a bind mount) counts."""
    candidates = [path, *path.parents]
    if folder in candidates:
        return True
    try:
        wanted = folder.stat()
    except OSError:
        return False
    for candidate in candidates:
        try:
            found = candidate.stat()
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino):
            return True
    return False


def staging_dir(out_dir: Path) -> Path:
    """A new, empty, owner-only folder beside ``out_dir`` (an absolute path, from :func:`check_output_dir`;
    its parents are created), renamed into place at the end.

    Raises:
        ConversionError: the folder cannot be created there (no permission, a file in the way, read-only).
    """
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise ConversionError(f"cannot write {out_dir}: {exc.strerror or exc}") from exc


def move_into_place(staging: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Rename the finished ``staging`` folder to ``out_dir``, replacing an ``out_dir`` that exists only with
    ``overwrite`` (it was checked before the work; one that appeared meanwhile is left as it is). The old folder
    is renamed aside first and deleted only once the new one is in place, with SIGINT and SIGTERM held for the
    two renames: an interruption or a failure leaves either the old folder or the new one, never a part of
    the old (deleting it first left whatever an interruption, or a file that could not be deleted, stopped at).

    Raises:
        ConversionError: ``out_dir`` appeared while converting and ``overwrite`` is off.
    """
    from parakeet_runtime.engine.serving.signals import interruptions_deferred

    if not out_dir.exists():
        staging.rename(out_dir)
        return
    if not overwrite:
        raise ConversionError(f"{out_dir} appeared while converting; left as it is (pass --overwrite to "
                              "replace it)")
    aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    swapped = False
    try:
        with interruptions_deferred():  # a signal held here is raised as the block ends: the finally still runs
            out_dir.rename(aside / out_dir.name)
            try:
                staging.rename(out_dir)
            except BaseException:
                (aside / out_dir.name).rename(out_dir)  # the old folder back where it was
                aside.rmdir()
                raise
            swapped = True
    finally:
        if swapped:
            shutil.rmtree(aside, ignore_errors=True)
