"""Typed configuration: YAML files whose keys are the fields of dataclasses.

One config system for the whole package, with no heavy imports (no torch, no GDAL): each
section of a YAML file maps onto a dataclass, and :func:`from_mapping` builds it, naming
any unknown key together with the valid keys. Command-line overrides use dotted keys,
``training.max_epochs=3``, whose values are parsed as YAML (so ``3`` is an int, ``null``
is None, ``[1, 2]`` is a list).

Sections: :class:`ExperimentConfig` (``task``, ``data``, ``model``, ``training``,
``output_dir``), :class:`DataConfig` and its parts, :class:`ModelConfig`,
:class:`TrainingConfig`.
"""

from geoseg.config.base import (
    apply_overrides,
    from_mapping,
    load_yaml,
    to_mapping,
    unknown_key_error,
)
from geoseg.config.data import (
    AugmentConfig,
    DataConfig,
    ImageryConfig,
    LabelConfig,
    NormalizationConfig,
    SplitConfig,
)
from geoseg.config.experiment import DEFAULT_TASK, EXPERIMENT_SECTIONS, ExperimentConfig
from geoseg.config.instances import InstanceConfig
from geoseg.config.model import ModelConfig
from geoseg.config.training import TrainingConfig

__all__ = [
    "DEFAULT_TASK",
    "EXPERIMENT_SECTIONS",
    "AugmentConfig",
    "DataConfig",
    "ExperimentConfig",
    "ImageryConfig",
    "InstanceConfig",
    "LabelConfig",
    "ModelConfig",
    "NormalizationConfig",
    "SplitConfig",
    "TrainingConfig",
    "apply_overrides",
    "from_mapping",
    "load_yaml",
    "to_mapping",
    "unknown_key_error",
]
