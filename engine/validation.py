"""Field checks shared by the options classes: each refuses a bad value with an :class:`.OptionsError` that names
the field and what it takes, so that ``serve`` and ``transcribe`` can say the same in terms of their flags."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from .errors import OptionsError


def check_integer(owner: object, name: str, minimum: int, *, optional: bool = False) -> None:
    """Refuse a field that is not an integer ``>= minimum`` (``None`` too when ``optional``); bools are not
    integers here (``True`` would read as 1)."""
    value = getattr(owner, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise OptionsError(type(owner).__name__, name, f"an integer >= {minimum}", value, optional=optional)


def check_number(owner: object, name: str, minimum: float = 0.0, *, above: bool = False, optional: bool = False,
                 maximum: float = math.inf, maximum_field: str | None = None, unit: str | None = None) -> None:
    """Refuse a field that is not a finite real number ``>= minimum`` (``> minimum`` when ``above``) and
    ``<= maximum`` (``None`` too when ``optional``); bools, strings and NaN are refused. ``maximum_field`` (the
    field ``maximum`` comes from) and ``unit`` (``"seconds"``) only word the error."""
    value = getattr(owner, name)
    if optional and value is None:
        return
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if math.isfinite(number) and (number > minimum if above else number >= minimum) and number <= maximum:
        return
    of_unit = f" of {unit}" if unit else ""
    if minimum == 0:
        requirement = f"a positive number{of_unit}" if above else f"a number{of_unit}, 0 or more"
    else:
        requirement = f"a finite number{of_unit} {'>' if above else '>='} {minimum:g}"
    if maximum != math.inf:
        requirement += f", at most {maximum_field} ({maximum:g})" if maximum_field else f", at most {maximum:g}"
    raise OptionsError(type(owner).__name__, name, requirement, value, optional=optional)


def check_flag(owner: object, name: str) -> None:
    """Refuse a field that is not a bool (``enabled="false"`` would read as true)."""
    value = getattr(owner, name)
    if not isinstance(value, bool):
        raise OptionsError(type(owner).__name__, name, "True or False", value)


def check_choice(owner: object, name: str, choices: Iterable[str]) -> None:
    """Refuse a field that is not one of ``choices``."""
    value = getattr(owner, name)
    allowed = tuple(choices)
    if value not in allowed:
        raise OptionsError(type(owner).__name__, name, f"one of {', '.join(map(repr, allowed))}", value)


def check_text(owner: object, name: str, *, optional: bool = False) -> None:
    """Refuse a field that is not a string with something besides white space (``None`` too when ``optional``)."""
    value = getattr(owner, name)
    if optional and value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise OptionsError(type(owner).__name__, name, "a non-empty string", value, optional=optional)
