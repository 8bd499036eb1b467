"""Devices: which ONNX Runtime execution providers ``Engine.load(device=...)`` asks for, the check that they
really run the graphs, and the argmax heads of the decoding step for devices.

* ``"cpu"``: ONNX Runtime's CPU execution provider (what the engine does by default on a CPU-only install).
* ``"cuda"``: the CUDA execution provider (``pip install 'parakeet-runtime[gpu]'``); nodes it lacks run on
  the CPU provider, as ONNX Runtime assigns them.
* ``"tensorrt"``: the TensorRT execution provider, fp16, with the CUDA provider for the nodes TensorRT does
  not take; its engines are built at the first load into a cache (:func:`tensorrt_cache_dir`) and reused.

A device that this onnxruntime build lacks, or whose provider does not start (no GPU, missing CUDA or
TensorRT libraries: ONNX Runtime's Python API then falls back to the CPU with a warning), is a
:class:`DeviceUnavailableError`: the engine never runs on the CPU when a GPU was asked for.

On a device the decoding step returns the argmax label and the argmax duration index instead of the joint's
logits (:func:`argmax_graph`), so a step copies two integers per row back to the host, and the search
(``decoding/``) reads them as :class:`~parakeet_runtime.decoding.JointChoices`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import onnxruntime as ort

from ..errors import DeviceUnavailableError, ManifestError, OptionsError
from . import onnx_proto

Provider: TypeAlias = str | tuple[str, dict[str, Any]]
"""An ONNX Runtime execution provider: its name, or ``(name, provider options)``."""

DEVICES = ("cpu", "cuda", "tensorrt")
"""The devices ``Engine.load(device=...)`` and ``--device`` take."""

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"

_DEVICE_PROVIDER = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}
"""The provider that must run each device's graphs."""


def _check_device(device: str) -> None:
    """Raises OptionsError (a ValueError): ``device`` is not one of :data:`DEVICES`."""
    if device not in DEVICES:
        raise OptionsError("Engine.load", "device", f"one of {', '.join(DEVICES)}", device,
                           message=f"unknown device {device!r:.40}; expected one of {', '.join(DEVICES)}")


def gpus_per_engine(device: str | None) -> float:
    """GPUs a Ray actor or replica holding one engine on ``device`` reserves: one for a device whose graphs run
    on a GPU provider (``"cuda"``, ``"tensorrt"``), none for ``"cpu"`` and ``None``.

    Raises:
        OptionsError: ``device`` is not one of :data:`DEVICES` (nor ``None``; a ValueError).
    """
    if device is None:
        return 0.0
    _check_device(device)
    return 0.0 if _DEVICE_PROVIDER[device] == CPU else 1.0


_SWAP = ("; onnxruntime-gpu must replace the CPU build, not sit beside it: pip uninstall -y onnxruntime "
         "onnxruntime-gpu && pip install 'onnxruntime-gpu>=1.17'")
_INSTALL_HINT = {
    "cuda": "pip install 'parakeet-runtime[gpu]' on a machine with an NVIDIA GPU and CUDA" + _SWAP,
    "tensorrt": "pip install 'parakeet-runtime[tensorrt]' (onnxruntime-gpu and TensorRT) on a machine with an "
    "NVIDIA GPU" + _SWAP,
}

ARGMAX_LABEL = "argmax_label"
"""Output of the argmax heads: the argmax over the label logits (vocabulary and blank), int64 ``(rows,)``."""
ARGMAX_DURATION = "argmax_duration_index"
"""Output of the argmax heads: the argmax over the duration logits (an index into ``durations``), int64."""
ARGMAX_WIDTH = "argmax_logits_width"
"""Output of the argmax heads: the number of logits they were taken over, int64 ``(1,)`` (checked at load)."""
ARGMAX_PROVEN = "argmax_proven"
"""Output of graphs whose joint ranks its labels in int8 with a proof (fp32 decoding weights on the CPU): bool
``(rows,)``, true where :data:`ARGMAX_LABEL` is provably the fp32 logits' argmax (the other rows are made again on
the fp32 joint)."""


def provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def tensorrt_cache_dir(model_dir: Path) -> Path:
    """Where the TensorRT execution provider keeps the engines it builds for ``model_dir``:
    ``$PARAKEET_TENSORRT_CACHE`` or ``~/.cache/parakeet-runtime/tensorrt``, then a folder per model directory
    (its resolved path's hash: the package's own directory may not be writable)."""
    root = os.environ.get("PARAKEET_TENSORRT_CACHE") or str(Path.home() / ".cache" / "parakeet-runtime" / "tensorrt")
    key = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:16]
    return Path(root) / f"{model_dir.name}-{key}"


def device_providers(device: str, model_dir: Path, available: Sequence[str] | None = None) -> list[Provider]:
    """The execution providers for ``device``, in order of preference.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"tensorrt"``.
        model_dir: the model directory (TensorRT's engine cache is kept per directory).
        available: the providers this onnxruntime build has (default: ``ort.get_available_providers()``).

    Raises:
        OptionsError: an unknown device (a ValueError).
        DeviceUnavailableError: this onnxruntime build lacks the device's provider.
    """
    _check_device(device)
    have = list(ort.get_available_providers() if available is None else available)
    needed = [CUDA, TENSORRT] if device == "tensorrt" else [_DEVICE_PROVIDER[device]]
    missing = [name for name in needed if name not in have]
    if missing:
        raise DeviceUnavailableError(
            f"device {device!r} needs ONNX Runtime's {' and '.join(missing)}, which this onnxruntime build "
            f"(providers: {', '.join(have)}) lacks; {_INSTALL_HINT.get(device, '')}"
        )
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return [CUDA, CPU]
    cache = tensorrt_cache_dir(model_dir)
    options = {
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
    }
    return [(TENSORRT, options), CUDA, CPU]


def choose_providers(
    device: str | None, providers: Sequence[Provider] | None, model_dir: Path
) -> tuple[list[Provider] | None, str | None]:
    """``Engine.load``'s ``device`` and ``providers`` as providers and the device whose provider must run the
    graphs: ``device`` picks the providers (:func:`device_providers`); ``providers`` names them directly (the
    low-level form, checked by nothing: ONNX Runtime may fall back); neither: ``(None, None)``, the engine's
    default providers.

    Raises:
        OptionsError: both given, or an unknown device (a ValueError).
        DeviceUnavailableError: the device's provider is not in this onnxruntime build.
    """
    if device is None:
        return (None if providers is None else list(providers)), None
    if providers is not None:
        raise OptionsError("Engine.load", "device", "None when providers are given", device,
                           message="give device or providers, not both (device picks the providers)")
    return device_providers(device, model_dir), device


def check_sessions(device: str, sessions: Sequence[object]) -> None:
    """Every session runs on ``device``'s provider (first in its providers), not on a CPU fall-back.

    Raises:
        DeviceUnavailableError: a session fell back (ONNX Runtime could not start the provider), or is not an
            ONNX Runtime session at all (the OpenVINO backend runs on the CPU).
    """
    wanted = _DEVICE_PROVIDER[device]
    for session in sessions:
        get_providers = getattr(session, "get_providers", None)
        if get_providers is None:
            if wanted == CPU:  # OpenVINO's encoder: it runs on the CPU, as asked
                continue
            raise DeviceUnavailableError(
                f"device {device!r}: the encoder runs on another backend ({type(session).__name__}), which runs "
                "on the CPU; use SessionOptions(backend='onnxruntime') with a GPU device"
            )
        running = list(get_providers())
        if not running or running[0] != wanted:
            raise DeviceUnavailableError(
                f"device {device!r}: ONNX Runtime could not start {wanted} (no GPU, or its CUDA/TensorRT "
                f"libraries are missing) and the session runs on {', '.join(running) or 'nothing'}; the engine "
                "does not fall back to the CPU (use device='cpu')"
            )


def argmax_graph(source: Path | bytes, logits: str, num_labels: int, name: str) -> bytes:
    """``source`` (a graph with a ``(rows, num_labels + durations)`` logits output) with the logits output
    replaced by its two argmaxes: :data:`ARGMAX_LABEL` over the first ``num_labels`` columns and
    :data:`ARGMAX_DURATION` over the rest, int64 ``(rows,)`` each (ONNX ``ArgMax`` keeps the first of equal
    maxima, as ``numpy.argmax`` does). The other outputs stay.

    Raises:
        ManifestError: the graph is not ONNX or has no such output.
    """
    model = onnx_proto.read_source(source, name)
    outputs = onnx_proto.graph_outputs(model)
    if logits not in outputs:
        raise ManifestError(f"{name}: no output {logits!r:.80} to take the argmax of; outputs: {', '.join(outputs)}")
    row_dim = onnx_proto.row_dim(outputs[logits])
    prefix = "argmax_heads/"
    initializers = [
        onnx_proto.int64_tensor(prefix + "zero", [0]),
        onnx_proto.int64_tensor(prefix + "labels", [num_labels]),
        onnx_proto.int64_tensor(prefix + "end", [np.iinfo(np.int64).max]),
        onnx_proto.int64_tensor(prefix + "axis", [-1]),
    ]
    nodes = [
        onnx_proto.node("Shape", [logits], [prefix + "shape"]),
        onnx_proto.node("Gather", [prefix + "shape", prefix + "axis"], [ARGMAX_WIDTH], axis=0),
        onnx_proto.node("Slice", [logits, prefix + "zero", prefix + "labels", prefix + "axis"], [prefix + "label"]),
        onnx_proto.node("ArgMax", [prefix + "label"], [ARGMAX_LABEL], axis=-1, keepdims=0),
        onnx_proto.node("Slice", [logits, prefix + "labels", prefix + "end", prefix + "axis"], [prefix + "duration"]),
        onnx_proto.node("ArgMax", [prefix + "duration"], [ARGMAX_DURATION], axis=-1, keepdims=0),
    ]
    model.graph.initializer.extend(initializers)
    model.graph.node.extend(nodes)
    kept = [o for o in model.graph.output if o.name != logits]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    model.graph.output.extend(
        [onnx_proto.value_info(out, onnx_proto.INT64, row_dim) for out in (ARGMAX_LABEL, ARGMAX_DURATION)]
    )
    model.graph.output.append(onnx_proto.value_info(ARGMAX_WIDTH, onnx_proto.INT64, [1]))
    return onnx_proto.serialize(model)
