"""The arguments of :func:`geoseg.inference.predict`, checked for their kind before any work.

The ranges of the numbers are checked where they are used (:mod:`geoseg.inference.predict`,
:mod:`geoseg.inference.tiling`); this module makes sure each argument is the right kind of
value first (:mod:`geoseg.arguments`), so a notebook's ``tile_size="512"``, ``overlap=16.5``,
``overwrite="no"``, an array for ``inputs`` or a generator of paths gets a ConfigError
naming the argument instead of a traceback from deep inside, a silently changed value or
an exhausted generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geoseg.arguments import check_flag, check_float, check_int, check_path, check_paths
from geoseg.errors import ConfigError, brief
from geoseg.io.bands import check_band_selection

#: Whole-number arguments (``None`` allowed where the name is in :data:`_OPTIONAL`).
_INTS = ("tile_size", "overlap", "batch_size", "block_size", "workers", "threads_per_worker")
_OPTIONAL = ("tile_size", "overlap", "workers", "threads_per_worker")
#: Optional output paths besides ``output``.
_OUTPUTS = ("probabilities", "instances", "objects")


def check_predict_arguments(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` (predict's keyword arguments) with each value checked and normalized.

    Paths stay as given (``inputs`` becomes a list, a generator read once); numbers become
    plain ints and floats; nothing else changes, so a valid call computes what it did.

    Raises:
        ConfigError: an argument of the wrong kind, named, with what to give instead.
    """
    out = dict(args)
    out["checkpoint"] = check_path(args["checkpoint"], "checkpoint")
    out["inputs"] = check_paths(args["inputs"], "inputs")
    out["output"] = check_path(args["output"], "output")
    for name in _OUTPUTS:
        if args[name] is not None:
            out[name] = check_path(args[name], name)
    for name in _INTS:
        if not (args[name] is None and name in _OPTIONAL):
            out[name] = check_int(args[name], name)
    out["resolution"] = _resolution(args["resolution"])
    check_float(args["connect_timeout"], "connect_timeout", above=0, unit="seconds")
    for name in ("overwrite", "resume", "progress"):
        out[name] = check_flag(args[name], name)
    out["bands"] = check_band_selection(args["bands"])
    for name in ("device", "precision", "backend", "resampling"):
        if not isinstance(args[name], str):
            raise ConfigError(f"{name}: expected a name (str), got {brief(args[name])}")
    if args["stats"] is not None and not isinstance(args["stats"], dict):
        raise ConfigError(
            f"stats: expected a dict to fill with run statistics (stats={{}}), got "
            f"{type(args['stats']).__name__} {brief(args['stats'])}"
        )
    return out


def _resolution(value: Any) -> float | tuple[float, float] | None:
    """A pixel size: one number, or an (x, y) pair of numbers (ranges checked later)."""
    if value is None:
        return None
    if isinstance(value, list | tuple) or getattr(value, "ndim", 0) == 1:
        pair = list(value)
        if len(pair) != 2:
            raise ConfigError(
                f"resolution: expected one pixel size or an (x, y) pair, got {len(pair)} "
                f"values {brief(value)}"
            )
        x, y = (check_float(v, "resolution", unit="CRS units") for v in pair)
        return (x, y)
    return check_float(value, "resolution", unit="CRS units")
