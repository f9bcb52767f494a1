"""The torchvision adapter: Mask R-CNN, the object-list instance model torchgeo users know.

Mask R-CNN answers a window with a list of objects (box, class, score, mask). geoseg
builds it from torchvision's parts (never downloading anything):

* a ResNet + FPN backbone (``model.encoder``: ``resnet18``, ``resnet34``, ``resnet50``,
  ...) with **any band count** (the first convolution takes the config's bands) and
  ordinary BatchNorm (frozen BatchNorm only makes sense for pretrained weights);
* **no resizing**: torchvision's transform rescales every image to ``min_size`` (800
  px) by default, which on remote sensing would change the ground resolution the model
  learned; geoseg feeds windows at their native resolution (:class:`NativeTransform`)
  and normalizes them itself, so the transform's mean / std are 0 / 1;
* anchors sized for objects of a few to a hundred pixels (``anchor_sizes``, default
  8 to 128 px), as buildings are at 0.3-2 m.

``model.kwargs`` (stored in the checkpoint): ``anchor_sizes``, ``score_threshold``
(default 0.5), ``mask_threshold`` (0.5), ``max_objects`` per window (100), ``min_pixels``
(4), ``overlap_threshold`` (0.5: a mask mostly covered by better-scoring masks of its
window is a duplicate and dropped), plus any keyword of
``torchvision.models.detection.MaskRCNN`` (``rpn_*``, ``box_*``).
Local weights (``model.encoder_weights``, e.g. a torchvision COCO ``.pth``) are loaded by
name and shape; the wrapper's own names are ``net.<torchvision name>``, and a file with
torchvision's names is matched too.

Objects from overlapping windows are merged by the claim rule of
:mod:`geoseg.instances.objects`; training uses torchvision's own losses (RPN, box and
mask), with targets made from the instance-id and class targets of each chip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.errors import ConfigError
from geoseg.instances.objects import ObjectList
from geoseg.models.adapter import ModelAdapter
from geoseg.models.outputs import OBJECTS, OutputSpec

#: The object-list output of object models.
OBJECTS_OUTPUT = OutputSpec("objects", OBJECTS, 0, "identity", "claim")

#: Options of the wrapper itself (the rest of ``model.kwargs`` goes to ``MaskRCNN``).
OWN_KWARGS = (
    "anchor_sizes",
    "score_threshold",
    "mask_threshold",
    "max_objects",
    "min_pixels",
    "overlap_threshold",
)


#: ``MaskRCNN`` keywords geoseg changes for remote-sensing windows (any can be overridden).
SMALL_WINDOW_DEFAULTS = {
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 1000,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_test": 500,
    "box_batch_size_per_image": 128,
}


def _native_transform(in_channels: int, size: int) -> nn.Module:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class NativeTransform(GeneralizedRCNNTransform):
        """torchvision's detection transform without the resize (native resolution)."""

        def resize(self, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
            return image, target

    return NativeTransform(size, size, [0.0] * in_channels, [1.0] * in_channels)


class MaskRCNNNet(nn.Module):
    """torchvision Mask R-CNN for ``in_channels`` bands and the thing classes of a table.

    ``forward(x)`` on a (B, C, H, W) batch returns torchvision's detections (eval mode)
    or, with ``targets``, its loss dict (train mode). ``thing_index`` maps torchvision's
    labels (1..K) to class-table indices.
    """

    def __init__(
        self,
        in_channels: int,
        thing_index: Sequence[int],
        *,
        encoder: str = "resnet18",
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        opts = dict(kwargs or {})
        anchors = tuple(int(s) for s in opts.pop("anchor_sizes", (8, 16, 32, 64, 128)))
        if len(anchors) != 5 or min(anchors) < 1:
            raise ConfigError(
                f"model.kwargs.anchor_sizes: five anchor sizes in pixels (one per FPN "
                f"level), got {list(anchors)}"
            )
        self.score_threshold = float(opts.pop("score_threshold", 0.5))
        self.mask_threshold = float(opts.pop("mask_threshold", 0.5))
        self.max_objects = int(opts.pop("max_objects", 100))
        self.min_pixels = int(opts.pop("min_pixels", 4))
        self.overlap_threshold = float(opts.pop("overlap_threshold", 0.5))
        if not (
            0.0 <= self.score_threshold <= 1.0
            and 0.0 < self.mask_threshold < 1.0
            and 0.0 <= self.overlap_threshold <= 1.0
        ):
            raise ConfigError(
                "model.kwargs: score_threshold and overlap_threshold in [0, 1], "
                "mask_threshold in (0, 1)"
            )
        if not 1 <= self.max_objects <= 10_000:
            raise ConfigError(f"model.kwargs.max_objects: 1..10000, got {self.max_objects}")
        try:
            backbone = resnet_fpn_backbone(
                backbone_name=encoder, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                f"model.encoder: {encoder!r} is not a torchvision ResNet for Mask R-CNN "
                "(resnet18, resnet34, resnet50, resnet101, resnext50_32x4d, ...)"
            ) from exc
        if in_channels != 3:
            old = backbone.body.conv1
            backbone.body.conv1 = nn.Conv2d(
                in_channels, old.out_channels, 7, stride=2, padding=3, bias=False
            )
        generator = AnchorGenerator(tuple((s,) for s in anchors), ((0.5, 1.0, 2.0),) * 5)
        # torchvision's defaults are sized for 800-1333 px COCO images with up to 100
        # objects; windows of a few hundred pixels need fewer proposals, and 128 sampled
        # RoIs per image (at most 32 positive) make the mask head ~4x cheaper to train
        for key, value in SMALL_WINDOW_DEFAULTS.items():
            opts.setdefault(key, value)
        try:
            self.net = MaskRCNN(
                backbone,
                num_classes=len(thing_index) + 1,
                rpn_anchor_generator=generator,
                box_score_thresh=min(self.score_threshold, 0.05),
                box_detections_per_img=self.max_objects,
                **opts,
            )
        except TypeError as exc:
            raise ConfigError(f"model.kwargs: {exc}") from exc
        # native resolution, geoseg's normalization (the size only matters for resizing)
        self.net.transform = _native_transform(in_channels, 512)
        self.thing_index: torch.Tensor
        self.register_buffer("thing_index", torch.tensor(list(thing_index), dtype=torch.int64))

    def forward(self, x: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        """One :class:`ObjectList` per image (eval), or the loss dict (train, with targets)."""
        if self.training:
            return self.net(list(x), targets)
        return detections_to_objects(self, self.net(list(x)))


def instance_targets(
    instances: torch.Tensor, classes: torch.Tensor, thing_index: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """Detection targets (torchvision's form) from a batch of instance ids and class targets.

    Args:
        instances: (B, H, W) object ids (0 = none).
        classes: (B, H, W) class indices (IGNORE_INDEX = no-data).
        thing_index: class-table index of each torchvision label 1..K.

    Each id becomes one object: its mask, its bounding box (x0, y0, x1, y1, ends
    exclusive) and the label of its majority thing class; ids whose pixels hold no
    thing class are skipped.
    """
    lut = torch.zeros(int(max(int(thing_index.max()) + 1, 1)) + 1, dtype=torch.int64)
    lut[thing_index.cpu()] = torch.arange(1, len(thing_index) + 1)
    out = []
    for inst, cls in zip(instances, classes):
        ids = torch.unique(inst)
        ids = ids[ids > 0]
        masks, boxes, labels = [], [], []
        for i in ids.tolist():
            m = inst == i
            c = cls[m]
            c = c[(c != IGNORE_INDEX) & (c < len(lut) - 1)]
            lab = lut[c.cpu()] if len(c) else torch.zeros(0, dtype=torch.int64)
            lab = lab[lab > 0]
            if not len(lab):
                continue
            rows = torch.nonzero(m.any(1)).flatten()
            cols = torch.nonzero(m.any(0)).flatten()
            boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
            labels.append(int(torch.mode(lab).values))
            masks.append(m)
        h, w = inst.shape
        dev = inst.device
        out.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32, device=dev).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64, device=dev),
                "masks": (torch.stack(masks) if masks else torch.zeros(0, h, w, device=dev)).to(
                    torch.uint8
                ),
            }
        )
    return out


def detections_to_objects(
    net: MaskRCNNNet, detections: list[dict[str, torch.Tensor]]
) -> list[ObjectList]:
    """Torchvision detections -> one :class:`ObjectList` per image (class-table labels)."""
    index = net.thing_index.cpu().numpy()
    out = []
    for d in detections:
        masks = d["masks"].detach().float().cpu().numpy()[:, 0]
        labels = index[d["labels"].detach().cpu().numpy() - 1]
        out.append(
            ObjectList.from_masks(
                masks,
                d["scores"].detach().float().cpu().numpy(),
                labels,
                mask_threshold=net.mask_threshold,
                score_threshold=net.score_threshold,
                min_pixels=net.min_pixels,
                max_objects=net.max_objects,
                overlap_threshold=net.overlap_threshold,
            )
        )
    return out


class TorchvisionAdapter(ModelAdapter):
    """torchvision detection models: ``maskrcnn`` (object lists; instance task)."""

    name = "torchvision"
    set_prediction = True

    @property
    def architectures(self) -> Mapping[str, Callable[..., nn.Module]]:
        """``maskrcnn``."""
        return {"maskrcnn": MaskRCNNNet}

    def task_outputs(
        self, task: str, classes: ClassTable, default: Sequence[OutputSpec]
    ) -> list[OutputSpec]:
        """Mask R-CNN predicts objects of the thing classes: the instance task only."""
        if task != "instance":
            raise ConfigError(
                f"model.arch: maskrcnn predicts objects only and cannot do the {task!r} task; "
                "use task: instance, or an smp model (per-pixel method) for semantic or "
                "panoptic"
            )
        if not classes.things:
            raise ConfigError("classes: mark the object classes with thing: true for maskrcnn")
        return [OBJECTS_OUTPUT]

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
        """A :class:`MaskRCNNNet` for the thing classes of ``classes``."""
        if classes is None:
            raise ConfigError("maskrcnn needs the class table (its thing classes)")
        things = [k for k, c in enumerate(classes) if c.thing]
        return MaskRCNNNet(in_channels, things, encoder=encoder, kwargs=kwargs)

    def forward(self, model: nn.Module, x: torch.Tensor, multiple: int = 32) -> Any:
        """The detections of a batch (torchvision pads to a multiple of 32 itself)."""
        return model(x)

    def outputs(self, raw: Any, outputs: Sequence[OutputSpec]) -> dict[str, Any]:
        """``{"objects": [ObjectList per image]}`` (the network already made them)."""
        return {"objects": raw}

    def training_loss(
        self, model: nn.Module, x: torch.Tensor, batch: Mapping[str, Any], classes: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum of torchvision's RPN, box and mask losses for a batch, and its parts."""
        assert isinstance(model, MaskRCNNNet)
        targets = instance_targets(batch["instances"], classes, model.thing_index)
        parts = model(x, targets)
        loss = sum(parts.values())
        assert isinstance(loss, torch.Tensor)
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    def export_module(self, model: nn.Module, outputs: Sequence[OutputSpec]) -> nn.Module:
        """Object models run with the PyTorch runner only (no ONNX graph)."""
        raise ConfigError("maskrcnn models run with backend='torch' (no ONNX export)")
