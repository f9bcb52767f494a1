"""What a model outputs: named outputs with a kind, so every stage knows how to use them.

A model adapter (:mod:`geoseg.models.adapter`) turns a network's raw result into a dict
of named tensors; each name has an :class:`OutputSpec` saying what it is:

* ``class_scores``: per-pixel scores over classes (B, K, H, W); softmax gives
  probabilities, overlapping windows are blended, the argmax is the class map.
* ``pixel_map``: other per-pixel maps (B, C, H, W), e.g. footprint / boundary / contact
  probabilities or centre offsets; blended like class scores.
* ``objects``: a list of objects per image (boxes, masks, scores), merged across windows
  by a rule that gives each object to exactly one window.

The specs travel in the checkpoint, so prediction, evaluation and export never guess.
This module has no heavy imports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geoseg.errors import CheckpointError

#: Output kinds (see the module docstring).
CLASS_SCORES = "class_scores"
PIXEL_MAP = "pixel_map"
OBJECTS = "objects"
OUTPUT_KINDS = (CLASS_SCORES, PIXEL_MAP, OBJECTS)

#: Activations turning raw outputs into what is blended and written.
ACTIVATIONS = ("softmax", "sigmoid", "identity")

#: Merge strategies across overlapping windows (``blend``: ``sum(w*p) / sum(w)``).
MERGES = ("blend", "claim")


@dataclass(frozen=True)
class OutputSpec:
    """One named model output.

    Attributes:
        name: key of the output (``"classes"`` for semantic class scores).
        kind: one of :data:`OUTPUT_KINDS`.
        channels: channels of a per-pixel output (0 for object lists).
        activation: one of :data:`ACTIVATIONS`, applied before merging and export.
        merge: how overlapping windows combine (:data:`MERGES`): per-pixel outputs are
            blended, object lists claimed by one window.
    """

    name: str
    kind: str
    channels: int
    activation: str = "identity"
    merge: str = "blend"

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise CheckpointError(f"output {self.name!r}: unknown kind {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise CheckpointError(f"output {self.name!r}: unknown activation {self.activation!r}")
        if self.merge not in MERGES:
            raise CheckpointError(f"output {self.name!r}: unknown merge {self.merge!r}")
        if self.kind != OBJECTS and not 1 <= self.channels <= 65536:
            raise CheckpointError(
                f"output {self.name!r}: {self.channels} channels (expected 1 to 65536)"
            )

    @property
    def per_pixel(self) -> bool:
        """True for outputs with a value per pixel (class scores and maps)."""
        return self.kind != OBJECTS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "channels": self.channels,
            "activation": self.activation,
            "merge": self.merge,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutputSpec:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                name=str(data["name"]),
                kind=str(data["kind"]),
                channels=int(data.get("channels", 0)),
                activation=str(data.get("activation", "identity")),
                merge=str(data.get("merge", "blend")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid output description {dict(data)!r}: {exc}") from exc


def class_scores(num_classes: int, name: str = "classes") -> OutputSpec:
    """Per-pixel scores over ``num_classes`` classes, softmax-activated and blended."""
    return OutputSpec(name, CLASS_SCORES, int(num_classes), "softmax")


def pixel_channels(outputs: Sequence[OutputSpec]) -> int:
    """Channels a network must produce for the per-pixel outputs, stacked in order."""
    return sum(o.channels for o in outputs if o.per_pixel)


def output_named(outputs: Sequence[OutputSpec], name: str) -> OutputSpec:
    """The spec called ``name``; CheckpointError naming the outputs there are."""
    for o in outputs:
        if o.name == name:
            return o
    raise CheckpointError(
        f"the model has no output {name!r}; its outputs are {[o.name for o in outputs]}"
    )
