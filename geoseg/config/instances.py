"""The ``instances:`` section: how objects are encoded for training and decoded back.

Used by the ``instance`` and ``panoptic`` tasks (see :mod:`geoseg.instances`); stored in
the checkpoint's ``task_options`` so that prediction decodes as training did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class InstanceConfig:
    """Encoding, decoding and loss of the footprint / boundary / contact maps.

    Attributes:
        boundary_px: width of an object's boundary ring in the targets (pixels).
        contact_px: distance within which two objects make ``contact`` pixels (pixels).
        footprint: decoding: footprint probability from which a pixel is in an object.
        boundary: decoding: a seed pixel has a boundary probability below this.
        contact: decoding: a seed pixel has a contact probability below this.
        grow_px: decoding: how far seeds grow through the footprint (pixels).
        min_seed_px: decoding: smaller seeds are noise and dropped (pixels).
        map_loss_weight: weight of the maps' loss next to the class loss.
        map_weights: weights of the footprint, boundary and contact maps in it.
    """

    boundary_px: int = 1
    contact_px: int = 5
    footprint: float = 0.5
    boundary: float = 0.5
    contact: float = 0.5
    grow_px: int = 4
    min_seed_px: int = 2
    map_loss_weight: float = 1.0
    map_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])

    def encode_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`geoseg.instances.EncodeParams`."""
        return {"boundary_px": self.boundary_px, "contact_px": self.contact_px}

    def decode_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`geoseg.instances.DecodeParams`."""
        return {
            "footprint": self.footprint,
            "boundary": self.boundary,
            "contact": self.contact,
            "grow_px": self.grow_px,
            "min_seed_px": self.min_seed_px,
        }

    def task_options(self) -> dict[str, Any]:
        """What a checkpoint stores (``ModelMetadata.task_options``)."""
        return {"encode": self.encode_options(), "decode": self.decode_options()}
