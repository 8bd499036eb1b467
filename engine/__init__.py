"""The parakeet-runtime inference engine: load a converted model once, transcribe from any thread.

>>> from parakeet_runtime.engine import Engine
>>> engine = Engine.load("parakeet-tdt-0.6b-v2-onnx")      # doctest: +SKIP
>>> engine.transcribe("clip.wav").text                       # doctest: +SKIP
"""

from .engine import Engine, default_model_dir, sample_audio_path
from .errors import (
    AudioDecodeError,
    AudioFileNotFoundError,
    AudioTooLongError,
    BackendUnavailableError,
    DeviceUnavailableError,
    EngineClosedError,
    EngineForkedError,
    EngineOverloadedError,
    LayoutOptionError,
    ManifestError,
    ModelDirectoryError,
    ModelDownloadError,
    OptionsError,
    OptionsTypeError,
    ParakeetRuntimeError,
)
from .model.manifest import Manifest, load_manifest
from .options import BatchingOptions, ConfidenceOptions, LongFormOptions, SessionOptions
from .requests.audio import Audio, AudioInput, load_audio
from .requests.prepare import LongAudio, PreparedAudio
from .results import Segment, TimedText, Token, Transcript, TranscriptUpdate, Word
from .serving.options import ServerOptions


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parakeet-runtime")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _package_version()
"""The installed parakeet-runtime distribution's version (``0+unknown`` when it is not installed)."""

__all__ = [
    "Audio",
    "AudioDecodeError",
    "AudioFileNotFoundError",
    "AudioInput",
    "AudioTooLongError",
    "BackendUnavailableError",
    "BatchingOptions",
    "ConfidenceOptions",
    "DeviceUnavailableError",
    "Engine",
    "EngineClosedError",
    "EngineForkedError",
    "EngineOverloadedError",
    "LayoutOptionError",
    "LongAudio",
    "LongFormOptions",
    "Manifest",
    "ManifestError",
    "ModelDirectoryError",
    "ModelDownloadError",
    "OptionsError",
    "OptionsTypeError",
    "ParakeetRuntimeError",
    "PreparedAudio",
    "Segment",
    "ServerOptions",
    "SessionOptions",
    "TimedText",
    "Token",
    "Transcript",
    "TranscriptUpdate",
    "Word",
    "__version__",
    "default_model_dir",
    "load_audio",
    "load_manifest",
    "sample_audio_path",
]
