"""What a prediction writes, per task: decoding blended model outputs into raster products.

The block tasks of :mod:`geoseg.inference.graph` blend every per-pixel model output over
the overlapping windows (``sum(w*p) / sum(w)``); a *decoder* then turns the blended maps of
one output block into the arrays of the task's raster products, and names those products
for the writer (:class:`geoseg.io.cog.RasterProduct`). Decoders are small picklable
objects shipped to Dask workers.

* ``semantic``: :class:`SemanticDecoder`: the class map (argmax of the blended class
  probabilities, as class ids, with colour table and names) and, on request, the
  probabilities (uint8, ``p = v / 254``, 255 = no-data).
* ``instance`` / ``panoptic``: :class:`InstanceDecoder`: blocks keep the blended maps in
  an intermediate raster; a chunked decode over it (:mod:`geoseg.inference.instances`,
  equal to one whole-scene pass) then writes the instance-id COG (band 1: the id,
  uint32, 0 = no object, unique over the mosaic; band 2: the object's class id), the
  class map fused with it (an object's pixels take the object's class; other pixels the
  most probable stuff class) and, on request, a table of objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.classes import CLASSES_TAG, ClassTable
from geoseg.inference.device import argmax0, quantize
from geoseg.instances.decoding import DecodeParams
from geoseg.io.bands import INSTANCES_TAG
from geoseg.io.cog import RasterProduct

#: Probability raster convention: value v encodes p = v / PROB_SCALE; PROB_NODATA = no-data.
PROB_SCALE = 254
PROB_NODATA = 255


@dataclass(frozen=True)
class SemanticDecoder:
    """Class map (and probabilities) from the blended ``classes`` output.

    Attributes:
        classes: the class table (class ids, no-data value, raster dtype).
        probabilities: also produce the probability raster.
    """

    classes: ClassTable
    probabilities: bool = False
    #: decode() takes maps left on the model's device (geoseg.inference.device)
    device_maps = True

    @classmethod
    def for_checkpoint(
        cls, meta: Any, *, probabilities: bool = False, chunk: int = 1024
    ) -> SemanticDecoder:
        """The decoder of a semantic checkpoint's metadata.

        ``chunk`` is not used: semantic decoding has no step across blocks.
        """
        return cls(meta.classes, probabilities)

    def products(self) -> list[RasterProduct]:
        """``classes`` (and ``probabilities``) rasters."""
        classes = self.classes
        out = [
            RasterProduct(
                "classes", 1, classes.dtype(), classes.nodata_value(), "mode", classes=classes
            )
        ]
        if self.probabilities:
            out.append(
                RasterProduct(
                    "probabilities",
                    len(classes),
                    "uint8",
                    PROB_NODATA,
                    "average",
                    band_names=tuple(classes.names),
                    scale=1.0 / PROB_SCALE,
                    tags={CLASSES_TAG: classes.to_json()},
                    interleave="band",
                )
            )
        return out

    def decode(self, maps: Mapping[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays of the block's products from the blended outputs and the valid mask."""
        p = maps["classes"]  # numpy, or a tensor on the model's device (device_maps)
        lut = np.asarray(self.classes.ids, dtype=np.int64)
        classes = lut[argmax0(p)].astype(self.classes.dtype())
        classes[~valid] = self.classes.nodata_value()
        arrays = {"classes": classes}
        if self.probabilities:
            q = quantize(p, float(PROB_SCALE))
            q[:, ~valid] = PROB_NODATA
            arrays["probabilities"] = q
        return arrays


#: Band names of the intermediate maps raster of instance decoding (then class names).
MAP_BANDS = ("footprint", "boundary", "contact")


@dataclass(frozen=True)
class InstanceDecoder:
    """Instance ids and the fused class map from blended class scores + instance maps.

    Attributes:
        classes: the class table (its ``thing`` classes are the ones with objects).
        params: the decoding parameters (from the checkpoint's ``task_options``).
        probabilities: also produce the class probability raster.
        chunk: side of the decode chunks in pixels (any value gives the same result).
    """

    classes: ClassTable
    params: DecodeParams
    probabilities: bool = False
    chunk: int = 1024

    @classmethod
    def for_checkpoint(
        cls, meta: Any, *, probabilities: bool = False, chunk: int = 1024
    ) -> InstanceDecoder:
        """The decoder of an instance or panoptic checkpoint's metadata."""
        params = DecodeParams.from_dict(meta.task_options.get("decode"))
        return cls(meta.classes, params, probabilities, chunk)

    def products(self) -> list[RasterProduct]:
        """Block products: the intermediate maps (and the final probabilities)."""
        names = (*MAP_BANDS, *self.classes.names)
        out = [RasterProduct("maps", len(names), "uint8", PROB_NODATA, "average",
                             band_names=names, interleave="band")]  # fmt: skip
        if self.probabilities:
            out.append(SemanticDecoder(self.classes, True).products()[1])
        return out

    def decode(self, maps: Mapping[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
        """The block's blended maps, quantized (``v = round(p * 254)``, 255 = no-data)."""
        stack = np.concatenate([maps["instance_maps"], maps["classes"]])
        q = np.rint(np.clip(stack, 0.0, 1.0) * float(PROB_SCALE)).astype(np.uint8)
        q[:, ~valid] = PROB_NODATA
        arrays = {"maps": q}
        if self.probabilities:
            arrays["probabilities"] = q[len(MAP_BANDS) :]
        return arrays

    def final_products(self) -> list[RasterProduct]:
        """What the decode pass writes: the fused class map and the instance ids."""
        return instance_products(self.classes)

    def fuse(self, ids: np.ndarray, maps: np.ndarray, valid: np.ndarray,
             object_class: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """Final arrays of a chunk: class map and instance bands."""
        table = self.classes
        stuff = [k for k, c in enumerate(table) if not c.thing] or list(range(len(table)))
        lut = np.asarray(table.ids, np.int64)
        probs = maps[len(MAP_BANDS) :]
        cls = lut[np.asarray(stuff)[argmax0(probs[stuff])]]
        obj = ids > 0
        obj_cls = np.zeros(ids.shape, np.int64)
        obj_cls[obj] = object_class[ids[obj].astype(np.int64) - 1]
        cls[obj] = obj_cls[obj]
        cls = cls.astype(table.dtype())
        cls[~valid] = table.nodata_value()
        return {"classes": cls, "instances": np.stack([ids, obj_cls.astype(np.uint32)])}


def instance_products(classes: ClassTable) -> list[RasterProduct]:
    """The fused class map and the instance-id raster (band 1 id, band 2 class id)."""
    fused = SemanticDecoder(classes).products()[0]
    instances = RasterProduct(
        "instances", 2, "uint32", 0, "nearest",
        band_names=("instance_id", "class_id"),
        tags={INSTANCES_TAG: "1", CLASSES_TAG: classes.to_json()},
    )  # fmt: skip
    return [fused, instances]


#: Decoders by task name: ``(checkpoint metadata, probabilities=...) -> decoder``.
DECODERS: dict[str, Callable[..., Any]] = {
    "semantic": SemanticDecoder.for_checkpoint,
    "instance": InstanceDecoder.for_checkpoint,
    "panoptic": InstanceDecoder.for_checkpoint,
}
