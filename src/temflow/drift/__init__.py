"""Stage 2, drift correction and cropping: a movie in, shifts and a corrected, cropped movie out.

``estimate_drift`` measures each frame's shift (nm) by cross-correlation against key
frames, robust to stage jumps (``_registration`` the per-frame kernels, ``_graph`` the
dask graph, ``_trajectory`` the least-squares linking); ``apply_drift`` moves the frames
(``_resample``); ``crop_valid`` keeps the area every frame sees. All lazy, no torch.
``incremental`` measures the same drift frame by frame while a movie is being recorded.
"""

from __future__ import annotations

from temflow.drift.correction import apply_drift, correct_drift, crop_valid, estimate_drift

__all__ = [
    "apply_drift",
    "correct_drift",
    "crop_valid",
    "estimate_drift",
]
