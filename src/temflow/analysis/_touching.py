"""Cutting particles that touch in a mask apart along their neck, one frame at a time.

Used by :func:`temflow.analysis.measure.label_particles`. A thresholded frame joins
two particles as soon as the gap between them falls below the blur of the
image, frames before they really meet; the tracker then sees one of them end
early, and merges are found too soon or not at all. A blob is cut when it has
several *cores*: the pixels at least half as deep (distance to the
background) as the blob's deepest pixel. A convex particle has one connected
core, whatever its shape, so it is never cut; two round particles of radii
``R >= r`` joined by a neck are cut when ``r >= R / 2`` and the neck is
narrower than ``R`` (its half-width below ``R / 2``). The cut follows the
watershed of the distance map from the cores, i.e. the neck.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_CORE_DEPTH = 0.5  # a core: at least this fraction of the blob's greatest depth


def split_touching(labels: np.ndarray, count: int, structure: np.ndarray) -> int:
    """Cut the blobs of one frame's ``labels`` that hold several cores, in place.

    Parameters
    ----------
    labels : numpy.ndarray
        int32 ``(y, x)`` connected components 1..``count`` (0 = background);
        rewritten in place.
    count : int
        Number of components in ``labels``.
    structure : numpy.ndarray
        The connectivity used for ``labels`` (cores are labelled with it).

    Returns
    -------
    int
        The new number of particles; the new ones are numbered ``count + 1``
        onwards, so labels stay 1..N.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:20, :32]
    >>> two = ((yy - 10) ** 2 + (xx - 9) ** 2 <= 49) | ((yy - 10) ** 2 + (xx - 23) ** 2 <= 49)  # touching
    >>> labels, count = ndi.label(two)
    >>> count, split_touching(labels, count, ndi.generate_binary_structure(2, 1))
    (1, 2)
    """
    if count == 0:
        return 0
    from skimage.segmentation import watershed

    connectivity = int(structure.sum() > 5) + 1  # noqa: PLR2004 (the 3 x 3 cross has 5 pixels)
    boxes = ndi.find_objects(labels)
    packed = _packed(labels, boxes)
    if packed is None:
        return count
    canvas, places = packed
    occupied = canvas > 0
    depth = ndi.distance_transform_edt(occupied)
    ids = canvas.ravel()
    deepest = np.zeros(count + 1)
    np.maximum.at(deepest, ids[occupied.ravel()], depth.ravel()[occupied.ravel()])
    # background pixels (depth 0, the background's "deepest" 0) are no core
    cores, n_cores = ndi.label(occupied & (depth >= _CORE_DEPTH * deepest[canvas]), structure=structure)
    blob_of_core = np.zeros(n_cores + 1, dtype=np.int64)
    blob_of_core[cores.ravel()] = ids  # every pixel of a core lies in one blob
    blob_of_core[0] = 0
    several = np.flatnonzero(np.bincount(blob_of_core[1:], minlength=count + 1) >= 2)  # noqa: PLR2004
    if several.size == 0:
        return count
    # the watershed blob by blob, on its part of the canvas: the pixels where two cores' floods
    # meet at the same depth go to the one skimage's queue reaches first, which depends on the
    # array the flood runs in, so each blob gets the array it would get alone
    order = np.argsort(blob_of_core, kind="stable")
    sorted_blobs = blob_of_core[order]
    total = count
    for blob in (int(b) for b in several):
        mine = order[np.searchsorted(sorted_blobs, blob, side="left") : np.searchsorted(sorted_blobs, blob, side="right")]
        top, left = places[blob]
        (y0, y1), (x0, x1) = ((b.start, b.stop) for b in boxes[blob - 1])
        ring = (slice(top, top + y1 - y0 + 2), slice(left, left + x1 - x0 + 2))
        inside = canvas[ring] == blob
        # its cores numbered 1, 2, ... in raster order, as a labelling of the blob alone numbers them
        local = np.zeros(n_cores + 1, dtype=np.int32)
        local[mine] = np.arange(1, len(mine) + 1, dtype=np.int32)
        parts = watershed(-depth[ring], local[cores[ring]], mask=inside, connectivity=connectivity)[1:-1, 1:-1]
        inside = inside[1:-1, 1:-1]
        # the first core keeps the blob's number, the others get new ones
        renumber = np.zeros(len(mine) + 1, dtype=np.int32)
        renumber[1] = blob
        renumber[2:] = np.arange(total + 1, total + len(mine), dtype=np.int32)
        total += len(mine) - 1
        labels[y0:y1, x0:x1][inside] = renumber[parts[inside]]
    return total


_CANVAS_WIDTH = 1024  # px; the rows of the canvas the blobs are packed into


def _packed(labels: np.ndarray, boxes: list) -> tuple[np.ndarray, dict[int, tuple[int, int]]] | None:
    """Every blob that may hold two cores, on one canvas: the canvas and each blob's place on it.

    Each blob is copied in its bounding box with a ring of background a pixel wide (rows of
    boxes side by side, the tallest first); ``places[blob]`` is the top-left corner of its ring.
    A pixel's nearest background is then inside its own ring (any pixel beyond the ring is
    farther than the ring pixel where the line to it crosses), and neighbouring boxes are two
    background pixels apart: a distance transform or a labelling of the whole canvas gives every
    blob what it would get alone, in one whole-array pass instead of one per blob (not a
    watershed: where two floods meet at equal depth, skimage's order depends on the array). Blobs narrower than 4 px on either axis cannot hold two cores and a neck;
    ``None`` when no blob is left.
    """
    spans = [(b[0].stop - b[0].start, b[1].stop - b[1].start) if b is not None else (0, 0) for b in boxes]
    candidates = [k for k, (h, w) in enumerate(spans) if min(h, w) >= 4]  # noqa: PLR2004
    if not candidates:
        return None
    candidates.sort(key=lambda k: -spans[k][0])
    width = max(_CANVAS_WIDTH, max(spans[k][1] for k in candidates) + 2)
    places: dict[int, tuple[int, int]] = {}
    row_top = row_height = x = 0
    for k in candidates:
        h, w = spans[k][0] + 2, spans[k][1] + 2
        if x + w > width:
            row_top, x, row_height = row_top + row_height, 0, 0
        places[k + 1] = (row_top, x)
        row_height = max(row_height, h)
        x += w
    canvas = np.zeros((row_top + row_height, width), dtype=np.int32)
    for blob, (top, left) in places.items():
        h, w = spans[blob - 1]
        canvas[top + 1 : top + 1 + h, left + 1 : left + 1 + w][labels[boxes[blob - 1]] == blob] = blob
    return canvas, places
