"""Errors of the conversion."""

from __future__ import annotations

from parakeet_runtime.engine.errors import ParakeetRuntimeError


class ConversionError(ParakeetRuntimeError):
    """The conversion cannot proceed; the message is one line a user can act on."""


class ParityError(ConversionError):
    """The converted directory does not decode like NeMo."""
