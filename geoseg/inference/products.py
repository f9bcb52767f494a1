"""What a prediction writes, per task: decoding blended model outputs into raster products.

The block tasks of :mod:`geoseg.inference.graph` blend every per-pixel model output over
the overlapping windows (``sum(w*p) / sum(w)``); a *decoder* then turns the blended maps of
one output block into the arrays of the task's raster products, and names those products
for the writer (:class:`geoseg.io.cog.RasterProduct`). Decoders are small picklable
objects shipped to Dask workers.

* ``semantic``: :class:`SemanticDecoder`: the class map (argmax of the blended class
  probabilities, as class ids, with colour table and names) and, on request, the
  probabilities (uint8, ``p = v / 254``, 255 = no-data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.classes import CLASSES_TAG, ClassTable
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

    @classmethod
    def for_checkpoint(cls, meta: Any, *, probabilities: bool = False) -> SemanticDecoder:
        """The decoder of a semantic checkpoint's metadata."""
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
        p = maps["classes"]
        lut = np.asarray(self.classes.ids, dtype=np.int64)
        classes = lut[np.argmax(p, axis=0)].astype(self.classes.dtype())
        classes[~valid] = self.classes.nodata_value()
        arrays = {"classes": classes}
        if self.probabilities:
            q = np.rint(np.clip(p, 0.0, 1.0) * float(PROB_SCALE)).astype(np.uint8)
            q[:, ~valid] = PROB_NODATA
            arrays["probabilities"] = q
        return arrays


#: Decoders by task name: ``(checkpoint metadata, probabilities=...) -> decoder``.
DECODERS: dict[str, Callable[..., Any]] = {
    "semantic": SemanticDecoder.for_checkpoint,
}
