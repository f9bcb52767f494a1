"""What is known about each model family (adapter) without importing it or torch.

Checkpoint headers are checked against these facts (:mod:`geoseg.models.metadata`), and
the adapters (:mod:`geoseg.models.registry`) answer from the same functions, so a
prediction with a cached ONNX model never imports the deep-learning stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geoseg.errors import ConfigError

#: Model adapter names (``geoseg.models.registry.ADAPTERS`` has one adapter per name).
ADAPTER_NAMES = ("smp", "torchvision", "transformers")

#: The adapter of a checkpoint written before adapters were recorded.
DEFAULT_ADAPTER = "smp"


def check_adapter_name(name: str) -> str:
    """``name`` if it is an adapter; ConfigError listing the valid names."""
    if name not in ADAPTER_NAMES:
        raise ConfigError(
            f"model.adapter: unknown adapter {name!r}; valid names are {sorted(ADAPTER_NAMES)}"
        )
    return name


def adapter_size_divisor(adapter: str, kwargs: Mapping[str, Any]) -> int:
    """Input height and width of ``adapter``'s networks must be a multiple of this.

    smp encoders halve the resolution at every stage: ``2 ** encoder_depth``; the
    torchvision and transformers adapters pad inputs themselves: 1.
    """
    if check_adapter_name(adapter) == "smp":
        return int(2 ** int(kwargs.get("encoder_depth", 5)))
    return 1
