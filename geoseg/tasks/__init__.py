"""Tasks: what a model learns and how it is scored, one Lightning task per kind.

Following torchgeo's one-trainer-per-task pattern, each kind of segmentation is a
``LightningModule`` subclass of :class:`geoseg.tasks.base.BaseTask` with its own losses,
metrics and evaluation report. This module is the light registry (no torch import):
:data:`TASKS` maps the config's ``task:`` name to a :class:`TaskInfo` that says which
named outputs the task's models produce and where its Lightning module lives.

* ``semantic``: every pixel a class (:class:`geoseg.tasks.semantic.SemanticSegmentationTask`).
* ``instance``: every object of a thing class its own id, whole and unique across the
  mosaic (:class:`geoseg.tasks.instance.InstanceSegmentationTask`): class scores plus
  footprint / boundary / contact maps (:mod:`geoseg.instances`).
* ``panoptic``: both at once, stuff classes per pixel and thing objects with ids
  (:class:`geoseg.tasks.instance.PanopticSegmentationTask`, the same outputs).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geoseg.classes import ClassTable
from geoseg.errors import ConfigError
from geoseg.models.outputs import OBJECTS, PIXEL_MAP, OutputSpec, class_scores

if TYPE_CHECKING:
    from geoseg.tasks.base import BaseTask

#: The task of a config or checkpoint that names none.
DEFAULT_TASK = "semantic"


@dataclass(frozen=True)
class TaskInfo:
    """A task as the rest of geoseg sees it.

    Attributes:
        name: the config's ``task:`` value.
        module: ``"package.module:Class"`` of the task's Lightning module (imported on use).
        outputs: the named outputs a model for this task produces, given the class table.
        description: one line for help texts.
        object_module: ``"package.module:Class"`` of the task's module for object-list
            models (Mask R-CNN, Mask2Former: outputs of kind ``objects``), if any.
    """

    name: str
    module: str
    outputs: Callable[[ClassTable], list[OutputSpec]]
    description: str = ""
    object_module: str = ""


def semantic_outputs(classes: ClassTable) -> list[OutputSpec]:
    """Semantic models output per-pixel class scores, softmax over the class table."""
    return [class_scores(len(classes))]


def instance_outputs(classes: ClassTable) -> list[OutputSpec]:
    """Class scores plus the three instance maps (footprint, boundary, contact)."""
    return [class_scores(len(classes)), OutputSpec("instance_maps", PIXEL_MAP, 3, "sigmoid")]


#: Tasks by name (the config's top-level ``task:``; stored in every checkpoint).
TASKS: dict[str, TaskInfo] = {
    "semantic": TaskInfo(
        "semantic",
        "geoseg.tasks.semantic:SemanticSegmentationTask",
        semantic_outputs,
        "every pixel a class",
    ),
    "instance": TaskInfo(
        "instance",
        "geoseg.tasks.instance:InstanceSegmentationTask",
        instance_outputs,
        "each object of a thing class its own id",
        "geoseg.tasks.objects:ObjectInstanceTask",
    ),
    "panoptic": TaskInfo(
        "panoptic",
        "geoseg.tasks.instance:PanopticSegmentationTask",
        instance_outputs,
        "stuff classes per pixel and thing objects with ids",
        "geoseg.tasks.objects:ObjectPanopticTask",
    ),
}


def task_info(name: str) -> TaskInfo:
    """The registered task ``name``; ConfigError listing the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"task: unknown task {name!r}; valid tasks are {sorted(TASKS)}") from None


def has_objects(outputs: Sequence[OutputSpec]) -> bool:
    """True when a model outputs object lists (merged by the claim rule)."""
    return any(o.kind == OBJECTS for o in outputs)


def task_outputs(name: str, classes: ClassTable, adapter: Any = None) -> list[OutputSpec]:
    """The named outputs of a model of ``adapter``'s family for task ``name``.

    The task says what it needs (class scores, instance maps); a model family may answer
    differently (Mask R-CNN: an object list) or refuse the task (ConfigError).
    """
    default = task_info(name).outputs(classes)
    if adapter is None:
        return default
    value: list[OutputSpec] = adapter.task_outputs(name, classes, default)
    return value


def task_class(name: str, outputs: Sequence[OutputSpec] = ()) -> type[BaseTask]:
    """The Lightning module class of task ``name`` for a model with ``outputs``.

    Imports torch and Lightning. Object-list models get the task's object module.
    """
    info = task_info(name)
    path = info.module
    if has_objects(outputs):
        if not info.object_module:
            raise ConfigError(f"task: {name!r} has no object-list models")
        path = info.object_module
    module, _, cls = path.partition(":")
    value: Any = getattr(importlib.import_module(module), cls)
    return value


__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "TaskInfo",
    "has_objects",
    "instance_outputs",
    "semantic_outputs",
    "task_class",
    "task_info",
    "task_outputs",
]
