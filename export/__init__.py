"""NeMo to parakeet-runtime conversion (needs the ``export`` extra: NeMo, torch, onnx)."""

from parakeet_runtime.engine import __version__

from .errors import ConversionError, ParityError

__all__ = ["ConversionError", "ParityError", "__version__"]
