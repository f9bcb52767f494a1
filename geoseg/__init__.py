"""geoseg: segment remote-sensing imagery into georeferenced maps."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public names loaded on first use (``import geoseg`` stays fast: no torch import).
_LAZY = {
    "train": "geoseg.training",
    "evaluate": "geoseg.evaluation",
    "load_model": "geoseg.models",
    "save_checkpoint": "geoseg.models",
    "create_model": "geoseg.models",
    "predict": "geoseg.inference",
    "ExperimentConfig": "geoseg.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
