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

from ..errors import LayoutOptionError, ModelDirectoryError
from ..options import SessionOptions
from . import onnx_asr, sherpa_onnx
from .devices import Provider
from .hub import download, is_hub_name
from .manifest import MANIFEST_NAME, load_manifest
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
        ModelDirectoryError: not a path or a name (bytes, a number), an empty one, or a path that is not
            UTF-8 (which ONNX Runtime and sentencepiece cannot open).
    """
    text = os.fspath(model_dir) if isinstance(model_dir, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text:
        raise ModelDirectoryError(f"model_dir must be a directory's path or a hub name (owner/name), got "
                                  f"{model_dir!r:.80}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes of another encoding, decoded by Python as surrogates
        code = ord(text[exc.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"character {text[exc.start]!r}"
        raise ModelDirectoryError(f"the model directory's path {text!r:.200} is not UTF-8 ({what} at "
                                  f"{exc.start}): ONNX Runtime cannot open the graphs under it; rename it, or "
                                  "link it from a UTF-8 path") from exc
    if is_hub_name(text):
        return download(text, cache_dir=cache_dir, precision=precision)
    return Path(text)


def layout_of(directory: Path) -> str | None:
    """``"sherpa-onnx"``, ``"onnx-asr"``, or ``None`` (this project's layout, or none).

    Raises:
        ModelDirectoryError: the directory cannot be examined (no permission to enter it).
    """
    try:
        if is_sherpa_onnx_directory(directory):
            return "sherpa-onnx"
        if is_onnx_asr_directory(directory):
            return "onnx-asr"
    except OSError as exc:  # Path.exists() raises PermissionError on a directory that cannot be entered
        raise ModelDirectoryError(f"cannot read the model directory {directory}: {exc.strerror or exc}") from exc
    return None


OWN_LAYOUT_FILES = ("features.npz", "tokenizer.model", "predictor.onnx", "joint.onnx", "step.onnx")
"""Files that ``convert-model`` writes and other layouts do not have (``encoder.onnx`` is sherpa-onnx's name too,
``vocab.txt`` onnx-asr's)."""


def partial_layout_hint(directory: Path) -> str:
    """For a directory with no ``manifest.json`` that holds some of another layout's files: which of that layout's
    files are missing, or that it holds this project's files but lost its manifest (``""`` when it holds none
    of them)."""
    try:
        own = [f for f in OWN_LAYOUT_FILES if (directory / f).is_file()]
    except OSError:
        return ""
    if own:
        return (f"; it holds {', '.join(own)} of this project's layout, whose {MANIFEST_NAME} names and describes "
                "them: restore it, or convert the checkpoint again")
    layouts = (("onnx-asr", (onnx_asr.ENCODER_FILE, onnx_asr.DECODER_JOINT_FILE, onnx_asr.VOCAB_FILE)),
               ("sherpa-onnx", (sherpa_onnx.ENCODER_FILE, sherpa_onnx.DECODER_FILE, sherpa_onnx.JOINER_FILE,
                                sherpa_onnx.TOKENS_FILE)))
    for name, files in layouts:
        try:
            present = [f for f in files if any((directory / f.format(suffix=s)).is_file() for s in ("", ".int8"))]
        except OSError:
            return ""
        if present and len(present) < len(files):
            missing = [f.format(suffix="") for f in files if f not in present]
            return (f"; it holds {', '.join(f.format(suffix='') for f in present)} of {name}'s layout, which also "
                    f"needs {' and '.join(missing)}")
    return ""


def check_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    """``model_dir`` resolved (a hub name downloaded) and checked to be a model directory of this project's
    layout (its manifest valid) or of another runtime's: what a command checks before it starts its workers.

    Raises:
        ModelDownloadError, ModelDirectoryError, ManifestError: as :func:`resolve_model_dir` and the manifest.
    """
    directory = resolve_model_dir(model_dir)
    if layout_of(directory) is None:
        load_manifest(directory)
    return directory


def load_other_layout(
    directory: Path, *, providers: Sequence[Provider] | None, session: SessionOptions, precision: str | None = None,
    verify: bool = False, argmax_step: bool = False,
) -> LoadedLayout | None:
    """The model of a directory in onnx-asr's or sherpa-onnx's layout, or ``None`` for any other directory.

    Raises:
        ModelDirectoryError, ManifestError: as the layout's loader.
        LayoutOptionError: an option that only this project's directories support, refused before anything
            loads (it would be ignored or fail after loading): ``verify`` (these layouts record no digests to
            check the files against), ``argmax_step`` (no argmax heads), the OpenVINO backend, a forced
            ``int8_weights``.
    """
    layout = layout_of(directory)
    if layout is None:
        return None
    convert = f"convert it first, convert-model --from {layout} {directory} OUT_DIR"
    if verify:
        raise LayoutOptionError(f"verify=True checks the SHA-256 digests of a manifest.json; {directory} ({layout} "
                                f"layout) records none, so nothing could be verified: load it without verify, or "
                                f"{convert} (its manifest records the digests)")
    if argmax_step:
        raise LayoutOptionError(f"argmax_step=True needs this project's model directory (its argmax heads), not "
                                f"{directory} ({layout} layout): leave it off, or {convert}")
    if session.backend != "onnxruntime":  # the encoder would run on ONNX Runtime
        raise LayoutOptionError(f"backend={session.backend!r} runs this project's model directories only, not "
                                f"{directory} ({layout} layout): {convert}")
    if session.int8_weights != "auto":
        raise LayoutOptionError(f"int8_weights chooses among the encoders of this project's int8 directories; "
                                f"{directory} ({layout} layout) has its own: choose with precision='fp32' or 'int8'")
    if layout == "sherpa-onnx":
        return load_sherpa_onnx(directory, providers=providers, session=session, precision=precision)
    return load_onnx_asr(directory, providers=providers, session=session, precision=precision)
