"""Segmentation losses by name, and weighted sums of them.

A training config names its loss as one name or as ``{name: weight, ...}``::

    loss: ce                      # plain cross-entropy
    loss: {ce: 1.0, dice: 0.5}    # weighted sum

Every loss takes logits ``(B, K, H, W)`` and a target of class indices ``(B, H, W)`` in
which :data:`~geoseg.classes.IGNORE_INDEX` pixels are left out. Dice, Jaccard, focal and
Lovasz come from ``segmentation_models_pytorch.losses`` (all honour ``ignore_index`` in
multiclass mode); cross-entropy is torch's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geoseg.classes import IGNORE_INDEX
from geoseg.errors import ConfigError

LossFactory = Callable[..., nn.Module]


class _SafeIgnore(nn.Module):
    """Wrap a loss so an all-ignored batch gives 0 instead of NaN.

    torch's cross-entropy and smp's losses divide by the number of valid pixels; a batch
    that is all no-data (common at mosaic edges) would otherwise poison the gradient.
    """

    def __init__(self, inner: nn.Module, ignore_index: int) -> None:
        super().__init__()
        self.inner = inner
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0
        return self.inner(logits, target)


def _ce(*, class_weights: torch.Tensor | None, ignore_index: int, **kw: Any) -> nn.Module:
    ce = nn.CrossEntropyLoss(weight=class_weights, ignore_index=ignore_index, **kw)
    return _SafeIgnore(ce, ignore_index)


def _smp(name: str) -> LossFactory:
    def factory(*, class_weights: torch.Tensor | None, ignore_index: int, **kw: Any) -> nn.Module:
        from segmentation_models_pytorch import losses as smp_losses

        cls = getattr(smp_losses, name)
        if class_weights is not None and name != "LovaszLoss":
            kw.setdefault("class_weights", class_weights.tolist())
        return _SafeIgnore(cls(mode="multiclass", ignore_index=ignore_index, **kw), ignore_index)

    factory.__name__ = name
    return factory


#: Loss names accepted in ``training.loss`` (name -> factory taking class_weights,
#: ignore_index and loss-specific keywords).
LOSSES: dict[str, LossFactory] = {
    "ce": _ce,
    "dice": _smp("DiceLoss"),
    "jaccard": _smp("JaccardLoss"),
    "focal": _smp("FocalLoss"),
    "lovasz": _smp("LovaszLoss"),
}
#: Alternative spellings.
_ALIASES = {"cross_entropy": "ce", "crossentropy": "ce", "iou": "jaccard"}


class WeightedSumLoss(nn.Module):
    """A weighted sum of losses; ``parts`` maps a name to ``(weight, loss module)``."""

    def __init__(self, parts: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = {k: float(w) for k, (w, _) in parts.items()}
        self.parts = nn.ModuleDict({k: m for k, (_, m) in parts.items()})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum of every part's loss."""
        total = logits.new_zeros(())
        for name, module in self.parts.items():
            total = total + self.weights[name] * module(logits, target)
        return total


def _canonical(name: str) -> str:
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in LOSSES:
        raise ConfigError(
            f"training.loss: unknown loss {name!r}; valid names are {sorted(LOSSES)} "
            "(combine them as a mapping, e.g. {ce: 1.0, dice: 0.5})"
        )
    return key


def build_loss(
    spec: str | Mapping[str, float] | Callable[..., torch.Tensor],
    *,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> nn.Module:
    """Build the loss named by ``spec``.

    Args:
        spec: a name from :data:`LOSSES`, a mapping ``{name: weight}`` (weighted sum), or
            a callable ``(logits, target) -> loss`` used as is.
        class_weights: one weight per class (applied by ce, dice, jaccard and focal).
        ignore_index: target value left out of the loss.
        options: extra keywords per loss name, e.g. ``{"focal": {"gamma": 3.0}}``.

    Raises:
        ConfigError: an unknown loss name, a non-numeric or negative weight, or an empty
            mapping.
    """
    weights = None
    if class_weights is not None:
        weights = torch.as_tensor(class_weights, dtype=torch.float32)
    opts = {_canonical(k): dict(v) for k, v in (options or {}).items()}
    if callable(spec) and not isinstance(spec, (str, Mapping)):
        return spec if isinstance(spec, nn.Module) else _CallableLoss(spec)
    items: dict[str, float]
    if isinstance(spec, str):
        items = {spec: 1.0}
    elif isinstance(spec, Mapping):
        items = dict(spec)
    else:
        raise ConfigError(f"training.loss: expected a name or a mapping, got {spec!r}")
    if not items:
        raise ConfigError("training.loss: the loss mapping is empty; name at least one loss")
    parts: dict[str, tuple[float, nn.Module]] = {}
    for name, w in items.items():
        key = _canonical(str(name))
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ConfigError(f"training.loss.{name}: weight must be a number >= 0, got {w!r}")
        try:
            module = LOSSES[key](
                class_weights=weights, ignore_index=ignore_index, **opts.get(key, {})
            )
        except TypeError as exc:
            raise ConfigError(f"training.loss_options.{key}: {exc}") from None
        parts[key] = (float(w), module)
    if len(parts) == 1:
        ((w, module),) = parts.values()
        if w == 1.0:
            return module
    return WeightedSumLoss(parts)


class _CallableLoss(nn.Module):
    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, target)


def balanced_class_weights(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Inverse-frequency class weights ``N / (K * n_k)`` (scikit-learn's "balanced").

    Classes absent from the training split get weight 0 (they cannot be learnt, and an
    infinite weight would break the loss). The pixel-weighted mean weight is 1.
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    present = n > 0
    if not bool(present.any()):
        raise ConfigError("training.class_weights: the training split has no labelled pixels")
    k = int(present.sum())
    w = torch.zeros_like(n)
    w[present] = n[present].sum() / (k * n[present])
    return w.to(torch.float32)
