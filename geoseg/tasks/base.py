"""The base of every task: optimizer and schedule by name, epoch history, named outputs.

A task subclass (``semantic`` today; ``instance`` and ``panoptic`` next) adds its loss,
its metrics and its steps. The network is any ``nn.Module`` built by a model adapter;
the task sees its result as named outputs (:meth:`BaseTask.forward`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn

from geoseg.classes import ClassTable
from geoseg.config.training import TrainingConfig
from geoseg.models.adapter import ModelAdapter, pad_forward
from geoseg.models.outputs import OutputSpec
from geoseg.models.registry import get_adapter
from geoseg.tasks import task_info
from geoseg.tasks.optim import OPTIMIZERS, SCHEDULERS, pick


class Evaluator:
    """Accumulates a task's metrics over batches of model outputs, then reports them."""

    def to(self, device: str | torch.device) -> Evaluator:
        """Move metric states to ``device``; returns self."""
        return self

    def update(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> None:
        """Add one batch: the model's named outputs and the batch with its targets."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """The JSON-ready report of everything added so far."""
        raise NotImplementedError


class BaseTask(pl.LightningModule):
    """Lightning module shared by all tasks.

    Args:
        model: the network (from :func:`geoseg.models.build_model`).
        classes: the class table.
        config: the training section.
        adapter: the model adapter that built ``model`` (default ``smp``).
        outputs: the model's named outputs (default: the task's outputs for ``classes``).
    """

    #: Registry name of the task (``geoseg.tasks.TASKS``).
    task_name: ClassVar[str] = ""
    #: Logged metric that selects the best epoch (higher is better).
    monitor: ClassVar[str] = "val_miou"

    def __init__(
        self,
        model: nn.Module,
        classes: ClassTable,
        config: TrainingConfig | None = None,
        *,
        adapter: ModelAdapter | None = None,
        outputs: Sequence[OutputSpec] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.classes = classes
        self.config = config or TrainingConfig()
        self.adapter = adapter or get_adapter("smp")
        self.outputs = list(outputs or task_info(self.task_name).outputs(classes))
        #: Per-epoch records (epoch, train_loss, lr and the task's validation scores).
        self.history: list[dict[str, Any]] = []
        #: Last computed report per stage ("val", "test").
        self.reports: dict[str, dict[str, Any]] = {}
        #: What the network started from (:class:`geoseg.models.weights.PretrainedRecord`).
        self.pretrained: dict[str, Any] = {}
        self._train_losses: list[float] = []
        self._val_losses: list[float] = []
        self._pending: dict[str, Any] = {}

    @classmethod
    def evaluator(
        cls,
        classes: ClassTable,
        outputs: Sequence[OutputSpec],
        task_options: Mapping[str, Any] | None = None,
    ) -> Evaluator:
        """A fresh :class:`Evaluator` of this task (used by ``geoseg evaluate``)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's named outputs (not activated) for a batch of images."""
        raw = pad_forward(self.model, x, self.config.pad_multiple)
        return self.adapter.outputs(raw, self.outputs)

    def log_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log a training step's loss and keep it for the epoch record."""
        self.log(
            "train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size
        )
        self._train_losses.append(float(loss.detach()))

    def log_val_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log a validation step's loss and keep it for the epoch record."""
        self.log("val_loss", loss, prog_bar=False, on_epoch=True, batch_size=batch_size)
        self._val_losses.append(float(loss.detach()))

    def record_validation(self, scores: Mapping[str, Any]) -> None:
        """Keep a validation epoch's loss and ``scores`` for the next epoch record."""
        if self.trainer.sanity_checking:
            self._val_losses.clear()
            return
        vl = self._val_losses
        self._pending = {"val_loss": sum(vl) / len(vl) if vl else None, **scores}
        self._val_losses = []

    def on_train_epoch_end(self) -> None:
        """Append this epoch's record to :attr:`history`."""
        tl = self._train_losses
        opt = self.optimizers()
        lr = opt.param_groups[0]["lr"] if hasattr(opt, "param_groups") else None
        rec: dict[str, Any] = {
            "epoch": int(self.current_epoch),
            "train_loss": sum(tl) / len(tl) if tl else None,
            "lr": lr,
        }
        rec.update(self._pending)
        self._pending = {}
        self.history.append(rec)
        self._train_losses = []

    def configure_optimizers(self) -> Any:
        """Optimizer and LR schedule named in the config."""
        cfg = self.config
        opt = pick(OPTIMIZERS, cfg.optimizer, "optimizer")(self.model.parameters(), cfg)
        sched_factory = pick(SCHEDULERS, cfg.scheduler, "scheduler")
        if sched_factory is None:
            return opt
        steps = int(self.trainer.estimated_stepping_batches) if self._trainer else 1
        sched = sched_factory(opt, cfg, steps)
        if "monitor" in sched:
            sched["monitor"] = self.monitor
        return {"optimizer": opt, "lr_scheduler": sched}
