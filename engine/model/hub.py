"""Hugging Face hub names as model directories: ``Engine.load("istupakov/parakeet-tdt-0.6b-v3-onnx")``.

A ``model_dir`` that is not an existing path and reads ``owner/name`` is a hub repository. It is
downloaded with ``huggingface_hub`` (the ``hub`` extra: ``pip install 'parakeet-runtime[hub]'``) into
its cache (``HF_HUB_CACHE``, ``HF_HOME``, or ``cache_dir``), and the snapshot directory is loaded like any
directory (onnx-asr's, sherpa-onnx's or this project's layout). ``huggingface_hub`` honours
``HF_HUB_OFFLINE=1``: then only the cache is read, and nothing reaches the network.

Only one variant's graphs are downloaded: ``precision="int8"`` fetches the ``*.int8.onnx`` graphs, and
``"fp32"`` or ``None`` the others; with ``None``, a repository that holds only int8 graphs (sherpa-onnx's
``-int8`` repositories) is fetched again for those.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..errors import ModelDownloadError

logger = logging.getLogger(__name__)

_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_GRAPHS = "*.onnx"
_INT8 = "*.int8.onnx"


def is_hub_name(model_dir: str) -> bool:
    """``owner/name`` that is not an existing path (a local directory of that name wins)."""
    return bool(_HUB_NAME.match(model_dir)) and ".." not in model_dir and not Path(model_dir).exists()


def _has_graphs(directory: Path, int8: bool) -> bool:
    graphs = [p.name for p in directory.glob(_GRAPHS)]
    return any(name.endswith(".int8.onnx") == int8 for name in graphs)


def download(name: str, *, cache_dir: str | os.PathLike[str] | None = None, precision: str | None = None) -> Path:
    """The local snapshot directory of hub repository ``name`` (downloaded, or found in the cache).

    Raises:
        ModelDownloadError: ``huggingface_hub`` is missing, the repository does not exist or is gated, or
            the hub cannot be reached (or ``HF_HUB_OFFLINE`` is set) and the cache does not hold it.
    """
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:
        raise ModelDownloadError(
            f"{name} looks like a Hugging Face hub name; downloading it needs huggingface_hub: "
            "pip install 'parakeet-runtime[hub]' (or give a local directory)"
        ) from exc

    def fetch(int8: bool) -> Path:
        allow = [_INT8, "*.txt", "*.json"] if int8 else None
        ignore = None if int8 else [_INT8]
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        try:
            path = huggingface_hub.snapshot_download(
                name, cache_dir=cache, allow_patterns=allow, ignore_patterns=ignore
            )
        except LocalEntryNotFoundError as exc:
            raise ModelDownloadError(
                f"{name}: not in the hub cache, and the hub cannot be reached (no network, or HF_HUB_OFFLINE is set)"
            ) from exc
        except HfHubHTTPError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelDownloadError(f"{name}: the hub refused the download ({first})") from exc
        except (OSError, ValueError) as exc:
            raise ModelDownloadError(f"{name}: cannot download ({type(exc).__name__}: {exc})") from exc
        return Path(path)

    if precision not in (None, "fp32", "int8"):
        raise ModelDownloadError(f"{name}: precision must be None, 'fp32' or 'int8', found {precision!r}")
    directory = fetch(int8=precision == "int8")
    if precision is None and not _has_graphs(directory, int8=False) and not _has_graphs(directory, int8=True):
        logger.info("%s has no fp32 graphs; fetching its int8 graphs", name)
        directory = fetch(int8=True)
    logger.info("hub model %s is %s", name, directory)
    return directory
