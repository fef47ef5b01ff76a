"""One reader module per file family; :mod:`temflow.io.reader` dispatches to them.

``gatan`` (DM3/DM4, In-Situ trees), ``tia`` (``.ser`` + ``.emi``), ``emd``
(Berkeley and Velox), ``mrc``, ``tiff`` (TIFF stacks, ``.tif``/``.png`` frame
folders; the calibrations microscope software writes into TIFF tags are read by
``_tiff_calibration``), ``npy``. Each parses headers only and returns a
:class:`temflow.io.formats._common.RawMovie` whose dask tasks open the file by path;
``_common`` also decides what a calibration is (a length, reciprocal space, an
energy axis) and how per-frame time stamps and a nominal frame time combine.
"""
