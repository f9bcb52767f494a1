"""The whole experiment: ``task``, ``data``, ``model``, ``training`` and ``output_dir``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from geoseg.arguments import check_texts
from geoseg.config.base import (
    apply_overrides,
    from_mapping,
    load_yaml,
    to_mapping,
    unknown_key_error,
)
from geoseg.config.data import DataConfig
from geoseg.config.instances import InstanceConfig
from geoseg.config.model import ModelConfig
from geoseg.config.training import TrainingConfig
from geoseg.errors import ConfigError

#: Top-level keys of an experiment config (see :class:`ExperimentConfig`).
EXPERIMENT_SECTIONS = ("task", "data", "model", "training", "instances", "output_dir")

#: The task of a config without a ``task:`` key.
DEFAULT_TASK = "semantic"


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: one YAML file with ``task``, ``data``, ``model``, ``training``.

    Attributes:
        task: the kind of segmentation (``geoseg.tasks.TASKS``): ``semantic`` (default).
        data: the data section (None only when a data module is passed to
            :func:`geoseg.training.train` directly).
        model: the model section.
        training: the training section.
        instances: encoding, decoding and loss of objects (``instance`` and ``panoptic``
            tasks; see :class:`~geoseg.config.InstanceConfig`).
        output_dir: default run folder (``geoseg train -o`` overrides it).
        base_dir: the folder of the YAML file the config was read from (None for a
            mapping). Relative data paths that match nothing in the working directory
            are looked up there, and a relative ``data.root`` is relative to it. Not
            part of the config's data (:meth:`to_dict` leaves it out).
    """

    task: str = DEFAULT_TASK
    data: DataConfig | None = None
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    instances: InstanceConfig = dataclasses.field(default_factory=InstanceConfig)
    output_dir: str | None = None
    base_dir: str | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "config") -> ExperimentConfig:
        """Validate every section; unknown keys at any depth name the valid keys."""
        data = dict(data or {})
        for key in data:
            if key not in EXPERIMENT_SECTIONS:
                raise unknown_key_error(str(key), EXPERIMENT_SECTIONS, where)
        task = data.get("task", DEFAULT_TASK)
        if task is None:
            task = DEFAULT_TASK
        if not isinstance(task, str):
            raise ConfigError(f"task: expected a task name such as 'semantic', got {task!r}")
        data_cfg = data.get("data")
        out_dir = data.get("output_dir")
        if out_dir is not None and not isinstance(out_dir, (str, Path)):
            raise ConfigError(f"output_dir: expected a folder path, got {out_dir!r}")
        return cls(
            task=task,
            data=None if data_cfg is None else from_mapping(DataConfig, data_cfg, "data"),
            model=from_mapping(ModelConfig, data.get("model"), "model"),
            training=from_mapping(TrainingConfig, data.get("training"), "training"),
            instances=from_mapping(InstanceConfig, data.get("instances"), "instances"),
            output_dir=None if out_dir is None else str(out_dir),
        )

    @classmethod
    def load(
        cls,
        config: str | Path | ExperimentConfig | Mapping[str, Any],
        *,
        overrides: Iterable[str] = (),
    ) -> ExperimentConfig:
        """Build from a YAML path, a mapping or an ExperimentConfig, then apply overrides.

        Overrides (``"training.max_epochs=3"``) are applied to the plain data before
        validation, so an override with a typo'd key names the valid keys too.
        """
        overrides = check_texts(overrides, "overrides")
        base_dir = None
        if isinstance(config, ExperimentConfig):
            if not overrides:
                return config
            raw = config.to_dict()
            base_dir = config.base_dir
        elif isinstance(config, Mapping):
            raw = dict(config)
        else:
            raw = load_yaml(config)
            base_dir = str(Path(config).resolve().parent)
        exp = cls.from_dict(apply_overrides(raw, overrides))
        exp.base_dir = base_dir
        return exp

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready data (round-trips through :meth:`from_dict`)."""
        out = {
            "task": self.task,
            "data": to_mapping(self.data),
            "model": to_mapping(self.model),
            "training": to_mapping(self.training),
            "instances": to_mapping(self.instances),
            "output_dir": self.output_dir,
        }
        if out["data"] is None:
            del out["data"]
        if self.task == "semantic" and self.instances == InstanceConfig():
            del out["instances"]  # not used by semantic models
        return out
