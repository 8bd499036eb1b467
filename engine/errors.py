"""Typed errors raised by the engine. Each also subclasses the built-in a caller would expect."""

from __future__ import annotations


class ParakeetRuntimeError(Exception):
    """Base class of every error this package raises on purpose."""


class OptionsError(ParakeetRuntimeError, ValueError):
    """An options object (``SessionOptions``, ``BatchingOptions``, ``LongFormOptions``, ``ServerOptions``) was
    given a value its field does not take. ``field`` names the field, ``requirement`` says what it takes (``"a
    positive number of seconds"``) and ``value`` is what it got, so that a command line can name its own flag."""

    def __init__(self, owner: str, field: str, requirement: str, value: object, *, optional: bool = False,
                 message: str | None = None) -> None:
        """``message``: the error's own words instead of ``"{owner}.{field} must be {requirement}, got {value!r}"``."""
        self.owner = owner
        self.field = field
        self.requirement = requirement
        self.value = value
        wanted = requirement + ((", or None" if "," in requirement else " or None") if optional else "")
        super().__init__(message if message is not None else f"{owner}.{field} must be {wanted}, got {value!r}")


class OptionsTypeError(OptionsError, TypeError):
    """An option given as a value of the wrong kind (a string where a list is taken)."""


class ModelDirectoryError(ParakeetRuntimeError, FileNotFoundError):
    """The model directory is missing, or lacks a file its manifest names."""


class ManifestError(ParakeetRuntimeError, ValueError):
    """The manifest is unreadable, of an unsupported schema version, or inconsistent."""


class LayoutOptionError(ParakeetRuntimeError, ValueError):
    """An ``Engine.load`` option that only this project's model directories support (``verify``: their manifest's
    SHA-256 digests; ``argmax_step``: their argmax heads; the OpenVINO backend; a forced ``int8_weights``), given
    for a directory in onnx-asr's or sherpa-onnx's layout. Raised before anything is loaded."""


class AudioDecodeError(ParakeetRuntimeError, ValueError):
    """An input could not be read or understood as audio."""


class AudioFileNotFoundError(AudioDecodeError, FileNotFoundError):
    """An audio path does not exist."""


class AudioTooLongError(ParakeetRuntimeError, ValueError):
    """The audio is longer than the engine was told to accept (``LongFormOptions.max_audio_seconds``), or, with
    ``LongFormOptions(strategy="one_pass")``, than an encoder with a length limit takes in one pass.

    ``seconds``: the length found (declared, or decoded so far when ``at_least``), and ``limit``: the
    ``max_audio_seconds`` it exceeds; ``None`` where not known (the encoder's limit)."""

    def __init__(self, message: str, *, seconds: float | None = None, limit: float | None = None,
                 at_least: bool = False) -> None:
        super().__init__(message)
        self.seconds = seconds
        self.limit = limit
        self.at_least = at_least


class EngineClosedError(ParakeetRuntimeError, RuntimeError):
    """The engine was closed; requests still waiting when it closed get this error."""


class EngineForkedError(EngineClosedError):
    """The engine was loaded in another process, before a fork: its batching worker is not in this one (load an
    engine in each process, or start processes with ``spawn``)."""


class EngineOverloadedError(ParakeetRuntimeError, RuntimeError):
    """The batcher's queue is full (``BatchingOptions.max_queue``); retry later."""


class ModelDownloadError(ModelDirectoryError):
    """A hub model name could not be fetched: no network (or ``HF_HUB_OFFLINE``) and not in the cache,
    no such repository, or ``huggingface_hub`` (the ``hub`` extra) is not installed."""


class DeviceUnavailableError(ParakeetRuntimeError, RuntimeError):
    """The device asked for (``Engine.load(device="cuda" | "tensorrt")``) cannot run here: this onnxruntime
    build lacks its execution provider, or the provider could not start (no GPU, no CUDA or TensorRT
    libraries). The engine never falls back to the CPU silently."""


class BackendUnavailableError(ParakeetRuntimeError, RuntimeError):
    """The requested encoder backend or precision cannot run here: the ``openvino`` extra is not installed,
    the CPU has no bfloat16 instructions, or the directory's encoder is not one the backend takes."""
