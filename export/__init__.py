"""NeMo to parakeet-runtime conversion (needs the ``export`` extra: NeMo, torch, onnx)."""

from .errors import ConversionError, ParityError

__all__ = ["ConversionError", "ParityError"]
