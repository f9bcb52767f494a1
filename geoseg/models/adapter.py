"""The model adapter protocol: how a model family plugs into training, prediction and export.

An adapter knows one family of networks (segmentation-models-pytorch today; HF
transformers, torchvision detection models and SAM fit the same contract) and answers,
for a model described by an architecture name, an encoder and keyword arguments:

* :meth:`ModelAdapter.build`: the ``torch.nn.Module`` for a number of input bands and the
  task's named outputs (:class:`~geoseg.models.outputs.OutputSpec`);
* :meth:`ModelAdapter.outputs`: the network's raw result as a dict of named tensors;
* :meth:`ModelAdapter.size_divisor`: what the input height and width must divide by;
* :meth:`ModelAdapter.export_module`: a module whose ``forward`` returns the activated
  outputs in order, for ONNX export and the PyTorch inference runner.

The checkpoint stores the adapter's name next to the architecture, so a checkpoint is
rebuilt by the adapter that made it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.classes import ClassTable
from geoseg.models.outputs import OutputSpec, pixel_channels


class ModelAdapter(ABC):
    """One family of segmentation networks (see the module docstring)."""

    #: Registry name, stored in checkpoints (``"smp"``).
    name: str = ""
    #: True for models that predict object lists and compute their own training loss
    #: from per-object targets (Mask R-CNN, Mask2Former): the task then calls
    #: :meth:`training_loss` instead of applying a per-pixel loss to the outputs.
    set_prediction: bool = False

    @property
    @abstractmethod
    def architectures(self) -> Mapping[str, Callable[..., nn.Module]]:
        """Architecture names this adapter builds (lower case) -> constructor."""

    @abstractmethod
    def build(
        self,
        arch: str | Callable[..., nn.Module],
        *,
        in_channels: int,
        outputs: Sequence[OutputSpec],
        encoder: str,
        kwargs: Mapping[str, Any],
        classes: ClassTable | None = None,
    ) -> nn.Module:
        """The network for ``in_channels`` input bands and the task's ``outputs``.

        ``classes`` is the class table (object models need its thing classes).
        """

    def task_outputs(
        self, task: str, classes: ClassTable, default: Sequence[OutputSpec]
    ) -> list[OutputSpec]:
        """The named outputs this family's models give for ``task`` (``default``: the task's).

        Raises:
            ConfigError: the family cannot do ``task``.
        """
        return list(default)

    def forward(self, model: nn.Module, x: torch.Tensor, multiple: int = 32) -> Any:
        """The raw result of ``model`` on a batch of any size (padded as the family needs)."""
        return pad_forward(model, x, multiple)

    def training_loss(
        self, model: nn.Module, x: torch.Tensor, batch: Mapping[str, Any], classes: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Set-prediction models: the loss of a batch and its named parts.

        ``classes`` holds the batch's class-index targets (IGNORE_INDEX = no-data).
        """
        raise NotImplementedError(f"adapter {self.name!r} has no own training loss")

    def size_divisor(self, arch: str, encoder: str, kwargs: Mapping[str, Any]) -> int:
        """Input height and width must be a multiple of this (pixels)."""
        return 1

    def outputs(self, raw: Any, outputs: Sequence[OutputSpec]) -> dict[str, torch.Tensor]:
        """Split a network's raw result into named outputs (not activated).

        The default handles networks returning one (B, C, H, W) tensor holding the
        per-pixel outputs stacked along C in ``outputs`` order.
        """
        pixel = [o for o in outputs if o.per_pixel]
        if len(pixel) == 1:
            return {pixel[0].name: raw}
        out: dict[str, torch.Tensor] = {}
        start = 0
        for o in pixel:
            out[o.name] = raw[:, start : start + o.channels]
            start += o.channels
        return out

    def export_module(self, model: nn.Module, outputs: Sequence[OutputSpec]) -> nn.Module:
        """A module mapping images to the activated per-pixel outputs, as a tuple in order."""
        return ActivatedOutputs(model, self, outputs)


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Apply an :data:`~geoseg.models.outputs.ACTIVATIONS` activation over channels."""
    if activation == "softmax":
        return torch.softmax(x, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    return x


class ActivatedOutputs(nn.Module):
    """``forward(x)`` -> tuple of activated per-pixel outputs (ONNX export, torch runner)."""

    def __init__(
        self, model: nn.Module, adapter: ModelAdapter, outputs: Sequence[OutputSpec]
    ) -> None:
        super().__init__()
        self.inner = model
        self.adapter = adapter
        self.specs = [o for o in outputs if o.per_pixel]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Activated outputs in spec order."""
        named = self.adapter.outputs(self.inner(x), self.specs)
        return tuple(activate(named[o.name], o.activation) for o in self.specs)


def check_pixel_outputs(outputs: Sequence[OutputSpec], adapter: str) -> int:
    """Total per-pixel channels; ValueError when a model family cannot make the outputs."""
    n = pixel_channels(outputs)
    if n == 0:
        raise ValueError(f"adapter {adapter!r} needs at least one per-pixel output")
    return n


def pad_forward(model: nn.Module, x: torch.Tensor, multiple: int = 32) -> Any:
    """Run ``model`` on ``x`` reflection-padded to a multiple of ``multiple`` pixels.

    smp encoders downsample up to 5 times and need H and W divisible by 32; padding
    then cropping the result lets any tile or chip size through. A tensor result is
    cropped back to ``x``'s size (a dict or tuple result must be cropped by its adapter).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    out = model(x)
    return out[..., :h, :w] if (ph or pw) else out
