"""Other runtimes' model directories: which layout a directory is in, and loading it.

This project's own directories have a ``manifest.json``. Without one, a directory with ``tokens.txt`` and
``joiner*.onnx`` is sherpa-onnx's NeMo transducer layout (``sherpa_onnx.py``), one with ``vocab.txt`` and
``decoder_joint-model*.onnx`` onnx-asr's (``onnx_asr.py``). Both load with onnxruntime, numpy and protobuf
alone: no ``onnx``, ``torch`` or NeMo.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..options import SessionOptions
from .devices import Provider
from .hub import download, is_hub_name
from .onnx_asr import LoadedLayout, is_onnx_asr_directory, load_onnx_asr
from .sherpa_onnx import is_sherpa_onnx_directory, load_sherpa_onnx

LAYOUTS = ("onnx-asr", "sherpa-onnx")


def resolve_model_dir(
    model_dir: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None,
    precision: str | None = None,
) -> Path:
    """``model_dir`` as a local directory: a hub name (``owner/name``, not an existing path) is downloaded
    into the hub cache (see ``hub.py``).

    Raises:
        ModelDownloadError: a hub name that cannot be fetched.
    """
    text = os.fspath(model_dir)
    if is_hub_name(text):
        return download(text, cache_dir=cache_dir, precision=precision)
    return Path(text)


def layout_of(directory: Path) -> str | None:
    """``"sherpa-onnx"``, ``"onnx-asr"``, or ``None`` (this project's layout, or none)."""
    if is_sherpa_onnx_directory(directory):
        return "sherpa-onnx"
    if is_onnx_asr_directory(directory):
        return "onnx-asr"
    return None


def load_other_layout(
    directory: Path, *, providers: Sequence[Provider] | None, session: SessionOptions, precision: str | None = None
) -> LoadedLayout | None:
    """The model of a directory in onnx-asr's or sherpa-onnx's layout, or ``None`` for any other directory.

    Raises:
        ModelDirectoryError, ManifestError: as the layout's loader.
    """
    layout = layout_of(directory)
    if layout == "sherpa-onnx":
        return load_sherpa_onnx(directory, providers=providers, session=session, precision=precision)
    if layout == "onnx-asr":
        return load_onnx_asr(directory, providers=providers, session=session, precision=precision)
    return None
