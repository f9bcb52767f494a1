"""Instance and panoptic segmentation with object-list models (Mask R-CNN, Mask2Former).

The model computes its own training loss from per-object targets (made from each chip's
instance ids and class targets, :meth:`geoseg.models.ModelAdapter.training_loss`);
validation paints every chip's objects exactly as prediction does (a pixel covered by
several objects takes the highest score, :mod:`geoseg.instances.objects`) and scores
them like the per-pixel method: SpaceNet F1 (IoU >= 0.5), precision, recall, panoptic
quality and the semantic metrics of the fused class map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.config.instances import InstanceConfig
from geoseg.config.training import TrainingConfig
from geoseg.instances.decoding import DecodeParams
from geoseg.models.adapter import ModelAdapter
from geoseg.models.outputs import OutputSpec
from geoseg.tasks.base import Evaluator
from geoseg.tasks.instance import InstanceEvaluator, ScoredInstanceTask
from geoseg.tasks.semantic import class_targets


class ObjectEvaluator(InstanceEvaluator):
    """:class:`InstanceEvaluator` for models that output object lists."""

    def update(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """Add one batch: the model's ``objects`` (and ``classes`` scores, if any)."""
        y = class_targets(batch)
        yn = y.cpu().numpy()
        ok = yn != IGNORE_INDEX
        truth = batch["instances"].cpu().numpy()
        stuff = sorted(self.stuffs) or [0]
        if "classes" in outputs:
            scores = outputs["classes"].detach().float().cpu().numpy()
            stuff_cls = np.asarray(stuff)[scores[:, stuff].argmax(1)]
        else:
            stuff_cls = np.full(yn.shape, stuff[0], np.int64)
        fused = np.empty(yn.shape, np.int64)
        for i, objects in enumerate(outputs["objects"]):
            ids, cls = objects.to_ids(yn.shape[1:])
            fused[i] = np.where(ids > 0, cls, stuff_cls[i])
            self.objects.add(ids, truth[i], ok[i])
            self.pq.update(*self._panoptic(ids, fused[i], stuff_cls[i], truth[i], yn[i], ok[i]))
        self.semantic.update(torch.from_numpy(fused).to(y.device), y)


class ObjectInstanceTask(ScoredInstanceTask):
    """Objects of the thing classes from an object-list model (the ``instance`` task).

    Args:
        model: the network (its adapter has ``set_prediction``).
        classes: the class table (thing classes marked).
        config: the training section (optimizer, schedule, epochs; the loss is the
            model's own).
        class_weights: not used (the model's losses are per object).
        adapter: the model adapter.
        outputs: the model's named outputs (``objects``).
        instances: the ``instances:`` section (not used by object models).
    """

    def __init__(
        self,
        model: nn.Module,
        classes: ClassTable,
        config: TrainingConfig | None = None,
        *,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        adapter: ModelAdapter | None = None,
        outputs: Sequence[OutputSpec] | None = None,
        instances: InstanceConfig | None = None,
    ) -> None:
        super().__init__(model, classes, config, adapter=adapter, outputs=outputs)
        if not self.adapter.set_prediction:
            raise TypeError(f"adapter {self.adapter.name!r} does not predict object lists")
        self._evaluators: dict[str, Evaluator] = {}

    @classmethod
    def evaluator(cls, classes: ClassTable, outputs: Sequence[OutputSpec],
                  task_options: Mapping[str, Any] | None = None) -> ObjectEvaluator:  # fmt: skip
        """Scores of a checkpoint's objects."""
        return ObjectEvaluator(classes, DecodeParams(), panoptic=cls.panoptic)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """The model's named outputs (eval mode: ``objects``, one list per image)."""
        return self.adapter.outputs(self.adapter.forward(self.model, x), self.outputs)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """The model's own loss on one batch (its parts logged as ``train_<name>``)."""
        loss, parts = self.adapter.training_loss(
            self.model, batch["image"], batch, class_targets(batch)
        )
        for name, value in parts.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True)
        self.log_train_loss(loss, len(batch["image"]))
        return loss

    def _evaluate(self, stage: str, batch: Mapping[str, Any]) -> None:
        out = self(batch["image"])
        if stage not in self._evaluators:
            self._evaluators[stage] = ObjectEvaluator(
                self.classes, DecodeParams(), panoptic=self.panoptic
            ).to(self.device)
        self._evaluators[stage].update(out, batch)


class ObjectPanopticTask(ObjectInstanceTask):
    """Stuff per pixel (the ``classes`` output) and thing objects (the ``panoptic`` task)."""

    task_name: ClassVar[str] = "panoptic"
    monitor: ClassVar[str] = "val_pq"
    panoptic: ClassVar[bool] = True
