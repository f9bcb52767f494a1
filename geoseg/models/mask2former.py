"""The transformers adapter: Mask2Former, one query-based model for every task.

HuggingFace transformers' ``Mask2FormerForUniversalSegmentation`` answers a window with
``num_queries`` (class, mask) pairs. geoseg builds it **from a config only** (a Swin
backbone of any band count, random initialisation; never a hub name, never a download)
and reads its queries three ways:

* ``semantic``: per-pixel class scores as transformers' semantic post-processing
  computes them (softmax over the query classes without the null class, times the
  sigmoid of the query masks upsampled to the input, summed over queries). The
  ``classes`` output is the **log** of these scores, so the semantic task's softmax
  turns them into the normalized scores ``s / sum(s)``: prediction, evaluation,
  blending and the writers work unchanged, and ONNX export is the semantic one.
* ``instance``: an object list per window (the thing classes; score = class
  probability x mean mask probability inside the mask, as transformers' instance
  post-processing), merged across windows by the claim rule like Mask R-CNN's
  (:mod:`geoseg.instances.objects`).
* ``panoptic``: both: ``classes`` scores over the whole table (the stuff of each pixel)
  and the objects of the queries whose class is a thing.

Training uses Mask2Former's own set-prediction loss (Hungarian matching, class
cross-entropy, point-sampled mask BCE and Dice, auxiliary losses of every decoder
layer). Targets are one binary mask per class present in the chip (semantic; stuff
classes of panoptic) and one per object (instance; things of panoptic). **No-data
pixels** (``IGNORE_INDEX``) belong to no target mask and are excluded from the mask
losses: the validity map is sampled at the same points as the masks and weights the
BCE and Dice terms. The Hungarian matching cost still sees them (as background of every
mask); with little no-data this only affects which query learns which mask.

``model.kwargs`` (stored in the checkpoint): any key of ``Mask2FormerConfig``
(``num_queries``, ``hidden_dim``, ``decoder_layers``, ...; small CPU defaults below,
about 2 M parameters; ``num_queries`` defaults to 20, or the number of labels + 10),
``backbone``: a dict of ``SwinConfig`` keys (``embed_dim``, ``depths``, ``num_heads``,
``window_size``, ...), and for object lists ``score_threshold`` (0.5),
``mask_threshold`` (0.5), ``max_objects`` (100), ``min_pixels`` (4) and
``overlap_threshold`` (0.5), as for Mask R-CNN. ``model.encoder`` must be ``swin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.errors import ConfigError
from geoseg.instances.objects import ObjectList
from geoseg.models.adapter import ModelAdapter
from geoseg.models.detection import OBJECTS_OUTPUT, instance_targets
from geoseg.models.outputs import OBJECTS, OutputSpec, class_scores

#: Options of the wrapper itself (the rest of ``model.kwargs`` goes to Mask2FormerConfig).
OWN_KWARGS = {
    "score_threshold": 0.5,
    "mask_threshold": 0.5,
    "max_objects": 100,
    "min_pixels": 4,
    "overlap_threshold": 0.5,
}

#: Mask2FormerConfig defaults for CPU windows of 64-512 px (about 2 M parameters).
SMALL_DEFAULTS: dict[str, Any] = {
    "num_queries": 20,
    "feature_size": 64,
    "mask_feature_size": 64,
    "hidden_dim": 64,
    "encoder_layers": 2,
    "decoder_layers": 4,
    "num_attention_heads": 4,
    "dim_feedforward": 256,
    "encoder_feedforward_dim": 256,
    "train_num_points": 2048,
}

#: SwinConfig defaults (a 4-stage Swin of width 32).
SWIN_DEFAULTS: dict[str, Any] = {
    "embed_dim": 32,
    "depths": [1, 1, 2, 1],
    "num_heads": [1, 2, 4, 8],
    "window_size": 7,
}

#: Config keys geoseg sets itself (refused in ``model.kwargs``).
RESERVED = {
    "backbone_config", "num_labels", "id2label", "label2id", "use_pretrained_backbone",
    "backbone", "use_timm_backbone", "backbone_kwargs", "num_channels", "out_features",
    "out_indices", "transformers_version", "architectures", "model_type", "_name_or_path",
}  # fmt: skip

#: Sane bounds of the config values that size the network (``model.kwargs``).
BOUNDS: dict[str, tuple[int, int]] = {
    "num_queries": (1, 2000),
    "encoder_layers": (1, 48),
    "decoder_layers": (1, 48),
    "hidden_dim": (8, 4096),
    "feature_size": (8, 4096),
    "mask_feature_size": (8, 4096),
    "dim_feedforward": (8, 65536),
    "encoder_feedforward_dim": (8, 65536),
    "train_num_points": (1, 1_000_000),
}

#: Mask2Former's input must be a multiple of this many pixels (padded inside the net).
PAD_MULTIPLE = 32

#: The modes of the network (which outputs it gives), by task.
MODES = ("semantic", "instance", "panoptic")


def _check_keys(given: Mapping[str, Any], valid: set[str], where: str) -> None:
    bad = sorted(set(given) - valid)
    if bad:
        raise ConfigError(
            f"{where}: unknown key {bad[0]!r} for mask2former; valid keys are {sorted(valid)}"
        )


def mask2former_config(in_channels: int, num_labels: int, kwargs: Mapping[str, Any]) -> Any:
    """The ``Mask2FormerConfig`` (Swin backbone of ``in_channels`` bands) for ``kwargs``.

    Raises:
        ConfigError: an unknown or reserved key, or values transformers rejects.
    """
    import transformers

    m2f: Any = transformers.Mask2FormerConfig
    swin_config: Any = transformers.SwinConfig
    opts = {k: v for k, v in kwargs.items() if k not in OWN_KWARGS and k != "backbone"}
    backbone = kwargs.get("backbone") or {}
    if not isinstance(backbone, Mapping):
        raise ConfigError("model.kwargs.backbone: a mapping of SwinConfig keys")
    valid = set(m2f().to_dict()) - RESERVED
    _check_keys(opts, valid | {"backbone", *OWN_KWARGS}, "model.kwargs")
    _check_keys(backbone, set(swin_config().to_dict()) - RESERVED, "model.kwargs.backbone")
    # each class present in a window needs a query of its own (semantic targets)
    opts = {**SMALL_DEFAULTS, "num_queries": max(20, num_labels + 10), **opts}
    for key, (lo, hi) in BOUNDS.items():
        value = opts.get(key)
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"model.kwargs.{key}: an integer from {lo} to {hi}, got {value!r}")
    swin = {**SWIN_DEFAULTS, **backbone}
    depths = list(swin["depths"])
    try:
        stages = [f"stage{i + 1}" for i in range(len(depths))]
        swin_cfg = swin_config(num_channels=in_channels, out_features=stages, **swin)
        return m2f(
            backbone_config=swin_cfg,
            num_labels=num_labels,
            use_pretrained_backbone=False,
            **opts,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.kwargs: Mask2Former rejects the config: {exc}") from exc


def _masked_loss_class() -> type:
    """Mask2Former's loss with its mask terms restricted to valid (not no-data) pixels."""
    from transformers.models.mask2former.modeling_mask2former import (
        Mask2FormerLoss,
        sample_point,
    )

    class MaskedMask2FormerLoss(Mask2FormerLoss):
        """``loss_masks`` weighted by the validity map :attr:`valid` (B, H, W), if set."""

        valid: torch.Tensor | None = None

        def loss_masks(
            self, masks_queries_logits: torch.Tensor, mask_labels: list[torch.Tensor],
            indices: Any, num_masks: Any,
        ) -> dict[str, torch.Tensor]:  # fmt: skip
            if self.valid is None:
                return dict(super().loss_masks(masks_queries_logits, mask_labels, indices,
                                               num_masks))  # fmt: skip
            src = self._get_predictions_permutation_indices(indices)
            tgt = self._get_targets_permutation_indices(indices)
            pred = masks_queries_logits[src][:, None]
            target = self._pad_images_to_max_in_batch(mask_labels)[0][tgt][:, None]
            valid = self.valid[tgt[0]][:, None].to(pred.dtype)
            ratio: Any = self.oversample_ratio
            with torch.no_grad():
                points = self.sample_points_using_uncertainty(
                    pred, self.calculate_uncertainty, self.num_points, ratio,
                    self.importance_sample_ratio,
                )  # fmt: skip
                labels = sample_point(target, points, align_corners=False).squeeze(1)
                weight = sample_point(valid, points, align_corners=False).squeeze(1)
            logits = sample_point(pred, points, align_corners=False).squeeze(1)
            return masked_point_losses(logits, labels, weight, num_masks)

    return MaskedMask2FormerLoss


def masked_point_losses(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, num_masks: Any
) -> dict[str, torch.Tensor]:
    """Mask2Former's point BCE and Dice (per mask, summed / ``num_masks``), weighted.

    Args:
        logits: (N, P) mask logits at the sampled points.
        labels: (N, P) target values there.
        weight: (N, P) validity there (0 = no-data; a point does not count).
        num_masks: the normalizer of transformers' loss.
    """
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    bce = (bce * weight).sum(1) / weight.sum(1).clamp_min(1.0)
    p = torch.sigmoid(logits) * weight
    inter = 2 * (p * labels).sum(-1)
    dice = 1 - (inter + 1) / (p.sum(-1) + (labels * weight).sum(-1) + 1)
    return {"loss_mask": bce.sum() / num_masks, "loss_dice": dice.sum() / num_masks}


class Mask2FormerNet(nn.Module):
    """Mask2Former for ``in_channels`` bands and a class table, in one of :data:`MODES`.

    ``forward(x)`` on a (B, C, H, W) batch of any size returns the ``classes`` log-scores
    (semantic), a list of :class:`ObjectList` (instance) or a dict of both (panoptic).
    ``label_index`` maps Mask2Former's labels to class-table indices; ``label_thing``
    says which labels are things (their queries become objects).
    """

    def __init__(
        self,
        in_channels: int,
        classes: ClassTable,
        *,
        mode: str = "semantic",
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from transformers import Mask2FormerForUniversalSegmentation

        if mode not in MODES:
            raise ConfigError(f"mask2former: unknown mode {mode!r}; valid modes are {MODES}")
        opts = {**OWN_KWARGS, **dict(kwargs or {})}
        self.mode = mode
        try:
            self.score_threshold = float(opts["score_threshold"])
            self.mask_threshold = float(opts["mask_threshold"])
            self.max_objects = int(opts["max_objects"])
            self.min_pixels = int(opts["min_pixels"])
            self.overlap_threshold = float(opts["overlap_threshold"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.kwargs: thresholds are numbers ({exc})") from exc
        if not (
            0.0 <= self.score_threshold <= 1.0
            and 0.0 < self.mask_threshold < 1.0
            and 0.0 <= self.overlap_threshold <= 1.0
            and 1 <= self.max_objects <= 10_000
        ):
            raise ConfigError(
                "model.kwargs: score_threshold and overlap_threshold in [0, 1], "
                "mask_threshold in (0, 1), max_objects 1..10000"
            )
        things = [k for k, c in enumerate(classes) if c.thing]
        index = things if mode == "instance" else list(range(len(classes)))
        if not index:
            raise ConfigError("classes: mark the object classes with thing: true for mask2former")
        config = mask2former_config(in_channels, len(index), opts)
        self.net: Any = Mask2FormerForUniversalSegmentation(config)
        self.net.criterion = _masked_loss_class()(config=config, weight_dict=self.net.weight_dict)
        self.label_index: torch.Tensor
        self.label_thing: torch.Tensor
        self.register_buffer("label_index", torch.tensor(index, dtype=torch.int64))
        thing = [mode != "semantic" and k in things for k in index]
        self.register_buffer("label_thing", torch.tensor(thing, dtype=torch.bool))

    def _run(self, x: torch.Tensor) -> tuple[Any, tuple[int, int]]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.net(pixel_values=x, output_auxiliary_logits=self.training), (h, w)

    @property
    def encoder(self) -> nn.Module:
        """The Swin backbone: where ``model.encoder_weights`` load.

        A file holding a transformers ``SwinModel`` / ``SwinBackbone`` state dict (or a
        whole Mask2Former's) matches it by tensor name.
        """
        return self.net.model.pixel_level_module.encoder

    def forward(self, x: torch.Tensor) -> Any:
        """``classes`` log-scores, object lists, or both (see the class docstring)."""
        out, (h, w) = self._run(x)
        padded = (h + (-h) % PAD_MULTIPLE, w + (-w) % PAD_MULTIPLE)
        # as transformers' post-processing: upsample the mask logits, then the sigmoid
        masks = F.interpolate(out.masks_queries_logits, size=padded, mode="bilinear",
                              align_corners=False)[..., :h, :w]  # fmt: skip
        result: dict[str, Any] = {}
        if self.mode != "instance":
            probs = out.class_queries_logits.softmax(-1)[..., :-1]
            scores = torch.einsum("bqc,bqhw->bchw", probs, masks.sigmoid())
            result["classes"] = torch.log(scores.clamp_min(1e-6))
        if self.mode != "semantic":
            result["objects"] = self.objects(out.class_queries_logits, masks)
        if self.mode == "semantic":
            return result["classes"]
        return result["objects"] if self.mode == "instance" else result

    def objects(self, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> list[ObjectList]:
        """One :class:`ObjectList` per image from the thing queries (full-size mask logits).

        A query's class is its most probable thing label; its score is that probability
        times the mean mask probability inside its mask (transformers' instance score).
        """
        probs = class_logits.softmax(-1)[..., :-1] * self.label_thing.to(class_logits.dtype)
        score, label = probs.max(-1)
        prob = mask_logits.sigmoid()
        inside = (mask_logits > 0).to(prob.dtype)
        mask_score = (prob * inside).flatten(2).sum(-1) / inside.flatten(2).sum(-1).clamp_min(1e-6)
        scores = (score * mask_score).detach().float().cpu().numpy()
        labels = self.label_index[label].cpu().numpy()
        masks = prob.detach().float().cpu().numpy()
        return [
            ObjectList.from_masks(
                masks[i],
                scores[i],
                labels[i],
                mask_threshold=self.mask_threshold,
                score_threshold=self.score_threshold,
                min_pixels=self.min_pixels,
                max_objects=self.max_objects,
                overlap_threshold=self.overlap_threshold,
            )
            for i in range(len(masks))
        ]

    def loss(
        self, x: torch.Tensor, targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        """Mask2Former's loss for ``targets`` (masks (N, H, W), labels (N,)) per image.

        ``valid`` (B, H, W) is False on no-data pixels (left out of the mask losses).
        """
        out, (h, w) = self._run(x)
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        masks = [F.pad(m.float(), (0, pw, 0, ph)) for m, _ in targets]
        labels = [lab.long() for _, lab in targets]
        criterion: Any = self.net.criterion
        criterion.valid = F.pad(valid.float(), (0, pw, 0, ph))
        try:
            parts = self.net.get_loss_dict(
                out.masks_queries_logits, out.class_queries_logits, masks, labels,
                out.auxiliary_logits,
            )  # fmt: skip
        finally:
            criterion.valid = None
        loss = self.net.get_loss(parts)
        named = {"ce": "loss_cross_entropy", "mask": "loss_mask", "dice": "loss_dice"}
        return loss, {k: float(parts[v].detach()) for k, v in named.items() if v in parts}


def set_targets(
    net: Mask2FormerNet, batch: Mapping[str, Any], classes: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-image (masks, labels) targets of ``net``'s mode from a batch.

    Semantic (and the stuff of panoptic): one mask per class present on valid pixels.
    Instance (and the things of panoptic): one mask per object id (majority thing class,
    :func:`geoseg.models.detection.instance_targets`). Labels are Mask2Former's.
    """
    index = net.label_index
    lut = torch.full((int(index.max()) + 1,), -1, dtype=torch.int64, device=classes.device)
    lut[index] = torch.arange(len(index), device=classes.device)
    things = index[net.label_thing]
    per_object = []
    if net.mode != "semantic":
        per_object = instance_targets(batch["instances"], classes, things)
    out = []
    for i, cls in enumerate(classes):
        masks, labels = [], []
        if net.mode != "instance":
            present = torch.unique(cls[(cls != IGNORE_INDEX) & (cls < len(lut))])
            for k in present.tolist():
                if lut[k] >= 0 and not bool(net.label_thing[lut[k]]):
                    masks.append(cls == k)
                    labels.append(int(lut[k]))
        if per_object:
            t = per_object[i]
            masks.extend(m.bool() for m in t["masks"])
            labels.extend(int(lut[things[j - 1]]) for j in t["labels"].tolist())
        h, w = cls.shape
        stacked = torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool)
        out.append((stacked.to(cls.device), torch.tensor(labels, dtype=torch.int64,
                                                         device=cls.device)))  # fmt: skip
    return out


def valid_pixels(
    net: Mask2FormerNet, batch: Mapping[str, Any], classes: torch.Tensor
) -> torch.Tensor:
    """(B, H, W) pixels the mask losses count.

    Not no-data, and (instance, panoptic) not a thing-class pixel outside every object
    (no target can say what it is).
    """
    valid = classes != IGNORE_INDEX
    if net.mode == "semantic":
        return valid
    things = net.label_index[net.label_thing].to(classes.device)
    return valid & ~(torch.isin(classes, things) & (batch["instances"] == 0))


def mode_of(outputs: Sequence[OutputSpec]) -> str:
    """The network mode for a task's named outputs (``classes`` and / or ``objects``)."""
    objects = any(o.kind == OBJECTS for o in outputs)
    scores = any(o.name == "classes" for o in outputs)
    if objects:
        return "panoptic" if scores else "instance"
    if scores:
        return "semantic"
    raise ConfigError(
        f"mask2former gives class scores and / or objects, not {[o.name for o in outputs]}"
    )


class TransformersAdapter(ModelAdapter):
    """HuggingFace transformers models built from configs: ``mask2former``."""

    name = "transformers"
    set_prediction = True

    @property
    def architectures(self) -> Mapping[str, Callable[..., nn.Module]]:
        """``mask2former``."""
        return {"mask2former": Mask2FormerNet}

    def task_outputs(
        self, task: str, classes: ClassTable, default: Sequence[OutputSpec]
    ) -> list[OutputSpec]:
        """Semantic: class scores; instance: objects; panoptic: class scores and objects."""
        if task == "semantic":
            return [class_scores(len(classes))]
        if task not in ("instance", "panoptic"):
            raise ConfigError(f"model.arch: mask2former cannot do the {task!r} task")
        if not classes.things:
            raise ConfigError("classes: mark the object classes with thing: true for mask2former")
        if task == "instance":
            return [OBJECTS_OUTPUT]
        return [class_scores(len(classes)), OBJECTS_OUTPUT]

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
        """A :class:`Mask2FormerNet` in the mode of ``outputs``."""
        if classes is None:
            raise ConfigError("mask2former needs the class table")
        if encoder != "swin":
            raise ConfigError(
                f"model.encoder: mask2former is built with a Swin backbone from a config; "
                f"set encoder: swin (got {encoder!r}; its size is model.kwargs.backbone)"
            )
        return Mask2FormerNet(in_channels, classes, mode=mode_of(outputs), kwargs=kwargs)

    def forward(self, model: nn.Module, x: torch.Tensor, multiple: int = 32) -> Any:
        """The network's result on a batch of any size (it pads to 32 px itself)."""
        return model(x)

    def outputs(self, raw: Any, outputs: Sequence[OutputSpec]) -> dict[str, Any]:
        """``classes`` and / or ``objects``, as the network's mode gives them."""
        if isinstance(raw, dict):
            return raw
        if isinstance(raw, torch.Tensor):
            return {"classes": raw}
        return {"objects": raw}

    def training_loss(
        self, model: nn.Module, x: torch.Tensor, batch: Mapping[str, Any], classes: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mask2Former's set-prediction loss of a batch and its last-layer parts."""
        assert isinstance(model, Mask2FormerNet)
        targets = set_targets(model, batch, classes)
        return model.loss(x, targets, valid_pixels(model, batch, classes))

    def export_module(self, model: nn.Module, outputs: Sequence[OutputSpec]) -> nn.Module:
        """Semantic models export their activated class scores; object models cannot."""
        if any(o.kind == OBJECTS for o in outputs):
            raise ConfigError(
                "mask2former instance / panoptic models output object lists; they run with "
                "backend='torch' (no ONNX export)"
            )
        return super().export_module(model, outputs)
