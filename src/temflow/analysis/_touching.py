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
    total = count
    # blob by blob, in its bounding box plus a pixel of background, so the cost follows the
    # particles' area, not the frame's
    for blob, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        (y0, y1), (x0, x1) = ((b.start, b.stop) for b in box)
        if min(y1 - y0, x1 - x0) < 4:  # noqa: PLR2004 (too thin to hold two cores and a neck)
            continue
        inside = np.pad(labels[y0:y1, x0:x1] == blob, 1)
        depth = ndi.distance_transform_edt(inside)
        cores, n_cores = ndi.label(depth >= _CORE_DEPTH * depth.max(), structure=structure)
        if n_cores < 2:  # noqa: PLR2004
            continue
        parts = watershed(-depth, cores, mask=inside, connectivity=connectivity)[1:-1, 1:-1]
        inside = inside[1:-1, 1:-1]
        # the first core keeps the blob's number, the others get new ones
        renumber = np.zeros(n_cores + 1, dtype=np.int32)
        renumber[1] = blob
        renumber[2:] = np.arange(total + 1, total + n_cores, dtype=np.int32)
        total += n_cores - 1
        labels[y0:y1, x0:x1][inside] = renumber[parts[inside]]
    return total
