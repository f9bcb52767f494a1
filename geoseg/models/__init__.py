"""Models: adapters per model family, the architecture registry and checkpoints.

* :mod:`~geoseg.models.outputs`: named outputs and their kinds (the model contract).
* :mod:`~geoseg.models.adapter`: the :class:`ModelAdapter` protocol.
* :mod:`~geoseg.models.smp`: the segmentation-models-pytorch adapter (the first one).
* :mod:`~geoseg.models.detection`: the torchvision adapter (Mask R-CNN, object lists).
* :mod:`~geoseg.models.mask2former`: the transformers adapter (Mask2Former from a config:
  semantic, instance and panoptic).
* :mod:`~geoseg.models.registry`: :data:`ADAPTERS`, :func:`create_model`, :func:`build_model`.
* :mod:`~geoseg.models.weights`: pretrained weights from local files only.
* :mod:`~geoseg.models.families`: adapter names and input size rules (no torch).
* :mod:`~geoseg.models.metadata`: :class:`ModelMetadata`, :func:`read_metadata` (no torch).
* :mod:`~geoseg.models.checkpoint`: :func:`save_checkpoint`, :func:`load_model`.

Importing this package is cheap (torch loads on first use of a name), so the light
parts (:mod:`~geoseg.models.outputs`) serve config and task code without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names and the module each is loaded from on first use.
_LAZY = {
    "ADAPTERS": "geoseg.models.registry",
    "CHECKPOINT_FORMAT": "geoseg.models.metadata",
    "CHECKPOINT_VERSION": "geoseg.models.metadata",
    "ModelAdapter": "geoseg.models.adapter",
    "ModelConfig": "geoseg.config.model",
    "ModelMetadata": "geoseg.models.metadata",
    "OutputSpec": "geoseg.models.outputs",
    "build_model": "geoseg.models.registry",
    "build_network": "geoseg.models.checkpoint",
    "create_model": "geoseg.models.registry",
    "get_adapter": "geoseg.models.registry",
    "load_model": "geoseg.models.checkpoint",
    "read_metadata": "geoseg.models.metadata",
    "resolve_adapter": "geoseg.models.registry",
    "save_checkpoint": "geoseg.models.checkpoint",
}

__all__ = ["ARCHITECTURES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "ARCHITECTURES":  # every architecture of every adapter (imports smp)
        return importlib.import_module("geoseg.models.registry").all_architectures()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
