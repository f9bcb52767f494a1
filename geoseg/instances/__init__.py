"""Objects as per-pixel maps and back: the instance encoding shared by training and inference.

geoseg's default instance method keeps everything per pixel, so that instance prediction
goes through the same tiled, blended, Dask-parallel, memory-bounded inference as semantic
segmentation. An instance map (an integer id per pixel, 0 = no object) is *encoded* into
three maps a segmentation network learns (:mod:`~geoseg.instances.encoding`):

* ``footprint``: the pixel belongs to an object;
* ``boundary``: the object's outer ring of pixels (``boundary_px`` wide);
* ``contact``: the pixel lies within ``contact_px`` of two different objects (the gap
  between touching buildings and their facing walls).

and *decoded* back into ids (:mod:`~geoseg.instances.decoding`): seeds are the 4-connected
components of footprint pixels that are neither boundary nor contact; each seed then grows
through the footprint for ``grow_px`` steps, a pixel taking the smallest id among its
labelled 4-neighbours. Every rule is local (a pixel's id depends only on pixels within
``grow_px`` of it, plus the seed component it belongs to), which is what lets a mosaic be
decoded chunk by chunk with the same result as one whole-scene pass.

Ids are deterministic: seed components are numbered 1, 2, ... in the row-major order of
their first pixel over the whole raster.

:mod:`~geoseg.instances.matching` scores predicted objects against reference objects:
the SpaceNet building F1 (IoU >= 0.5 matching) and panoptic quality.
"""

from geoseg.instances.decoding import DecodeParams, decode, grow, seed_mask
from geoseg.instances.encoding import EncodeParams, encode

__all__ = ["DecodeParams", "EncodeParams", "decode", "encode", "grow", "seed_mask"]
