"""Checked option values: the one validation layer of the Python API (and so of the CLI).

Each command-line command calls a public function, so checking an option where the
function receives it covers both. A notebook passes what Python allows, and a wrong
kind of value must not reach numpy, rasterio or Dask: ``"512"`` for a number fails
deep inside with ``'<=' not supported``, ``16.5`` pixels is silently cut to 16,
``overwrite="no"`` is true, and ``True`` is the number 1. These helpers accept every
spelling of a right value (``int`` and numpy integers, a whole ``512.0``; ``str`` and
:class:`os.PathLike` paths) and raise :class:`~geoseg.errors.ConfigError` naming the
argument, the value and what to give instead for anything else. They return the value
as the plain Python type, so valid calls compute exactly what they did before.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from typing import Any

from geoseg.errors import ConfigError, brief


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {brief(value)}"


def check_int(
    value: Any, name: str, *, low: int | None = None, high: int | None = None, unit: str = ""
) -> int:
    """``value`` as an ``int`` within ``[low, high]``; ConfigError naming ``name`` if not.

    Accepts ints, numpy integers and whole floats (``512.0``); refuses booleans, strings,
    fractions (``0.5``), NaN and infinities.
    """
    what = f" ({unit})" if unit else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"{name}: expected a whole number{what}, got {_kind(value)}"
            + ("; give a number, not text (512, not '512')" if isinstance(value, str) else "")
        )
    if isinstance(value, numbers.Integral):
        number = int(value)
    else:
        as_float = float(value)
        if not (math.isfinite(as_float) and as_float.is_integer()):
            raise ConfigError(
                f"{name}: expected a whole number{what}, got {brief(value)}; give an integer"
            )
        number = int(as_float)
    _check_range(number, name, low, high, what)
    return number


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    unit: str = "",
) -> float:
    """``value`` as a finite ``float`` (``>= low``, ``> above``, ``<= high``); ConfigError if not.

    Accepts ints, floats and numpy numbers; refuses booleans, strings, NaN and infinities.
    """
    what = f" ({unit})" if unit else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"{name}: expected a number{what}, got {_kind(value)}"
            + ("; give a number, not text (30.0, not '30')" if isinstance(value, str) else "")
        )
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name}: expected a finite number{what}, got {brief(value)}")
    if above is not None and not number > above:
        raise ConfigError(f"{name} must be > {above:g}{what}, got {brief(value)}")
    _check_range(number, name, low, high, what)
    return number


def _check_range(
    number: float, name: str, low: float | None, high: float | None, what: str
) -> None:
    if low is not None and high is not None and not low <= number <= high:
        raise ConfigError(f"{name} must be {low:g} to {high:g}{what}, got {number:g}")
    if low is not None and number < low:
        raise ConfigError(f"{name} must be >= {low:g}{what}, got {number:g}")
    if high is not None and number > high:
        raise ConfigError(f"{name} must be <= {high:g}{what}, got {number:g}")


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a ``bool``: True, False (numpy booleans, 0 and 1 too); ConfigError if not.

    A string is refused: ``overwrite="no"`` would otherwise mean yes.
    """
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_" or (
        isinstance(value, numbers.Integral) and int(value) in (0, 1)
    ):
        return bool(value)
    raise ConfigError(f"{name}: expected True or False, got {_kind(value)}")


def check_path(value: Any, name: str, *, also: str = "") -> str | os.PathLike[str]:
    """``value`` if it is a path (``str`` or :class:`os.PathLike`); ConfigError if not.

    Arrays, open datasets, None and numbers are refused with what to give instead;
    ``also`` names other accepted kinds in the message (``"or a GeoDataFrame"``).
    """
    if isinstance(value, str | os.PathLike) and str(value).strip():
        return value
    hint = "a file path (str or pathlib.Path)" + (f" {also}" if also else "")
    if value is None:
        raise ConfigError(f"{name} is required: give {hint}")
    if hasattr(value, "name") and hasattr(value, "read") and hasattr(value, "crs"):
        hint += f"; for an open rasterio dataset pass its path, {name}=dataset.name"
    elif type(value).__module__.startswith("numpy"):
        hint += (
            "; an array is not a file (and has no georeferencing): save it first, a "
            "raster with geoseg.testing.write_raster or rasterio"
        )
    raise ConfigError(f"{name}: expected {hint}, got {_kind(value)}")


def check_paths(value: Any, name: str) -> list[str | os.PathLike[str]]:
    """One path or an iterable of paths (list, tuple, generator) as a list, each checked."""
    if isinstance(value, str | os.PathLike):
        return [check_path(value, name)]
    if value is None or isinstance(value, bytes) or not isinstance(value, Iterable):
        check_path(value, name)  # raises with a hint for the kind of value
    if type(value).__module__.startswith("numpy") or hasattr(value, "crs"):
        check_path(value, name)
    return [check_path(v, f"{name}[{i}]") for i, v in enumerate(value)]


def check_ints(
    value: Any, name: str, *, low: int | None = None, high: int | None = None, unit: str = ""
) -> list[int]:
    """A sequence of whole numbers (list, tuple, array, generator) as a list of ints.

    Text is refused (``rgb="123"`` is not three bands), and so is a lone number; each item
    is checked by :func:`check_int` and named by its position (``rgb[2]``).
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            f"{name}: expected a list of whole numbers, e.g. [1, 2, 3], got {_kind(value)}"
        )
    return [
        check_int(v, f"{name}[{i}]", low=low, high=high, unit=unit) for i, v in enumerate(value)
    ]


def check_text(value: Any, name: str) -> str:
    """``value`` if it is a non-empty ``str``; ConfigError naming ``name`` if not."""
    if isinstance(value, str) and value.strip():
        return value
    raise ConfigError(f"{name}: expected a non-empty name (str), got {_kind(value)}")


def check_texts(value: Any, name: str) -> list[str]:
    """One string or an iterable of strings as a list (``"a=1"`` is ``["a=1"]``, not letters)."""
    if isinstance(value, str):
        return [value]
    if value is None or isinstance(value, bytes) or not isinstance(value, Iterable):
        raise ConfigError(f"{name}: expected a list of strings, got {_kind(value)}")
    items = list(value)
    for i, v in enumerate(items):
        if not isinstance(v, str):
            raise ConfigError(f"{name}[{i}]: expected a string, got {_kind(v)}")
    return items


def check_instance(value: Any, kind: type, name: str) -> Any:
    """``value`` if it is a ``kind``, ``kind()`` when None; ConfigError for anything else.

    For options objects (``DecodeParams``): a ``dict`` is not one, and ``params or
    Default()`` would silently replace an empty one by the defaults.
    """
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ConfigError(
            f"{name}: expected a {kind.__name__} or None, got {type(value).__name__}; build "
            f"one, e.g. {kind.__name__}(...) (from a dict: {kind.__name__}(**d))"
        )
    return value
